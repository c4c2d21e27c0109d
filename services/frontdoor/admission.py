"""Admission control: a bounded FIFO queue per engine, in front of its slots.

Every request for an engine takes a place at once (``enter``): when ``slots + queue_size``
places are taken it is refused right away - 529 overloaded_error with a retry-after
estimated from the queue (places ahead / slots x the recent mean service time). A place
waits its turn in arrival order (``wait_turn``); a request whose client left while it
waited is dropped there and never reaches the engine. Only ``slots`` requests per engine
are on the engine at any time, so the engine's own queue stays short and a crashed engine
takes only the running request with it.

Slots: ``models.<id>.concurrency`` (unset: 1 for mlx, 4 for remote kinds;
anyclaude/engine_slots.py), as the engine service runs them: an MLX model above 1 as one
continuous batch, an upstream backend as that many requests in flight.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

import structlog

from anyclaude import errors
from anyclaude.engine_slots import engine_concurrency

log = structlog.get_logger()

POLL_S = 0.1            # how often a waiting request looks at its client
MIN_RETRY_S, MAX_RETRY_S = 1.0, 60.0   # Claude Code aborts on a retry-after over 60 s
FIRST_GUESS_S = 2.0     # mean service time before anything was measured
EWMA = 0.3


def slots_for(model_config) -> int:
    return engine_concurrency(model_config)


class Place:
    """One request's place in an engine's queue, then on one of its slots."""

    def __init__(self, model_id: str, request_id: str):
        self.model_id, self.request_id = model_id, request_id
        self.running = False
        self.left = False
        self.started = 0.0


class _Lane:
    def __init__(self, slots: int):
        self.slots = slots
        self.waiting: deque[Place] = deque()
        self.running = 0
        self.mean_s = FIRST_GUESS_S
        self.measured = False
        self.counts = dict(admitted=0, rejected=0, dropped=0, served=0)


class Admission:
    def __init__(self, slots: dict[str, int], *, queue_size: int,
                 clock: Callable[[], float] = time.monotonic):
        self.queue_size = max(int(queue_size), 0)
        self.clock = clock
        self._cond = threading.Condition()
        self._lanes = {model: _Lane(max(int(n), 1)) for model, n in slots.items()}
        self._closed = ""

    def _lane(self, model_id: str) -> _Lane:
        lane = self._lanes.get(model_id)
        if lane is None:       # a model the settings did not list (tests): one slot
            lane = self._lanes[model_id] = _Lane(1)
        return lane

    # -- the request's side --
    def enter(self, model_id: str, request_id: str) -> Place:
        """Take a place or raise Overloaded (with retry-after) at once."""
        with self._cond:
            if self._closed:
                raise errors.Overloaded(self._closed, retry_after=5.0)
            lane = self._lane(model_id)
            taken = lane.running + len(lane.waiting)
            if taken >= lane.slots + self.queue_size:
                lane.counts["rejected"] += 1
                wait = self._estimate(lane, taken + 1)
                log.info("frontdoor.admission_refused", request_id=request_id, model=model_id,
                         running=lane.running, waiting=len(lane.waiting), retry_after=wait)
                raise errors.Overloaded(
                    f"engine-{model_id} is busy: {taken} requests are running or waiting for "
                    f"it (at most {lane.slots} running + {self.queue_size} waiting); retry in "
                    f"about {wait:.0f} s", retry_after=wait)
            place = Place(model_id, request_id)
            lane.waiting.append(place)
            lane.counts["admitted"] += 1
            return place

    def move(self, place: Place, model_id: str) -> Place:
        """The optimizer routed the request to another model: queue there instead."""
        if model_id == place.model_id:
            return place
        self.leave(place)
        return self.enter(model_id, place.request_id)

    def wait_turn(self, place: Place, gone: Callable[[], bool]) -> bool:
        """Block until this place is first in line and a slot is free; True if it waited.

        Raises Cancelled when ``gone()`` turns true while waiting (the place is dropped),
        Overloaded when admission closes (shutting down)."""
        waited = False
        with self._cond:
            lane = self._lane(place.model_id)
            while True:
                if self._closed:
                    self._drop(lane, place)
                    raise errors.Overloaded(self._closed, retry_after=5.0)
                if lane.running < lane.slots and lane.waiting and lane.waiting[0] is place:
                    lane.waiting.popleft()
                    lane.running += 1
                    place.running, place.started = True, self.clock()
                    self._cond.notify_all()   # the next in line may have a slot too
                    return waited
                self._cond.wait(POLL_S)
                waited = True
                if gone():
                    self._drop(lane, place)
                    lane.counts["dropped"] += 1
                    log.info("frontdoor.dropped_while_queued", request_id=place.request_id,
                             model=place.model_id)
                    raise errors.Cancelled("the client went away while the request was queued")

    def leave(self, place: Place) -> None:
        """Give the place (or slot) back. Safe to call twice."""
        with self._cond:
            if place.left:
                return
            place.left = True
            lane = self._lane(place.model_id)
            if place.running:
                lane.running -= 1
                place.running = False
                took = max(self.clock() - place.started, 0.0)
                lane.mean_s = took if not lane.measured else EWMA * took + (1 - EWMA) * lane.mean_s
                lane.measured = True
                lane.counts["served"] += 1
            else:
                self._drop(lane, place)
            self._cond.notify_all()

    def _drop(self, lane: _Lane, place: Place) -> None:
        place.left = True
        try:
            lane.waiting.remove(place)
        except ValueError:
            pass
        self._cond.notify_all()

    def _estimate(self, lane: _Lane, position: int) -> float:
        wait = math.ceil(position / lane.slots) * lane.mean_s
        return float(min(max(wait, MIN_RETRY_S), MAX_RETRY_S))

    # -- the process's side --
    def close(self, reason: str) -> None:
        """Refuse new requests and release every waiting one with Overloaded(reason)."""
        with self._cond:
            self._closed = reason
            self._cond.notify_all()

    def busy(self) -> int:
        """Requests queued or running, over all engines."""
        with self._cond:
            return sum(lane.running + len(lane.waiting) for lane in self._lanes.values())

    def snapshot(self) -> dict:
        with self._cond:
            return {model: {"slots": lane.slots, "running": lane.running,
                            "waiting": len(lane.waiting), "limit": self.queue_size,
                            "mean_service_s": round(lane.mean_s, 3), **lane.counts}
                    for model, lane in self._lanes.items()}
