"""The front door process: settings, logs, the bus loop (heartbeats, readiness), waitress.

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
import sys
import threading
import time

import structlog

from anyclaude import bus, config, logs
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


def main() -> int:
    try:
        settings = config.load_settings()
        check_exposure(settings)
    except ConfigError as exc:
        print(f"anyclaude frontdoor: {exc.message}", file=sys.stderr)
        return 2
    logs.configure("frontdoor", log_dir=settings.log_dir, console_level=settings.logging.level)
    breaker = Breaker()
    app = create_app(settings=settings, engines=BusEngines(settings),
                     optimizer=BusOptimizer(settings), breaker=breaker,
                     search=BusSearch(settings))
    server_ref: dict = {}

    def info() -> dict:
        server = server_ref.get("server")
        shed = server.task_dispatcher.shed if server is not None else 0
        return {"port": settings.server.port, **snapshot(app), "shed": shed}

    service = bus.Service("frontdoor", {}, info=info)
    loop = threading.Thread(target=service.run, kwargs={"ready": False}, name="bus-loop",
                            daemon=True)
    loop.start()
    try:
        server = make_server(app, settings)
    except OSError as exc:
        print(f"anyclaude frontdoor: cannot listen on {settings.server.host}:"
              f"{settings.server.port}: {exc.strerror}", file=sys.stderr)
        service.stop()
        return 2
    server_ref["server"] = server
    log.info("frontdoor.listening", host=settings.server.host, port=settings.server.port,
             threads=server.adj.threads, capacity=app.capacity)
    service.mark_ready()

    def drain(signum, frame):
        # Stop accepting at once; let open requests finish for a while, then leave.
        if app.relay.closing.is_set() or getattr(drain, "started", False):
            return
        drain.started = True
        log.info("frontdoor.stopping", signal=signum, drain_s=drain_seconds())
        server.close()
        app.relay.begin_shutdown()
        threading.Thread(target=_leave_after_drain, args=(app, server, drain_seconds()),
                         daemon=True).start()

    signal.signal(signal.SIGTERM, drain)
    try:
        _serve(server, lambda: getattr(drain, "started", False))
    finally:
        service.stop()
        loop.join(timeout=2)
        log.info("frontdoor.stopped")
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
