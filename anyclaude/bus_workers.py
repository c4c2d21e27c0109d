"""The two pieces every service built on bus.Service needs beside its loop.

``ThreadClients``: one bus.Client per (thread, service) - a socket never crosses threads.
``Workers``: handlers that may block (tokenizing, the network) run on a bounded pool, not in
the bus loop; whatever the work raises becomes an Error reply, so a caller always gets an
answer, and beyond ``max_waiting`` a call is refused at once instead of queueing forever.

    workers = Workers("optimize", 4)
    service = bus.Service("optimizer", {Optimize: workers.handler(optimize)})
    # optimize(call) -> the reply Message
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import structlog

from anyclaude import errors
from anyclaude.bus_client import Client
from anyclaude.messages import Error, Message

log = structlog.get_logger()


class ThreadClients:
    """One bus.Client per (thread, service name)."""

    def __init__(self):
        self._local = threading.local()

    def client(self, name: str) -> Client:
        clients = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        client = clients.get(name)
        if client is None:
            client = clients[name] = Client(name)
        return client

    def close_this_thread(self) -> None:
        for client in getattr(self._local, "clients", {}).values():
            client.close()
        self._local.clients = {}


def error_reply(exc: BaseException, what: str, *, crash_type: str = "internal") -> Message:
    """The Error for an exception of ``what`` (an AnyclaudeError as it is; anything else
    as ``crash_type``, logged with its traceback)."""
    if isinstance(exc, errors.AnyclaudeError):
        return Error(exc.type, exc.message, exc.retryable)
    log.exception(f"{what}.failed")
    return Error(crash_type, f"{what}: {exc.__class__.__name__}: {exc}")


class Workers:
    def __init__(self, name: str, threads: int, *, max_waiting: int = 0,
                 when_full: Callable[[], Message] | None = None,
                 on_crash: Callable[[BaseException], Message] | None = None):
        """``max_waiting`` > 0 bounds calls queued or running (``when_full()`` answers the
        rest); ``on_crash(exc)`` makes the reply for an exception (default error_reply)."""
        self.name = name
        self.pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix=name)
        self.slots = threading.BoundedSemaphore(max_waiting) if max_waiting > 0 else None
        self.when_full = when_full or (lambda: Error(
            "overloaded", f"{name}: more than {max_waiting} calls are waiting", True))
        self.on_crash = on_crash or (lambda exc: error_reply(exc, name))

    def handler(self, work: Callable) -> Callable:
        """A bus handler that runs ``work(call) -> reply`` on the pool and sends the reply."""
        def handle(call) -> None:
            if self.slots is not None and not self.slots.acquire(blocking=False):
                call.send(self.when_full())
                return
            try:
                self.pool.submit(self._run, work, call)
            except RuntimeError:   # shut down: the service is stopping
                self._release()
                call.send(Error("unavailable", f"{self.name} is shutting down", True))
        return handle

    def _run(self, work: Callable, call) -> None:
        try:
            reply = work(call)
        except Exception as exc:
            reply = self.on_crash(exc)
        finally:
            self._release()
        call.send(reply)

    def _release(self) -> None:
        if self.slots is not None:
            self.slots.release()

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
