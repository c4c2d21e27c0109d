"""Checks worth a clear line before anything starts: the API exposed beyond this machine
without a key, the port already taken. The supervisor, the front door and the CLI run them."""

from __future__ import annotations

import ipaddress
import socket

from anyclaude.config import Settings
from anyclaude.errors import ConfigError
from anyclaude.process_table import Planned

FRONTDOOR = "frontdoor"


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


def preflight(plans: list[Planned], settings: Settings) -> None:
    """Problems worth a clear line before anything starts (exposed without a key, a port
    already taken)."""
    if not any(p.kind == FRONTDOOR for p in plans):
        return
    check_exposure(settings)   # the front door would refuse to start anyway: say it now
    host, port = settings.server.host, settings.server.port
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise ConfigError(f"port {port} is in use; stop whatever listens there or choose "
                              "another with ANYCLAUDE_SERVER_PORT or [server] port") from None


