"""Is SearXNG reachable? A plain TCP connect to the configured host and port.

Deliberately not a search: a probe must not spend SearXNG's limiter budget or engine time.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit


def reachable(base_url: str, *, timeout_s: float = 1.0) -> bool:
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False
