"""API key check (x-api-key or Authorization: Bearer) and the exposure rule."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable

from anyclaude.config import Settings
from anyclaude.errors import AuthenticationFailed, ConfigError


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings) -> None:
    """Refuse to serve beyond this machine without a key: the API runs code on it."""
    host = settings.server.host
    if not is_loopback(host) and not settings.server.api_key:
        raise ConfigError(
            f"server.host = {host!r} is reachable from other machines, but server.api_key is "
            "empty; set server.api_key (or ANYCLAUDE_SERVER_API_KEY) or listen on 127.0.0.1")


def presented_key(get_header: Callable[[str], str | None]) -> str:
    """The key a client sent; ``get_header`` is e.g. falcon's ``req.get_header``."""
    key = get_header("x-api-key")
    if key:
        return key.strip()
    value = get_header("authorization") or ""
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer":
        return token.strip()
    return ""


def check(settings: Settings, get_header: Callable[[str], str | None]) -> str:
    """Raise AuthenticationFailed unless the request carries the configured key.

    Returns the presented key (it is part of the duplicate-request identity).
    """
    key = presented_key(get_header)
    expected = settings.server.api_key
    if not expected:
        return key
    if not key:
        raise AuthenticationFailed("missing API key: send x-api-key or Authorization: Bearer")
    if not hmac.compare_digest(key.encode(), expected.encode()):
        raise AuthenticationFailed("invalid API key")
    return key
