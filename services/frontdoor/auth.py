"""API key check (x-api-key or Authorization: Bearer) and the exposure rule."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from anyclaude.config import Settings
from anyclaude.errors import AuthenticationFailed
from anyclaude.preflight import check_exposure, is_loopback  # noqa: F401  (used by app and __main__)


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
