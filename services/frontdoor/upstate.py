"""What the supervisor knows about an engine, for fast and honest answers when it is down.

An engine that cannot be reached (crashed, restarting, given up on) makes the bus wait for
the accept deadline and then say only "not running". The supervisor knows better: it is
restarting (529 overloaded_error with a retry-after), or it is fatal (503, naming the
reason, not worth retrying until someone fixes it).

The front door asks only about an engine it suspects - one whose last call failed, and
every engine at start - so a healthy system never pays for it. The answer is cached
briefly. With no supervisor (tests, a front door run alone) nothing is known and nothing
is refused here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from anyclaude import bus, errors, messages

log = structlog.get_logger()

CACHE_S = 0.25
POLL_S = 0.1


class EngineDown(errors.ServiceUnavailable):
    """The engine was given up on (fatal): 503, not worth an automatic retry."""
    http_status = 503
    anthropic_type = "api_error"
    known_down = True        # not a breaker failure: the supervisor already knows


def supervisor_status() -> dict | None:
    """The supervisor's status, or None when there is no supervisor to ask."""
    if not bus.socket_path("control").exists():
        return None
    client = bus.Client("control")
    try:
        reply = client.request(messages.Command("status"), timeout=1.0)
    except errors.AnyclaudeError:
        return None
    finally:
        client.close()
    return reply.data if isinstance(reply, messages.Reply) and reply.ok else None


class EngineWatch:
    def __init__(self, models, *, restart_wait: float,
                 status: Callable[[], dict | None] = supervisor_status,
                 clock: Callable[[], float] = time.monotonic):
        self.restart_wait, self.clock, self._status = restart_wait, clock, status
        self._lock = threading.Lock()
        self._suspects = set(models)          # unknown at start: ask once
        self._cached: tuple[float, dict | None] | None = None

    def suspect(self, model_id: str) -> None:
        with self._lock:
            self._suspects.add(model_id)

    def clear(self, model_id: str) -> None:
        with self._lock:
            self._suspects.discard(model_id)

    def suspects(self) -> list[str]:
        with self._lock:
            return sorted(self._suspects)

    def service(self, model_id: str, *, fresh: bool = False) -> dict | None:
        now = self.clock()
        with self._lock:
            cached = self._cached
        if fresh or cached is None or now - cached[0] > CACHE_S:
            status = self._status()
            cached = (now, status)
            with self._lock:
                self._cached = cached
        status = cached[1]
        if not status:
            return None
        name = f"engine-{model_id}"
        return next((s for s in status.get("services", []) if s.get("name") == name), None)

    def check(self, model_id: str, *, fresh: bool = False) -> None:
        """Raise at once when the supervisor says a suspected engine cannot serve now.
        ``fresh``: ask now, not from the cache (a call just failed: the cached word may
        predate it)."""
        with self._lock:
            if model_id not in self._suspects:
                return
        svc = self.service(model_id, fresh=fresh)
        if svc is None or svc.get("state") == "ready":
            self.clear(model_id)
            return
        raise self.down_error(svc)

    @staticmethod
    def down_error(svc: dict) -> errors.AnyclaudeError:
        name, state = svc.get("name", "the engine"), svc.get("state", "unknown")
        reason = svc.get("reason") or ""
        if state == "fatal":
            tail = [line for line in svc.get("stderr_tail") or [] if line.strip()]
            last = f" (last output: {tail[-1].strip()[:200]})" if tail else ""
            return EngineDown(f"{name} is fatal: {reason}{last}; fix the cause, then run "
                              f"`anyclaude restart {name}`", retryable=False)
        why = f": {reason}" if reason else ""
        return errors.Overloaded(f"{name} is {state}{why}; retry shortly",
                                 retry_after=5.0 if state == "stopped" else 2.0)

    def wait_restart(self, model_id: str, gone: Callable[[], bool],
                     closing: threading.Event) -> dict | None:
        """Wait (bounded by restart_wait) until a fresh engine process is ready.

        Returns None when it is (or when there is no supervisor to wait for: one plain
        retry), else the service's last status (fatal, still down, or shutting down)."""
        first = self.service(model_id, fresh=True)
        if first is None:
            return None
        first_pid, seen_down = first.get("pid"), first.get("state") != "ready"
        deadline = self.clock() + self.restart_wait
        svc = first
        while True:
            state = svc.get("state")
            if state == "ready" and (seen_down or svc.get("pid") != first_pid):
                self.clear(model_id)
                return None
            if state == "fatal" or closing.is_set() or self.clock() >= deadline:
                return svc
            seen_down = seen_down or state != "ready"
            if gone():
                raise errors.Cancelled("the client went away while the engine restarted")
            closing.wait(POLL_S)
            svc = self.service(model_id, fresh=True) or {"name": f"engine-{model_id}",
                                                         "state": "unknown"}
