"""One small circuit breaker, for the front door's engine calls and for websearch's SearXNG.

closed: calls go through; ``threshold`` consecutive failures open it.
open: calls are refused at once (``allow`` raises Overloaded with a retry-after) until the
cooldown has passed; then half_open: one trial call goes through, others are still refused.
The trial's success closes the breaker; its failure reopens it with the cooldown doubled, up
to ``max_cooldown_s`` (by default the cooldown never grows). A success resets the cooldown.

The caller judges each call and tells the breaker with ``record``: a failure, a success, or
neutral (the client went away, the callee was merely busy), which neither counts nor resets.
A failure of a call let through before the breaker opened does not extend the open time.
Thread-safe; the clock is injectable so tests can move time by hand.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from anyclaude.errors import Overloaded

SUCCESS, FAILURE, IGNORE = "success", "failure", "ignore"


class Breaker:
    def __init__(self, *, threshold: int = 5, cooldown_s: float = 10.0,
                 max_cooldown_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic, name: str = "engine"):
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self.threshold, self.name, self.clock = threshold, name, clock
        self.base_cooldown = cooldown_s
        self.max_cooldown = max(cooldown_s, max_cooldown_s or cooldown_s)
        self._lock = threading.Lock()
        self._failures = 0
        self._cooldown = cooldown_s
        self._opened_at: float | None = None
        self._trial = False  # the half-open trial call is in flight
        self.trips = 0

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self.clock() - self._opened_at < self._cooldown:
            return "open"
        return "half_open"

    def _retry_in(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self._cooldown - self.clock())

    def retry_in(self) -> float:
        """Seconds until a trial call will be allowed (0 when closed or half-open)."""
        with self._lock:
            return self._retry_in()

    def allow(self) -> bool:
        """Take permission for one call; raise Overloaded if the breaker refuses it.

        Returns True when this call is the half-open trial (record it with ``trial=True``).
        """
        with self._lock:
            state = self._state()
            if state == "closed":
                return False
            if state == "half_open" and not self._trial:
                self._trial = True
                return True
            wait = self._retry_in() if state == "open" else 1.0
        raise Overloaded(f"{self.name} is failing; not trying it again for {wait:.1f} s "
                         "(circuit breaker open)", retry_after=max(wait, 1.0))

    def record(self, outcome: str, *, trial: bool = False) -> None:
        """The outcome of a call: SUCCESS, FAILURE or IGNORE (neutral)."""
        with self._lock:
            if trial:
                self._trial = False
            if outcome == SUCCESS:
                self._failures = 0
                self._opened_at = None
                self._cooldown = self.base_cooldown
            elif outcome == FAILURE:
                self._failures += 1
                if trial:
                    self._cooldown = min(self._cooldown * 2, self.max_cooldown)
                    self._open()
                elif self._opened_at is None and self._failures >= self.threshold:
                    self._open()

    def _open(self) -> None:
        self._opened_at = self.clock()
        self.trips += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {"state": self._state(), "consecutive_failures": self._failures,
                    "trips": self.trips, "cooldown_s": self._cooldown}
