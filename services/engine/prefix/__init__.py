"""The in-memory prefix cache and reading the kvstore's cache files into it."""
