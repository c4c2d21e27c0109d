"""Model files: finding, fetching and converting what `models.<id>.path` names."""
