"""/metrics in the Prometheus text format (prometheus_client, own registry).

Two sources, both real:
- what the front door itself sees per request (records.py): requests by model, status and
  stop reason; time to first token and duration histograms; the tokens the engine reported
  in each Done (prompt, cache read, cache written, output);
- what every process reports in its heartbeat, read from the supervisor's status at scrape
  time (``SystemStatus``): service states and restarts, the engines' queues, counters and
  prefix cache (memory), the kvstore (disk), the websearch service, model downloads.
  Without a supervisor (a front door run alone) only the first part is there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

from .records import Record
from .upstate import supervisor_status

_STATES = ("stopped", "starting", "ready", "backoff", "stopping", "fatal")
_BREAKER_STATES = ("closed", "open", "half_open")
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)


class SystemStatus:
    """The supervisor's status (every service's heartbeat info), fetched at most every
    ``max_age`` seconds however often the page and Prometheus ask."""

    def __init__(self, fetch: Callable[[], dict | None] = supervisor_status,
                 max_age: float = 0.5):
        self.fetch, self.max_age = fetch, max_age
        self._lock = threading.Lock()
        self._at, self._value = float("-inf"), None

    def get(self) -> dict | None:
        with self._lock:
            if time.monotonic() - self._at > self.max_age:
                self._value, self._at = self.fetch(), time.monotonic()
            return self._value


class Metrics:
    def __init__(self, system: SystemStatus, frontdoor: Callable[[], dict]):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("anyclaude_requests", "Messages requests served, by local model, "
                                "HTTP status and stop reason", ["model", "status", "stop_reason"],
                                registry=r)
        self.ttft = Histogram("anyclaude_ttft_seconds", "Time from the request to the first "
                              "output", ["model"], buckets=TTFT_BUCKETS, registry=r)
        self.duration = Histogram("anyclaude_request_duration_seconds", "Whole request",
                                  ["model"], buckets=DURATION_BUCKETS, registry=r)
        self.tokens = Counter("anyclaude_tokens", "Tokens per the engine's usage: prompt (all), "
                              "cache_read, cache_creation, output", ["model", "kind"], registry=r)
        r.register(_BusCollector(system, frontdoor))

    def observe(self, record: Record) -> None:
        model = record.local or record.model
        self.requests.labels(model, str(record.status), record.stop_reason or "").inc()
        if record.ttft_s is not None:
            self.ttft.labels(model).observe(record.ttft_s)
        if record.duration_s is not None:
            self.duration.labels(model).observe(record.duration_s)
        for kind, value in (("prompt", record.input_tokens),
                            ("cache_read", record.cache_read_tokens),
                            ("cache_creation", record.cache_creation_tokens),
                            ("output", record.output_tokens)):
            if value:
                self.tokens.labels(model, kind).inc(value)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _num(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


class _BusCollector:
    """Families built at scrape time from the heartbeats (and the front door's own state)."""

    def __init__(self, system: SystemStatus, frontdoor: Callable[[], dict]):
        self.system, self.frontdoor = system, frontdoor

    def describe(self):
        return []      # dynamic: nothing to check at registration

    def collect(self):
        status = self.system.get() or {}
        services = status.get("services") or []
        yield from self._services(services)
        engines = [s for s in services if s.get("kind") == "engine"
                   or s.get("name", "").startswith("engine-")]
        yield from self._engines(engines)
        named = {s.get("name"): s.get("info") or {} for s in services}
        yield from self._kvstore(named.get("kvstore"))
        yield from self._websearch(named.get("websearch"))
        yield from self._frontdoor(self.frontdoor(), named.get("websearch"))

    def _services(self, services):
        state = GaugeMetricFamily("anyclaude_service_state", "1 for the state each service is "
                                  "in", labels=["service", "state"])
        restarts = CounterMetricFamily("anyclaude_service_restarts", "Restarts by the "
                                       "supervisor", labels=["service"])
        for s in services:
            for name in _STATES:
                state.add_metric([s.get("name", "?"), name], 1.0 if s.get("state") == name else 0.0)
            restarts.add_metric([s.get("name", "?")], _num(s.get("restarts")))
        yield state
        yield restarts

    def _engines(self, engines):
        queue = GaugeMetricFamily("anyclaude_engine_queue_depth", "Requests waiting in the "
                                  "engine's queue", labels=["model"])
        running = GaugeMetricFamily("anyclaude_engine_running", "Requests generating now",
                                    labels=["model"])
        outcomes = CounterMetricFamily("anyclaude_engine_requests", "Engine requests by outcome",
                                       labels=["model", "outcome"])
        hits = CounterMetricFamily("anyclaude_cache_hits", "Prompt cache hits (memory: the "
                                   "engine's prefix cache, disk: files from the kvstore)",
                                   labels=["model", "tier"])
        misses = CounterMetricFamily("anyclaude_cache_misses", "Prompts with no cached prefix",
                                     labels=["model"])
        reused = CounterMetricFamily("anyclaude_cache_reused_tokens", "Prompt tokens read "
                                     "from the cache", labels=["model"])
        mem = GaugeMetricFamily("anyclaude_cache_bytes", "Bytes held by the prompt cache",
                                labels=["model", "tier"])
        download = GaugeMetricFamily("anyclaude_model_download_bytes", "A model download in "
                                     "progress: bytes done and total", labels=["model", "kind"])
        for s in engines:
            i = s.get("info") or {}
            model = str(i.get("model") or s.get("name", "")[len("engine-"):])
            cache = i.get("cache") or {}
            queue.add_metric([model], _num(i.get("queue")))
            running.add_metric([model], _num(i.get("running")))
            for outcome in ("completed", "failed", "cancelled", "rejected"):
                outcomes.add_metric([model, outcome], _num(i.get(outcome)))
            hits.add_metric([model, "memory"], _num(cache.get("hits")))
            hits.add_metric([model, "disk"], _num(cache.get("disk_hits")))
            misses.add_metric([model], _num(cache.get("misses")))
            reused.add_metric([model], _num(cache.get("reused_tokens")))
            mem.add_metric([model, "memory"], _num(cache.get("bytes")))
            for d in i.get("download") or []:
                download.add_metric([model, "done"], _num(d.get("done")))
                download.add_metric([model, "total"], _num(d.get("total")))
        yield from (queue, running, outcomes, hits, misses, reused, mem, download)

    def _kvstore(self, info):
        if not info:
            return
        disk = GaugeMetricFamily("anyclaude_kvstore_bytes", "Bytes of prompt caches on disk",
                                 labels=["kind"])
        disk.add_metric(["used"], _num(info.get("bytes")))
        disk.add_metric(["budget"], _num(info.get("budget")))
        lookups = CounterMetricFamily("anyclaude_kvstore_lookups", "Disk cache lookups",
                                      labels=["result"])
        lookups.add_metric(["hit"], _num(info.get("hits")))
        lookups.add_metric(["miss"], _num(info.get("misses")))
        files = GaugeMetricFamily("anyclaude_kvstore_files", "Cache files on disk",
                                  value=_num(info.get("entries")))
        degraded = GaugeMetricFamily("anyclaude_kvstore_degraded", "1 while disk writes fail",
                                     value=1.0 if info.get("degraded") else 0.0)
        yield from (disk, lookups, files, degraded)

    def _websearch(self, info):
        if not info:
            return
        counts = info.get("counters") or {}
        searches = CounterMetricFamily("anyclaude_websearch_searches", "Searches by result",
                                       labels=["result"])
        for result, key in (("results", "ok"), ("empty", "empty"), ("error", "errors"),
                            ("refused_by_breaker", "refused_by_breaker")):
            searches.add_metric([result], _num(counts.get(key)))
        yield searches

    def _frontdoor(self, fd: dict, websearch):
        breaker = GaugeMetricFamily("anyclaude_breaker_state", "1 for each breaker's state",
                                    labels=["breaker", "state"])
        states = {"frontdoor": fd.get("breaker"),
                  "websearch": ((websearch or {}).get("breaker") or {}).get("state")}
        for name, current in states.items():
            if current is None:
                continue
            for state in _BREAKER_STATES:
                breaker.add_metric([name, state], 1.0 if current == state else 0.0)
        yield breaker
        waiting = GaugeMetricFamily("anyclaude_admission_waiting", "Requests waiting in the "
                                    "front door's admission queue", labels=["model"])
        for model, lane in (fd.get("admission") or {}).items():
            waiting.add_metric([model], _num(lane.get("waiting")))
        yield waiting
