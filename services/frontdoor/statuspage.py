"""GET /status (a self-refreshing page), /status.json (its data) and /metrics.

Access: with ``server.api_key`` set, the key is required - as for the API (x-api-key or
Bearer), or as the password of HTTP Basic auth, so a browser can open the page (it asks;
any user name). Without a key the front door only listens on loopback (preflight.py), and
these routes also refuse a non-loopback peer.

The page is one static file (static/status.html: inline CSS, JS and SVG; nothing from
another host). The server embeds the current data in it, so it shows at once, then it
fetches /status.json every few seconds. Only numbers, states and identifiers are served
(records.py; no prompt text, no keys, no upstream URLs, no stderr tails).
"""

from __future__ import annotations

import base64
import hmac
import json
import time
from collections.abc import Callable
from importlib import resources

from anyclaude import errors
from anyclaude.config import Settings
from anyclaude.preflight import is_loopback

from . import auth
from .metrics import Metrics, SystemStatus
from .records import Recorder

REFRESH_S = 3
_SERVICE_KEYS = ("name", "kind", "state", "pid", "uptime_s", "restarts",
                 "last_heartbeat_age_s", "reason", "info")


def check_access(settings: Settings, req, resp) -> None:
    expected = settings.server.api_key
    if not expected:
        if not is_loopback(req.remote_addr or ""):
            raise errors.PermissionDenied("the status page is served to this machine only; "
                                          "set server.api_key to open it to others")
        return
    key = auth.presented_key(req.get_header) or _basic_password(req.get_header("authorization"))
    if key and hmac.compare_digest(key.encode(), expected.encode()):
        return
    resp.set_header("WWW-Authenticate", 'Basic realm="anyclaude", charset="UTF-8"')
    raise errors.AuthenticationFailed(
        ("invalid API key" if key else "missing API key") + ": send x-api-key, Authorization: "
        "Bearer, or the key as the Basic auth password")


def _basic_password(header: str | None) -> str:
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[2]


def _models(settings: Settings) -> list[dict]:
    return [{"id": model_id, "kind": cfg.kind, "context_window": cfg.context_window,
             "max_output_tokens": cfg.max_output_tokens,
             "default": settings.routes.default == model_id}
            for model_id, cfg in settings.models.items()]


class StatusData:
    """Everything the page shows, as one JSON-able dict."""

    def __init__(self, settings: Settings, recorder: Recorder, system: SystemStatus,
                 frontdoor: Callable[[], dict]):
        self.settings, self.recorder = settings, recorder
        self.system, self.frontdoor = system, frontdoor

    def build(self) -> dict:
        status = self.system.get()
        services = []
        for s in (status or {}).get("services") or []:
            services.append({k: s.get(k) for k in _SERVICE_KEYS})
        supervisor = (status or {}).get("supervisor") or {}
        return {"now": time.time(), "refresh_s": REFRESH_S,
                "supervisor": {k: supervisor.get(k) for k in ("state", "uptime_s", "pid")}
                if status else None,
                "services": services, "models": _models(self.settings),
                "frontdoor": self.frontdoor(), "requests": self.recorder.recent()}


def _page_template() -> str:
    return resources.files(__package__).joinpath("static/status.html").read_text("utf-8")


def embed(data: dict) -> str:
    """JSON safe inside <script>: no '<' (so no '</script>'), no line separators."""
    text = json.dumps(data, separators=(",", ":"), default=str)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


class StatusPage:
    def __init__(self, settings: Settings, data: StatusData):
        self.settings, self.data = settings, data
        self.template = _page_template()

    def on_get(self, req, resp):
        check_access(self.settings, req, resp)
        resp.content_type = "text/html; charset=utf-8"
        resp.set_header("cache-control", "no-store")
        resp.set_header("content-security-policy", "default-src 'none'; script-src "
                        "'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
                        "img-src data:")
        resp.text = self.template.replace("__ANYCLAUDE_STATUS__", embed(self.data.build()))

    def on_get_json(self, req, resp):
        check_access(self.settings, req, resp)
        resp.set_header("cache-control", "no-store")
        resp.media = self.data.build()


class MetricsPage:
    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings, self.metrics = settings, metrics

    def on_get(self, req, resp):
        check_access(self.settings, req, resp)
        body, content_type = self.metrics.render()
        resp.content_type = content_type
        resp.data = body
