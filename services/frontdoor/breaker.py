"""A small circuit breaker around engine calls.

closed: calls go through; ``threshold`` consecutive failures open it.
open: calls fail at once with 529 overloaded_error and a retry-after, for ``reset_after`` s.
half_open: one trial call goes through (others are refused); success closes, failure reopens.

Failures are engine errors and timeouts; a client that goes away, a bad request or an
engine that is merely busy does not count (the caller decides, via ``record``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from anyclaude.errors import Overloaded

SUCCESS, FAILURE, IGNORE = "success", "failure", "ignore"


class Breaker:
    def __init__(self, *, threshold: int = 5, reset_after: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, name: str = "engine"):
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self.threshold, self.reset_after = threshold, reset_after
        self.clock, self.name = clock, name
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False
        self.trips = 0

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self.clock() - self._opened_at < self.reset_after:
            return "open"
        return "half_open"

    def allow(self) -> bool:
        """Take permission for one call; raise Overloaded if the breaker refuses it.

        Returns True when this call is the half-open trial (record it with ``record``).
        """
        with self._lock:
            state = self._state()
            if state == "closed":
                return False
            if state == "half_open" and not self._trial:
                self._trial = True
                return True
            wait = self.reset_after - (self.clock() - self._opened_at) if state == "open" else 1.0
        raise Overloaded(f"{self.name} is failing; not trying it again for {max(wait, 0):.1f} s "
                         "(circuit breaker open)", retry_after=max(wait, 1.0))

    def record(self, outcome: str, *, trial: bool = False) -> None:
        with self._lock:
            if trial:
                self._trial = False
            if outcome == SUCCESS:
                self._failures = 0
                self._opened_at = None
            elif outcome == FAILURE:
                self._failures += 1
                if trial or self._failures >= self.threshold:
                    if self._opened_at is None or trial:
                        self.trips += 1
                    self._opened_at = self.clock()

    def snapshot(self) -> dict:
        with self._lock:
            return {"state": self._state(), "consecutive_failures": self._failures,
                    "trips": self.trips}
