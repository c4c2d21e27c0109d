"""Upstream servers as engine cores: OpenAI-compatible chat completions and Anthropic passthrough."""
