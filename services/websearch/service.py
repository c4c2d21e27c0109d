"""The websearch process: answers ``Search`` with ``Results`` over the bus.

Searches run on a few worker threads (the bus loop must stay responsive for heartbeats);
beyond MAX_IN_FLIGHT waiting searches a request is answered too_many_requests at once.
A background thread refreshes the reachability shown in ``info`` every PROBE_INTERVAL_S.
"""

from __future__ import annotations

import threading

import structlog

from anyclaude import bus
from anyclaude.messages import Results, Search

from .bridge import Bridge

WORKERS = 4
MAX_IN_FLIGHT = 32
PROBE_INTERVAL_S = 30.0

log = structlog.get_logger()


class WebsearchService:
    def __init__(self, settings):
        self.bridge = Bridge(settings.search)
        self.stop = threading.Event()
        if self.bridge.config_error:
            log.error("websearch.bad_config", error=self.bridge.config_error)
        elif not self.bridge.configured:
            log.info("websearch.off", hint="set [search] searxng_url in anyclaude.toml")
        self.workers = bus.Workers(
            "websearch", WORKERS, max_waiting=MAX_IN_FLIGHT,
            when_full=lambda: Results(error_code="too_many_requests",
                                      message=f"more than {MAX_IN_FLIGHT} searches are waiting"),
            on_crash=self._crashed)
        self.service = bus.Service("websearch", {Search: self.workers.handler(self.search)},
                                   info=self.bridge.info)

    def search(self, call: bus.Call) -> Results:
        return self.bridge.search(call.message)

    @staticmethod
    def _crashed(exc: BaseException) -> Results:
        log.exception("websearch.search_crashed")
        return Results(error_code="unavailable", message=f"web search failed: {exc}")

    def probe_loop(self) -> None:
        while not self.stop.is_set():
            self.bridge.probe()
            self.stop.wait(PROBE_INTERVAL_S)

    def run(self) -> None:
        threading.Thread(target=self.probe_loop, name="probe", daemon=True).start()
        try:
            self.service.run()
        finally:
            self.stop.set()
            self.workers.shutdown()

