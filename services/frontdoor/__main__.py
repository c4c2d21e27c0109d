"""The front door process: settings, logs, the bus loop (heartbeats, readiness), waitress."""

from __future__ import annotations

import _thread
import signal
import sys
import threading
import time

import structlog

from anyclaude import bus, config, logs
from anyclaude.errors import ConfigError

from .app import create_app
from .auth import check_exposure
from .breaker import Breaker
from .gateway import BusEngines, BusOptimizer, BusSearch
from .server import make_server

log = structlog.get_logger()
DRAIN_S = 10.0


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
    service = bus.Service("frontdoor", {}, info=lambda: {
        "breaker": breaker.state, "port": settings.server.port})
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
    log.info("frontdoor.listening", host=settings.server.host, port=settings.server.port)
    service.mark_ready()

    def drain(signum, frame):
        # Stop accepting at once; let open requests finish for a while, then leave.
        log.info("frontdoor.stopping", signal=signum)
        server.close()
        threading.Thread(target=_leave_after_drain, args=(app,), daemon=True).start()

    signal.signal(signal.SIGTERM, drain)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()
        loop.join(timeout=2)
        log.info("frontdoor.stopped")
    return 0


def _leave_after_drain(app) -> None:
    deadline = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline and len(app.inflight):
        time.sleep(0.1)
    _thread.interrupt_main()


if __name__ == "__main__":
    sys.exit(main())
