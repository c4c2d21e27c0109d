"""The front door as a process (started by service_main): the app, its bus loop (heartbeats,
readiness), waitress.

SIGTERM is a graceful stop: the listener closes at once, new and queued requests get 529
"anyclaude is shutting down", running requests drain for a grace period (two thirds of
the supervisor's graceful timeout for us, $ANYCLAUDE_GRACEFUL_S; 10 s when run alone), then
every stream still open ends with ``event: error`` (overloaded_error), and we leave once
those last bytes are flushed (at most FLUSH_S more).
"""

from __future__ import annotations

import _thread
import errno
import os
import signal
import threading
import time

import structlog

from anyclaude import bus, config
from anyclaude.breaker import Breaker
from anyclaude.errors import ConfigError

from .app import create_app, snapshot
from .auth import check_exposure
from .gateway import BusEngines, BusOptimizer, BusSearch
from .server import make_server

log = structlog.get_logger()
DRAIN_S = 10.0
FLUSH_S = 1.0


def drain_seconds() -> float:
    try:
        graceful = float(os.environ.get("ANYCLAUDE_GRACEFUL_S", ""))
    except ValueError:
        return DRAIN_S
    return max(graceful * 2 / 3, 0.2)


def load_settings() -> config.Settings:
    """The settings, refused (before any log is set up) when exposed without a key."""
    settings = config.load_settings()
    check_exposure(settings)
    return settings


class FrontDoor:
    """The front door as a service_main process: the app, its bus.Service (no handlers:
    heartbeats with the app's snapshot, readiness once listening) and waitress."""

    stop_signals = (signal.SIGTERM,)   # Ctrl-C in a terminal leaves at once, as waitress does

    def __init__(self, settings: config.Settings):
        self.settings = settings
        self.app = create_app(settings=settings, engines=BusEngines(settings),
                              optimizer=BusOptimizer(settings), breaker=Breaker(),
                              search=BusSearch(settings))
        self.service = bus.Service("frontdoor", {}, info=self.info)
        self.draining = False
        try:
            self.server = make_server(self.app, settings)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {settings.server.host}:"
                              f"{settings.server.port}: {exc.strerror}") from None

    def info(self) -> dict:
        return {"port": self.settings.server.port, **snapshot(self.app),
                "shed": self.server.task_dispatcher.shed}

    def run(self) -> int:
        loop = threading.Thread(target=self.service.run, kwargs={"ready": False},
                                name="bus-loop", daemon=True)
        loop.start()
        log.info("frontdoor.listening", host=self.settings.server.host,
                 port=self.settings.server.port, threads=self.server.adj.threads,
                 capacity=self.app.capacity)
        self.service.mark_ready()
        try:
            _serve(self.server, lambda: self.draining)
        finally:
            self.service.stop()
            loop.join(timeout=2)
            log.info("frontdoor.stopped")
        return 0

    def drain(self, why: str) -> None:
        """Stop accepting at once; let open requests finish for a while, then leave."""
        if self.app.relay.closing.is_set() or self.draining:
            return
        self.draining = True
        log.info("frontdoor.stopping", signal=why, drain_s=drain_seconds())
        self.server.close()
        self.app.relay.begin_shutdown()
        threading.Thread(target=_leave_after_drain,
                         args=(self.app, self.server, drain_seconds()), daemon=True).start()


def _serve(server, stopping) -> None:
    """Run waitress until the drain thread interrupts us. Closing the listener in the signal
    handler makes the interrupted select() fail with EBADF when it is retried: go on."""
    try:
        while True:
            try:
                server.run()
                return
            except OSError as exc:
                if exc.errno != errno.EBADF or not stopping():
                    raise
    except KeyboardInterrupt:   # from the drain thread, wherever it lands in this loop
        return


def _busy(app) -> bool:
    return bool(len(app.inflight) or app.relay.open_streams() or app.admission.busy())


def _flushed(server) -> bool:
    return not any(getattr(channel, "total_outbufs_len", 0)
                   for channel in list(server.active_channels.values()))


def _leave_after_drain(app, server, drain_s: float) -> None:
    deadline = time.monotonic() + drain_s
    while time.monotonic() < deadline and _busy(app):
        time.sleep(0.05)
    if _busy(app):
        app.relay.shutdown()      # the rest get event: error and their engine work is cancelled
    deadline = time.monotonic() + FLUSH_S
    while time.monotonic() < deadline and (app.relay.open_streams() or not _flushed(server)):
        time.sleep(0.02)
    log.info("frontdoor.drained", open_streams=app.relay.open_streams())
    _thread.interrupt_main()
