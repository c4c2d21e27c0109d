"""Running one request on an engine: the SSE relay and the non-streaming reply.

Streaming: the engine's frames are read by a worker thread (the bus call blocks, and a
bus.Client belongs to the thread that made it) and handed over a bounded queue to the
HTTP thread, which writes SSE (stream.py).

Before the response starts, ``stream`` waits a short grace (normally well under a
millisecond: until the engine's first frame after Accepted) so an immediate refusal -
queue full, prompt too long, unsupported content - is an HTTP status; then message_start
and a ping go out at once, long before a big prefill ends.

Cancellation: when the client goes away waitress closes our body iterable; the worker
sees ``abandoned`` (or the client_gone callback trips inside the bus wait), closes the
engine stream in its own thread, and bus.Client.stream sends Cancel.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import structlog

from anyclaude import errors, messages
from anyclaude.errors import AnyclaudeError

from . import sse
from .assemble import Assembler
from .breaker import FAILURE, IGNORE, SUCCESS, Breaker
from .inflight import InFlight, Ticket
from .stream import END, Body, Job, SSEWriter

log = structlog.get_logger()

_HEALTHY = {"invalid_request", "prompt_too_long", "unsupported_content", "not_found"}
_NEUTRAL = {"cancelled", "overloaded", "rate_limit"}


def outcome_of(exc: BaseException) -> str:
    """How an engine error counts for the breaker."""
    kind = getattr(exc, "type", "internal")
    if kind in _HEALTHY:
        return SUCCESS    # the engine answered; the request was at fault
    if kind in _NEUTRAL:
        return IGNORE     # the client left, or the engine is merely busy
    return FAILURE


@dataclass
class Call:
    """One engine request, prepared by the HTTP handler."""
    request_id: str
    message_id: str
    requested_model: str     # echoed in the reply
    model_id: str            # the local model that runs it
    request: dict            # the internal request
    ticket: Ticket
    trial: bool              # this call is the breaker's half-open trial


class Relay:
    def __init__(self, *, engines, breaker: Breaker, inflight: InFlight, threads: int,
                 ping_interval: float, stall_after: float, progress_ping: float,
                 write_deadline: float, early_grace: float = 0.25, queue_size: int = 256,
                 clock: Callable[[], float] = time.monotonic):
        self.engines, self.breaker, self.inflight = engines, breaker, inflight
        self.ping_interval, self.stall_after = ping_interval, stall_after
        self.progress_ping, self.write_deadline = progress_ping, write_deadline
        self.early_grace, self.queue_size, self.clock = early_grace, queue_size, clock
        self.pool = ThreadPoolExecutor(max_workers=max(threads, 1), thread_name_prefix="relay")

    # -- the engine call, shared by both paths --
    def _frames(self, call: Call, gone: Callable[[], bool]) -> Iterator[messages.Message]:
        outcome = IGNORE
        frames = None
        try:
            frames = self.engines.stream(call.model_id, call.request,
                                         request_id=call.request_id, client_gone=gone)
            for frame in frames:
                if isinstance(frame, messages.Done):
                    outcome = SUCCESS
                yield frame
        except Exception as exc:   # not GeneratorExit: a consumer that stops is neutral
            outcome = outcome_of(exc)
            raise
        finally:
            try:
                if frames is not None:
                    frames.close()   # in this thread: bus.Client.stream sends Cancel if unfinished
            finally:
                self.breaker.record(outcome, trial=call.trial)
                self.inflight.leave(call.ticket)

    def _gone(self, call: Call, disconnected: Callable[[], bool],
              job: Job | None = None) -> Callable[[], bool]:
        superseded = call.ticket.superseded

        def gone() -> bool:
            return superseded.is_set() or (job is not None and job.abandoned.is_set()) \
                or disconnected()
        return gone

    def release(self, call: Call) -> None:
        """Give back what the handler took when the call never reaches the engine."""
        self.breaker.record(IGNORE, trial=call.trial)
        self.inflight.leave(call.ticket)

    @staticmethod
    def _cancelled(call: Call, exc: errors.Cancelled) -> errors.Cancelled:
        if call.ticket.superseded.is_set():
            return errors.Cancelled("cancelled: an identical request (same body and key) "
                                    "replaced this one")
        return exc

    # -- non-streaming --
    def complete(self, call: Call, disconnected: Callable[[], bool]) -> dict:
        reply = Assembler(message_id=call.message_id, model=call.requested_model)
        gone = self._gone(call, disconnected)
        frames = self._frames(call, gone)
        done = None
        try:
            for frame in frames:   # to the end: closing the bus stream early sends a Cancel
                if isinstance(frame, messages.Delta):
                    reply.feed(frame.events)
                elif isinstance(frame, messages.Done):
                    done = frame
        except errors.Cancelled as exc:
            raise self._cancelled(call, exc) from None
        finally:
            frames.close()
        if done is None:
            raise errors.EngineFailed(f"engine-{call.model_id} ended the stream without Done")
        return reply.finish(done.stop_reason, done.stop_sequence, done.usage)

    # -- streaming --
    def stream(self, call: Call, disconnected: Callable[[], bool], *, thinking: bool) -> Body:
        job = Job(self.queue_size, self.write_deadline)
        try:
            self.pool.submit(self._pump, call, job, self._gone(call, disconnected, job))
        except RuntimeError:   # the pool is shut down: we are stopping
            self.release(call)
            raise errors.Overloaded("the front door is shutting down") from None
        early = job.first_decisive(self.early_grace)
        if early and isinstance(early[-1], BaseException):
            raise early[-1]    # refused before any byte: an HTTP status (the worker is done)
        if early and early[-1] is END:
            raise errors.EngineFailed(f"engine-{call.model_id} ended the stream without Done")
        state = sse.StreamState(message_id=call.message_id, model=call.requested_model,
                                thinking=thinking)
        writer = SSEWriter(job=job, state=state, request_id=call.request_id,
                           model_id=call.model_id, ping_interval=self.ping_interval,
                           stall_after=self.stall_after, progress_ping=self.progress_ping,
                           clock=self.clock, disconnected=disconnected)
        return Body(writer.chunks(early), job.abandoned.set)

    def _pump(self, call: Call, job: Job, gone: Callable[[], bool]) -> None:
        if gone():   # gone while this waited for a worker: never start it
            self.release(call)
            job.put(self._cancelled(call, errors.Cancelled("the client went away")))
            return
        frames = self._frames(call, gone)
        try:
            for frame in frames:
                if not job.put(frame):
                    return
        except errors.Cancelled as exc:
            job.put(self._cancelled(call, exc))
        except Exception as exc:
            job.put(exc)   # first: the HTTP side may be waiting on it
            if not isinstance(exc, AnyclaudeError):
                log.exception("frontdoor.relay_failed", request_id=call.request_id)
        finally:
            frames.close()
        job.put(END)
