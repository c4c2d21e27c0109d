"""Helpers for the front door tests: test settings, the app on real waitress (Door).

The engine side is a real bus.Service (fd_fake_engine.py) answering scripted frames; the
front door reaches it through the real gateway (BusEngines), so every test crosses
HTTP -> falcon -> relay -> ZeroMQ -> engine service and back.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import anthropic

from anyclaude.config import ModelConfig, RoutesConfig, ServerConfig, Settings, TimeoutsConfig
from anyclaude.services.frontdoor.app import create_app
from anyclaude.breaker import Breaker
from anyclaude.services.frontdoor.gateway import BusEngines
from anyclaude.services.frontdoor.server import make_server

HERE = Path(__file__).parent
REPO = HERE.parent.parent
SDK1_DIR = REPO / ".cache" / "sdk1"


def make_settings(**sections) -> Settings:
    """Test settings: two local models; each keyword replaces fields of one section."""
    base = Settings(
        server=ServerConfig(host="127.0.0.1", port=0, threads=8),
        models={"local-main": ModelConfig(context_window=32768, max_output_tokens=4096,
                                          display_name="Local Main"),
                "local-small": ModelConfig(context_window=8192, max_output_tokens=1024)},
        routes=RoutesConfig(default="local-main", small="local-small"),
        timeouts=TimeoutsConfig(accept_s=2.0, first_frame_s=20.0, idle_s=10.0, total_s=60.0,
                                ping_interval_s=10.0),
    )
    changes = {name: dataclasses.replace(getattr(base, name), **values)
               for name, values in sections.items()}
    return dataclasses.replace(base, **changes)


class Door:
    """The app on a real waitress server in a thread."""

    def __init__(self, settings: Settings, *, engines=None, optimizer=None, breaker=None,
                 **app_options):
        self.settings = settings
        self.engines = engines if engines is not None else BusEngines(settings)
        self.breaker = breaker or Breaker(threshold=3, cooldown_s=30.0)
        self.app = create_app(settings=settings, engines=self.engines, optimizer=optimizer,
                              breaker=self.breaker, **app_options)
        self.server = make_server(self.app, settings, host="127.0.0.1", port=0)
        self.port = int(self.server.effective_port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.closing = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def client(self, **kwargs) -> anthropic.Anthropic:
        kwargs.setdefault("api_key", "sk-local")
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 30.0)
        return anthropic.Anthropic(base_url=self.url, **kwargs)

    def _serve(self) -> None:
        try:
            self.server.run()
        except (OSError, ValueError):
            if not self.closing:   # closing sockets under the loop's select is expected
                raise

    def close(self) -> None:
        self.closing = True
        self.server.close()
        self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=2)
        for channel in list(self.server._map.values()):
            try:
                channel.close()
            except Exception:
                pass
        self.app.relay.pool.shutdown(wait=False, cancel_futures=True)


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
