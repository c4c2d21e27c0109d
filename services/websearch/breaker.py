"""A small circuit breaker so a dead or refusing SearXNG is not hammered.

closed: every call goes through; ``threshold`` failures in a row open it.
open: calls are refused until the cooldown has passed, then one trial call goes through
(half_open). The trial's success closes the breaker; its failure re-opens it with a doubled
cooldown (up to ``max_cooldown_s``). Thread-safe; the clock is injectable for tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Breaker:
    def __init__(self, *, threshold: int = 3, cooldown_s: float = 5.0,
                 max_cooldown_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.threshold = max(1, threshold)
        self.base_cooldown = cooldown_s
        self.max_cooldown = max(cooldown_s, max_cooldown_s)
        self.clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._cooldown = cooldown_s
        self._opened_at: float | None = None
        self._trial = False  # a half-open trial call is in flight

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._trial or self.clock() - self._opened_at >= self._cooldown:
            return "half_open"
        return "open"

    def retry_in(self) -> float:
        """Seconds until a trial call will be allowed (0 when closed)."""
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self._opened_at + self._cooldown - self.clock())

    def allow(self) -> bool:
        """May a call go through now? In half_open only one caller gets True."""
        with self._lock:
            state = self._state()
            if state == "closed":
                return True
            if state == "half_open" and not self._trial:
                self._trial = True
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial = False
            self._cooldown = self.base_cooldown

    def failure(self) -> None:
        with self._lock:
            if self._trial:  # the half-open trial failed: wait longer next time
                self._cooldown = min(self._cooldown * 2, self.max_cooldown)
                self._opened_at = self.clock()
                self._trial = False
                return
            if self._opened_at is not None:
                return  # a call let through before the breaker opened
            self._failures += 1
            if self._failures >= self.threshold:
                self._opened_at = self.clock()

    def snapshot(self) -> dict:
        with self._lock:
            return {"state": self._state(), "consecutive_failures": self._failures,
                    "cooldown_s": self._cooldown}
