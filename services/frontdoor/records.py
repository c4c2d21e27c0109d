"""One record per /v1/messages request: what the status page lists, /metrics counts and the
log line `frontdoor.request_done` carries.

A record holds numbers and identifiers only - model ids, token counts, timings, the stop
reason, the optimizer's decisions (routes, counts) and the engine's cache note (token
positions). Never prompt text, never a key: the page and /metrics may be open to anyone
who can reach the port when no api_key is set (loopback only).

The last ``keep`` records stay in a ring for the page; ``listeners`` (metrics.py) see each
finished record once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import structlog

log = structlog.get_logger()

KEEP = 50
_NOTE_TEXT_KEYS = ("action", "route", "route_skipped", "model", "reason")
_CACHE_KEYS = ("prompt_tokens", "reused", "source", "diverged_at", "closest_match", "diverged_in")


@dataclass
class Record:
    request_id: str
    model: str                   # as the client asked
    stream: bool
    started_at: float            # wall clock, for the page
    local: str = ""              # the local model that ran it
    status: int = 0              # HTTP status, or the status of the error event mid-stream
    error_type: str = ""
    stop_reason: str = ""
    input_tokens: int = 0        # the whole prompt: uncached + cache read + cache written
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    output_tokens: int = 0
    ttft_s: float | None = None
    duration_s: float | None = None
    optimizer: list = field(default_factory=list)
    cache: dict = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic, repr=False)
    finished: bool = field(default=False, repr=False)

    def public(self) -> dict:
        # by hand: dataclasses.asdict deep-copies and costs ~0.2 ms a record
        out = {name: getattr(self, name) for name in _PUBLIC}
        out["optimizer"] = [dict(note) for note in self.optimizer]
        out["cache"] = dict(self.cache)
        return out


_PUBLIC = tuple(f.name for f in fields(Record) if f.repr)


def optimizer_notes(notes) -> list[dict]:
    """The optimizer's notes, kept to numbers and identifiers."""
    out = []
    for note in notes or []:
        if not isinstance(note, dict):
            continue
        kept = {}
        for key, value in note.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                kept[key] = value
            elif key in _NOTE_TEXT_KEYS and isinstance(value, str):
                kept[key] = value[:60]
        if kept:
            out.append(kept)
    return out[:12]


def cache_note(cache) -> dict:
    if not isinstance(cache, dict):
        return {}
    return {k: cache[k] for k in _CACHE_KEYS
            if isinstance(cache.get(k), (int, str)) and not isinstance(cache.get(k), bool)}


class Recorder:
    def __init__(self, keep: int = KEEP, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._ring: deque[Record] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self.listeners: list[Callable[[Record], None]] = []

    def begin(self, request_id: str, model: str, stream: bool) -> Record:
        return Record(request_id=request_id, model=model, stream=stream,
                      started_at=time.time(), started=self.clock())

    def first_output(self, record: Record | None) -> None:
        if record is not None and record.ttft_s is None:
            record.ttft_s = round(self.clock() - record.started, 4)

    def done(self, record: Record | None, frame) -> None:
        """The engine's Done: stop reason, usage, cache note (the record is not closed yet)."""
        if record is None:
            return
        usage = frame.usage or {}
        record.status, record.stop_reason = 200, frame.stop_reason
        record.cache_read_tokens = int(usage.get("cache_read_input_tokens") or 0)
        record.cache_creation_tokens = int(usage.get("cache_creation_input_tokens") or 0)
        record.input_tokens = (int(usage.get("input_tokens") or 0) + record.cache_read_tokens
                               + record.cache_creation_tokens)
        record.output_tokens = int(usage.get("output_tokens") or 0)
        record.cache = cache_note(getattr(frame, "cache", None))
        self.first_output(record)

    def fail(self, record: Record | None, status: int, error_type: str) -> None:
        if record is not None and not record.finished and record.status in (0, 200) \
                and not record.stop_reason:
            record.status, record.error_type = status, error_type

    def finish(self, record: Record | None) -> None:
        """Close the record (once): into the ring, to the listeners, one log line."""
        if record is None:
            return
        with self._lock:
            if record.finished:
                return
            record.finished = True
            if not record.status:      # ended with neither Done nor an error: the client left
                record.status, record.error_type = 499, "client_gone"
            record.duration_s = round(self.clock() - record.started, 4)
            self._ring.append(record)
        for listener in self.listeners:
            try:
                listener(record)
            except Exception:          # a metrics bug must never break a request
                log.exception("frontdoor.record_listener_failed")
        log.info("frontdoor.request_done", **record.public())

    def recent(self) -> list[dict]:
        """The kept records, newest first."""
        with self._lock:
            return [r.public() for r in reversed(self._ring)]
