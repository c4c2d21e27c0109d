"""Cache affinity across several upstream servers of one model.

A server's prefix cache only helps when the next turn of a conversation goes back to it.
Each request gets a session key (a hash of the model, the system prompt, the tools and the
first message: the part of a conversation that never changes from turn to turn), and the
upstreams are ranked for that key by rendezvous hashing (highest ``sha256(key|url)``
first). So one session always lands on the same upstream, sessions spread evenly, and when
an upstream is taken out only its own sessions move: each to the next upstream in its own
ranking, while every other session stays where its cache is.

Each upstream has a small breaker: ``threshold`` consecutive failures (connection refused,
5xx, timeouts) take it out for ``reset_after`` seconds; then one trial request may go
there again, and a success puts it back. When every upstream is out, all are tried anyway
in ranking order: trying is better than failing without a try.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence


def session_key(request: dict) -> str:
    """A stable hash of what stays the same across the turns of one conversation."""
    messages = request.get("messages") or []
    first = messages[0].get("content") if messages and isinstance(messages[0], dict) else None
    tools = [(t.get("name"), t.get("input_schema")) for t in request.get("tools") or []
             if isinstance(t, dict)]
    material = json.dumps([request.get("model"), request.get("system") or [], tools, first],
                          sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(material.encode()).hexdigest()


def _score(key: str, url: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{key}|{url}".encode()).digest()[:8], "big")


def rendezvous(key: str, urls: Sequence[str]) -> list[str]:
    """``urls`` ranked for ``key``, best first (ties cannot happen in practice)."""
    return sorted(urls, key=lambda url: (-_score(key, url), url))


class _Health:
    def __init__(self):
        self.failures = 0
        self.opened_at: float | None = None
        self.trial_at: float | None = None   # when a trial request was let through


class Affinity:
    def __init__(self, urls: Sequence[str], *, threshold: int = 2, reset_after: float = 15.0,
                 clock: Callable[[], float] = time.monotonic):
        if not urls:
            raise ValueError("at least one upstream URL is required")
        self.urls = list(dict.fromkeys(urls))
        self.threshold, self.reset_after, self.clock = max(1, threshold), reset_after, clock
        self._lock = threading.Lock()
        self._health = {url: _Health() for url in self.urls}

    def order(self, key: str) -> list[str]:
        """Upstreams to try for ``key``, in order: those in service by rank, then the rest.
        An upstream whose pause is over is offered to one request as a trial; until that
        trial is recorded (or a pause has passed again) other requests rank it last."""
        ranked = rendezvous(key, self.urls)
        usable, resting = [], []
        with self._lock:
            now = self.clock()
            for url in ranked:
                health = self._health[url]
                if health.opened_at is None:
                    usable.append(url)
                elif now - health.opened_at >= self.reset_after and (
                        health.trial_at is None or now - health.trial_at >= self.reset_after):
                    health.trial_at = now
                    usable.append(url)
                else:
                    resting.append(url)
        return usable + resting

    def record(self, url: str, ok: bool) -> None:
        with self._lock:
            health = self._health.get(url)
            if health is None:
                return
            trial, health.trial_at = health.trial_at is not None, None
            if ok:
                health.failures, health.opened_at = 0, None
                return
            health.failures += 1
            if trial or health.failures >= self.threshold:
                health.opened_at = self.clock()

    def snapshot(self) -> dict:
        with self._lock:
            now = self.clock()
            return {url: ("in" if h.opened_at is None
                          else "out" if now - h.opened_at < self.reset_after else "trial")
                    for url, h in self._health.items()}
