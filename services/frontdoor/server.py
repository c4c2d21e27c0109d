"""The waitress server for the app, with waitress's own errors in the Anthropic format.

waitress answers some requests without calling the app (a body over its size limit,
malformed HTTP, an app crash before headers): those answers get the Anthropic error body
too, so an SDK always finds ``{"type":"error","error":{...}}``.

Load shedding: waitress hands requests to a fixed pool of threads and queues the rest
silently. The app's admission queue (admission.py) is where waiting is meant to happen, so
the server starts enough threads for it (``app.capacity`` + 4); if every thread is still
busy and a few requests already wait for one, a new request is answered 529 at once by a
small reserve pool instead of waiting in the dark (``SheddingDispatcher``).

A stalled client: the relay can close its connection (``environ["anyclaude.close_connection"]``)
so that the waitress thread blocked writing to it is freed.
"""

from __future__ import annotations

import json
import socket
import uuid

import structlog
import waitress
from waitress.channel import HTTPChannel
from waitress.task import ErrorTask, ThreadedTaskDispatcher, WSGITask
from waitress.utilities import Error

from anyclaude.config import Settings

from .sse import error_body, error_type_for

log = structlog.get_logger()

RESERVE_THREADS = 4       # threads beyond the admission capacity (counts, health, refusals)
SHED_AFTER_WAITING = 4    # requests allowed to wait for a thread before new ones are shed
SHED_RETRY_S = 2


class Busy(Error):
    code = 529
    reason = "Overloaded"


class AnthropicErrorTask(ErrorTask):
    def execute(self):
        error = self.request.error
        code = int(error.code)
        kind = "request_too_large" if code == 431 else error_type_for(code)
        request_id = "req_" + uuid.uuid4().hex[:24]
        message = f"{error.reason}: {error.body}"
        if code == 413:
            limit = getattr(self.channel.server, "anyclaude_body_limit", None)
            message = "request body is too large" + (
                f"; the limit is {limit} bytes (server.max_body_mb)" if limit else "")
        if code == 529:
            message = error.body
            self.response_headers.extend([("retry-after", str(SHED_RETRY_S)),
                                          ("retry-after-ms", str(SHED_RETRY_S * 1000))])
        body = json.dumps(error_body(kind, message, request_id)).encode()
        self.status = f"{code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"),
                                      ("request-id", request_id),
                                      ("x-should-retry", "false" if code < 500 else "true")])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class AnthropicTask(WSGITask):
    def get_environment(self):
        environ = super().get_environment()
        environ["anyclaude.close_connection"] = self.channel.force_close
        return environ


class AnthropicChannel(HTTPChannel):
    error_task_class = AnthropicErrorTask
    task_class = AnthropicTask

    def force_close(self) -> None:
        """Close the connection from any thread, even while a task is blocked writing to it:
        shut the socket down (the loop then sees it writable, fails the write and closes the
        channel, which wakes the blocked writer with ClientDisconnected)."""
        self.will_close = True
        try:
            self.socket.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass
        self.server.pull_trigger()


class SheddingDispatcher(ThreadedTaskDispatcher):
    """waitress's dispatcher, answering 529 at once when no thread is coming free."""

    def __init__(self, threads: int):
        super().__init__()
        self.set_thread_count(threads)
        self.reserve = ThreadedTaskDispatcher()
        self.reserve.set_thread_count(2)
        self.shed = 0

    def add_task(self, task) -> None:
        with self.lock:
            idle = len(self.threads) - self.stop_count - self.active_count - len(self.queue)
            busy = idle <= 0 and len(self.queue) >= SHED_AFTER_WAITING
        requests = getattr(task, "requests", None)
        if busy and requests and not requests[0].error:
            self.shed += 1
            log.warning("frontdoor.shed", threads=len(self.threads), waiting=len(self.queue))
            requests[0].error = Busy(f"anyclaude is busy: all {len(self.threads)} request "
                                     f"threads are in use and {len(self.queue)} requests wait "
                                     f"for one; retry in {SHED_RETRY_S} s")
            self.reserve.add_task(task)
            return
        super().add_task(task)

    def shutdown(self, cancel_pending=True, timeout=5):
        self.reserve.shutdown(cancel_pending, timeout)
        return super().shutdown(cancel_pending, timeout)


def make_server(app, settings: Settings, *, host: str | None = None, port: int | None = None,
                **adjustments):
    """A bound (listening) waitress server; call ``.run()`` to serve.

    The app enforces the body cap itself (server.max_body_mb -> 413 with the Anthropic
    body, after reading the request). waitress's own cap sits well above it, so only an
    absurd body is cut off by waitress - and then still answered in the Anthropic format.
    """
    cap = settings.server.max_body_mb * 1024 * 1024
    threads = max(settings.server.threads, getattr(app, "capacity", 0) + RESERVE_THREADS)
    buffer = getattr(settings.server, "write_buffer_kb", 1024) * 1024
    options = dict(
        host=settings.server.host if host is None else host,
        port=settings.server.port if port is None else port,
        threads=threads,
        channel_request_lookahead=1,      # read the socket during a request: see disconnects
        max_request_body_size=2 * cap + 1024 * 1024,
        outbuf_high_watermark=buffer,     # a stalled client blocks writes early (bounded)
        ident="anyclaude",
        clear_untrusted_proxy_headers=True,
    )
    options.update(adjustments)
    dispatcher = SheddingDispatcher(int(options["threads"]))
    server = waitress.create_server(app, _dispatcher=dispatcher, **options)
    server.channel_class = AnthropicChannel
    listener = getattr(server, "socket", None)
    if listener is not None:   # the kernel's share is bounded too: accepted sockets inherit it
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
    server.anyclaude_body_limit = cap
    return server
