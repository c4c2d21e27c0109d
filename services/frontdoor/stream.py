"""The HTTP side of one SSE stream: the hand-over queue, the writer, the WSGI body.

A worker thread puts engine frames (or the exception that ended them) into a ``Job``; the
waitress thread runs ``SSEWriter``, which owns the clock: a ping every ping_interval while
nothing else is written, a ping for Progress (at most every progress_ping), and a
keepalive content event when no content went out for ``stall_after`` seconds (Claude Code
aborts a stream after 300 s without one).

A client that stops reading blocks the writer inside waitress's write (its buffer is
bounded: server.write_buffer_kb). The writer marks the time it handed a chunk over
(``Job.writing_since``); the relay's watchdog cuts a writer blocked longer than the write
deadline (``Job.stalled``) - the engine work is cancelled and the connection closed, which
frees the waitress thread. At shutdown ``Job.closing`` makes the writer end the stream with
an ``event: error`` (overloaded_error).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

import structlog

from anyclaude import errors, messages

from . import sse

log = structlog.get_logger()

END = object()   # the worker is done and sent no Done before it


def public_error(exc: BaseException) -> tuple[int, str, str]:
    """(HTTP status, Anthropic error type, message) for anything raised while serving."""
    if isinstance(exc, sse.MalformedEvents):
        return 500, "api_error", f"the engine produced malformed output: {exc}"
    if isinstance(exc, errors.AnyclaudeError):
        status, kind = errors.to_anthropic(exc.type)
        # EngineDown (upstate.py): a fatal engine is a 503, not a 529 worth retrying
        return getattr(exc, "http_status", status), getattr(exc, "anthropic_type", kind), \
            exc.message
    return 500, "api_error", f"internal error ({exc.__class__.__name__})"


class Job:
    """The bounded hand-over between the worker thread and the HTTP thread."""

    def __init__(self, size: int, write_deadline: float,
                 close_connection: Callable[[], None] | None = None,
                 on_cut: Callable[[], None] | None = None):
        self.queue: queue.Queue = queue.Queue(maxsize=size)
        self.abandoned = threading.Event()
        self.closing = threading.Event()       # shutting down: end with an error event
        self.close_reason = ""
        self.write_deadline = write_deadline
        self.writing_since: float | None = None   # a chunk is with waitress since then
        self.close_connection = close_connection
        self.on_cut = on_cut

    def stalled(self) -> bool:
        """The writer has been blocked in one write for longer than the write deadline."""
        since = self.writing_since
        return since is not None and time.monotonic() - since > self.write_deadline

    def cut_off(self) -> None:
        """A stalled client: stop the engine work and close the connection."""
        if self.abandoned.is_set():
            return
        log.warning("frontdoor.client_stalled", deadline_s=self.write_deadline)
        self.abandoned.set()
        if self.on_cut is not None:
            self.on_cut()
        if self.close_connection is not None:
            self.close_connection()

    def shut(self, reason: str) -> None:
        self.close_reason = reason
        self.closing.set()
        try:
            self.queue.put_nowait(END)   # wake the writer; it checks ``closing`` first
        except queue.Full:
            pass

    def put(self, item) -> bool:
        """False once the HTTP side is gone, or has not taken anything for write_deadline
        seconds (a stalled client: the generation is then cancelled)."""
        deadline = time.monotonic() + self.write_deadline
        while not self.abandoned.is_set():
            try:
                self.queue.put(item, timeout=0.25)
                return True
            except queue.Full:
                if time.monotonic() >= deadline:
                    self.cut_off()
        return False

    def first_decisive(self, grace: float, unanswered: float = 0.0) -> list:
        """Frames up to the first one that is not Accepted, waiting at most ``grace`` s -
        or up to ``unanswered`` s while nothing at all came (an engine that does not accept
        is refused at the accept deadline, and that refusal, 529, is an HTTP status too).

        Lets an engine's immediate refusal (queue full, prompt too long, unsupported
        content, not accepting) become an HTTP status instead of an ``event: error``.
        """
        early: list = []
        started = time.monotonic()
        while (left := started + (grace if early else max(grace, unanswered))
               - time.monotonic()) > 0:
            try:
                item = self.queue.get(timeout=left)
            except queue.Empty:
                break
            early.append(item)
            if not isinstance(item, messages.Accepted):
                break
        return early


class Body:
    """The WSGI body: waitress calls close() when the response ends or the client left."""

    def __init__(self, chunks: Iterator[bytes], on_close: Callable[[], None]):
        self._chunks, self._on_close = chunks, on_close

    def __iter__(self):
        return self._chunks

    def close(self) -> None:
        try:
            self._chunks.close()
        finally:
            self._on_close()


class SSEWriter:
    def __init__(self, *, job: Job, state: sse.StreamState, request_id: str, model_id: str,
                 ping_interval: float, stall_after: float, progress_ping: float,
                 clock: Callable[[], float], disconnected: Callable[[], bool]):
        self.job, self.state, self.request_id, self.model_id = job, state, request_id, model_id
        self.ping_interval, self.stall_after = ping_interval, stall_after
        self.progress_ping, self.clock, self.disconnected = progress_ping, clock, disconnected
        self.last_sent = self.last_content = clock()
        self.last_progress = float("-inf")

    def chunks(self, early: list) -> Iterator[bytes]:
        inner = self._chunks(early)
        try:
            for chunk in inner:
                self.job.writing_since = time.monotonic()
                yield chunk                   # waitress writes it before asking for more
                self.job.writing_since = None
        finally:
            inner.close()

    def _chunks(self, early: list) -> Iterator[bytes]:
        out, ended = self._render(early)
        yield self.state.start() + out
        while not ended:
            now = self.clock()
            wait = min(self.ping_interval - (now - self.last_sent),
                       self.stall_after - (now - self.last_content))
            try:
                items = [self.job.queue.get(timeout=max(wait, 0.001))]
            except queue.Empty:
                items = []
            if self.job.closing.is_set():
                yield self._closing()
                return
            if not items:
                if self.disconnected() or self.job.abandoned.is_set():
                    return
                chunk = self._idle()
                if chunk:
                    yield chunk
                continue
            while len(items) < 64:   # batch what is already there into one write
                try:
                    items.append(self.job.queue.get_nowait())
                except queue.Empty:
                    break
            out, ended = self._render(items)
            if out:
                yield out

    def _closing(self) -> bytes:
        self.job.abandoned.set()              # the worker stops; the engine gets Cancel
        return self._error(errors.Overloaded(self.job.close_reason or "shutting down",
                                             retry_after=5.0))

    def _idle(self) -> bytes:
        now = self.clock()
        chunk = b""
        if now - self.last_content >= self.stall_after:
            chunk = self.state.keepalive()
            self.last_content = now
        if not chunk and now - self.last_sent >= self.ping_interval:
            chunk = sse.PING
        if chunk:
            self.last_sent = now
        return chunk

    def _render(self, items: list) -> tuple[bytes, bool]:
        """SSE bytes for a batch of frames, and whether the stream has ended."""
        out: list[bytes] = []
        now = self.clock()
        ended = False
        for item in items:
            try:
                if isinstance(item, messages.Delta):
                    chunk = self.state.feed(item.events)
                    if chunk:
                        out.append(chunk)
                        self.last_content = now
                elif isinstance(item, messages.Progress):
                    if now - self.last_progress >= self.progress_ping:
                        out.append(sse.PING)
                        self.last_progress = now
                elif isinstance(item, messages.Done):
                    out.append(self.state.finish(item.stop_reason, item.stop_sequence, item.usage))
                    log.info("frontdoor.stream_done", request_id=self.request_id,
                             stop_reason=item.stop_reason, usage=item.usage)
                    ended = True
                elif isinstance(item, BaseException):
                    out.append(self._error(item))
                    ended = True
                elif item is END:
                    out.append(self._error(errors.EngineFailed(
                        f"engine-{self.model_id} ended the stream without Done")))
                    ended = True
            except sse.MalformedEvents as exc:
                log.error("frontdoor.malformed_events", request_id=self.request_id,
                          error=str(exc))
                self.job.abandoned.set()   # stops the worker: the engine is cancelled
                out.append(self._error(exc))
                ended = True
            if ended:
                break
        if out:
            self.last_sent = now
        return b"".join(out), ended

    def _error(self, exc: BaseException) -> bytes:
        status, kind, message = public_error(exc)
        log.info("frontdoor.stream_error", request_id=self.request_id, status=status,
                 error_type=kind, message=message)
        return self.state.error(kind, message, self.request_id)
