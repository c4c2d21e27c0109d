"""The websearch service: answers ``Search`` with ``Results`` over the bus.

Searches run on a few worker threads (the bus loop must stay responsive for heartbeats);
beyond MAX_IN_FLIGHT waiting searches a request is answered too_many_requests at once.
A background thread refreshes the reachability shown in ``info`` every PROBE_INTERVAL_S.
"""

from __future__ import annotations

import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import structlog

from anyclaude import bus, config, errors, logs
from anyclaude.messages import Results, Search

from .bridge import Bridge

WORKERS = 4
MAX_IN_FLIGHT = 32
PROBE_INTERVAL_S = 30.0

log = structlog.get_logger()


def main() -> None:
    try:
        settings = config.load_settings()
    except errors.ConfigError as exc:
        sys.exit(f"websearch: {exc.message}")
    logs.configure("websearch", log_dir=settings.log_dir, console_level=settings.logging.level)
    bridge = Bridge(settings.search)
    pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="search")
    slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)
    stop = threading.Event()
    if bridge.config_error:
        log.error("websearch.bad_config", error=bridge.config_error)
    elif not bridge.configured:
        log.info("websearch.off", hint="set [search] searxng_url in anyclaude.toml")

    def work(call: bus.Call) -> None:
        try:
            call.send(bridge.search(call.message))
        except Exception as exc:
            log.exception("websearch.search_crashed")
            call.send(Results(error_code="unavailable", message=f"web search failed: {exc}"))
        finally:
            slots.release()

    def handle(call: bus.Call) -> None:
        if not slots.acquire(blocking=False):
            call.send(Results(error_code="too_many_requests",
                              message=f"more than {MAX_IN_FLIGHT} searches are waiting"))
            return
        pool.submit(work, call)

    def probe_loop() -> None:
        while not stop.is_set():
            bridge.probe()
            stop.wait(PROBE_INTERVAL_S)

    threading.Thread(target=probe_loop, name="probe", daemon=True).start()
    service = bus.Service("websearch", {Search: handle}, info=bridge.info)
    signal.signal(signal.SIGTERM, lambda *_: service.stop())
    try:
        service.run()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)


if __name__ == "__main__":
    main()
