"""One search request in, one ``messages.Results`` out: validation, breaker, SearXNG, shaping.

Every outcome is a Results (never an exception): failures carry a web_search error code
(invalid_tool_input, query_too_long, unavailable, too_many_requests) and a message that says
what to do about it. The front door puts the code in the web_search_tool_result error object.
"""

from __future__ import annotations

import threading
from collections import Counter
from urllib.parse import urlsplit

import structlog

from anyclaude.breaker import FAILURE, SUCCESS, Breaker
from anyclaude.config import SearchConfig
from anyclaude.errors import Overloaded
from anyclaude.messages import Results, Search

from . import probe, searxng, shaping

log = structlog.get_logger()

MAX_RESULTS_CAP = 50
OFF_MESSAGE = ("web search is off: set searxng_url in the [search] section of anyclaude.toml "
               "(or ANYCLAUDE_SEARCH_SEARXNG_URL) to a SearXNG with json in search.formats")


def redact(url: str) -> str:
    """The URL without user:password, fit for logs and status."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


def default_breaker() -> Breaker:
    """Spares a dead or refusing SearXNG: 3 failures in a row, then 5 s doubling to 60 s."""
    return Breaker(threshold=3, cooldown_s=5.0, max_cooldown_s=60.0, name="SearXNG")


class Bridge:
    def __init__(self, config: SearchConfig, *, breaker: Breaker | None = None,
                 fetch=searxng.search):
        self.url = config.searxng_url.strip()
        self.timeout_s = config.timeout_s if config.timeout_s > 0 else 8.0
        self.max_results = max(1, config.max_results)
        self.config_error = ""
        if self.url:
            try:
                searxng.check_url(self.url)
            except ValueError as exc:
                self.config_error = f"{exc}; web search is unavailable until it is fixed"
        self.breaker = breaker or default_breaker()
        self.fetch = fetch
        self.reachable: bool | None = None
        self.last_error = ""
        self._lock = threading.Lock()
        self._counts: Counter = Counter()
        self._in_flight = 0

    @property
    def configured(self) -> bool:
        return bool(self.url) and not self.config_error

    def _count(self, *names: str) -> None:
        with self._lock:
            self._counts.update(names)

    def _error(self, code: str, message: str) -> Results:
        self._count("errors", f"error.{code}")
        self.last_error = f"{code}: {message}"
        return Results(error_code=code, message=message)

    def search(self, msg: Search) -> Results:
        with self._lock:
            self._in_flight += 1
        try:
            return self._search(msg)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _search(self, msg: Search) -> Results:
        self._count("searches")
        query = msg.query.strip() if isinstance(msg.query, str) else ""
        if not query:
            return self._error("invalid_tool_input", "the search query is empty")
        if len(query) > shaping.MAX_QUERY_CHARS:
            return self._error("query_too_long", f"the query has {len(query)} characters; "
                               f"at most {shaping.MAX_QUERY_CHARS} are allowed")
        if not self.url:
            return self._error("unavailable", OFF_MESSAGE)
        if self.config_error:
            return self._error("unavailable", self.config_error)
        try:
            trial = self.breaker.allow()
        except Overloaded:
            self._count("refused_by_breaker")
            return self._error("unavailable", "SearXNG failed several times in a row; not asking "
                               f"it again for {self.breaker.retry_in():.0f} s "
                               f"(last error: {self.last_error or 'unknown'})")
        self._count("calls")
        try:
            data = self.fetch(self.url, query, timeout_s=self.timeout_s)
        except searxng.Failure as exc:
            self.breaker.record(FAILURE, trial=trial)
            if exc.reached is not None:
                self.reachable = exc.reached
            log.warning("websearch.searxng_failed", code=exc.code, error=exc.message,
                        **({"hint": exc.hint} if exc.hint else {}))
            return self._error(exc.code, exc.message)
        self.breaker.record(SUCCESS, trial=trial)
        self.reachable = True
        return self._shape(data, msg)

    def _shape(self, data: dict, msg: Search) -> Results:
        raw = data.get("results")
        if not isinstance(raw, list):
            return self._error("unavailable", "SearXNG's answer has no results list")
        wanted = msg.max_results if msg.max_results > 0 else self.max_results
        results, usable = shaping.shape(raw, allowed=msg.allowed_domains,
                                        blocked=msg.blocked_domains,
                                        max_results=min(wanted, MAX_RESULTS_CAP))
        failed = data.get("unresponsive_engines")
        if usable == 0 and isinstance(failed, list) and failed:
            # Failed engines still give HTTP 200: no results here means "could not search".
            names = sorted({str(f[0]) for f in failed if isinstance(f, list) and f})
            log.warning("websearch.engines_failed", engines=names)
            return self._error("unavailable", "every search engine of SearXNG failed "
                               f"({', '.join(names) or 'unknown'}); try again later")
        self._count("ok" if results else "empty")
        return Results(results=results)

    def probe(self) -> bool | None:
        if self.configured:
            self.reachable = probe.reachable(self.url, timeout_s=min(1.0, self.timeout_s))
        return self.reachable

    def info(self) -> dict:
        with self._lock:
            counts, in_flight = dict(self._counts), self._in_flight
        return {
            "configured": self.configured,
            "url": redact(self.url),
            "config_error": self.config_error,
            "reachable": self.reachable,
            "breaker": self.breaker.snapshot(),
            "counters": counts,
            "in_flight": in_flight,
            "last_error": self.last_error,
        }
