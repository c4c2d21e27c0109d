"""The duplicate-request guard.

Claude Code gives up on a request (timeout, user retry) and sends the same bytes again
while the first copy may still be running on the engine. Running both would double the
work on a one-slot engine, and nobody reads the first answer. So a new copy cancels the
running one, waits (bounded) until its engine work has stopped, then runs.
"""

from __future__ import annotations

import hashlib
import threading

import structlog

log = structlog.get_logger()


def request_key(api_key: str, body: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(api_key.encode("utf-8", "replace"))
    digest.update(b"\0")
    digest.update(body)
    return digest.hexdigest()


class Ticket:
    def __init__(self, key: str, request_id: str):
        self.key, self.request_id = key, request_id
        self.superseded = threading.Event()   # a newer identical request wants the slot
        self.done = threading.Event()         # this copy's engine work has stopped


class InFlight:
    def __init__(self, *, wait_s: float = 10.0):
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._running: dict[str, Ticket] = {}

    def enter(self, key: str, request_id: str) -> Ticket:
        ticket = Ticket(key, request_id)
        with self._lock:
            previous = self._running.get(key)
            self._running[key] = ticket
        if previous is not None:
            log.info("frontdoor.duplicate_request", request_id=request_id,
                     superseded=previous.request_id)
            previous.superseded.set()
            if not previous.done.wait(self.wait_s):
                log.warning("frontdoor.duplicate_still_running", superseded=previous.request_id)
        return ticket

    def leave(self, ticket: Ticket) -> None:
        ticket.done.set()
        with self._lock:
            if self._running.get(ticket.key) is ticket:
                del self._running[ticket.key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._running)
