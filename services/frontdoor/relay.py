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

Around the engine call (``_frames``): the request first waits its turn in the engine's
admission queue (admission.py); an engine the supervisor reports down is answered at once
(upstate.py) - unless the request already waited in line: it waits on for the restart. An
engine process that dies under the call before any output gets one transparent retry on
the fresh process. Both waits are bounded by timeouts.restart_wait_s. After the first
Delta there is never a retry.

Shutdown: ``begin_shutdown`` refuses new and queued requests; ``shutdown`` ends every open
stream with ``event: error`` (overloaded_error) and cancels its engine work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import structlog

from anyclaude import errors, messages
from anyclaude.breaker import FAILURE, IGNORE, SUCCESS, Breaker
from anyclaude.errors import AnyclaudeError

from . import sse
from .admission import Admission, Place
from .assemble import Assembler
from .cut_notice import with_cut_notice
from .inflight import InFlight, Ticket
from .records import Record, Recorder
from .stream import END, Body, Job, SSEWriter, public_error
from .upstate import EngineWatch

log = structlog.get_logger()

_HEALTHY = {"invalid_request", "prompt_too_long", "unsupported_content", "not_found"}
_NEUTRAL = {"cancelled", "overloaded", "rate_limit"}


def outcome_of(exc: BaseException) -> str:
    """How an engine error counts for the breaker."""
    kind = getattr(exc, "type", "internal")
    if kind in _HEALTHY:
        return SUCCESS    # the engine answered; the request was at fault
    if kind in _NEUTRAL or getattr(exc, "known_down", False):
        return IGNORE     # the client left, the engine is merely busy, or the supervisor
    return FAILURE        # already knows it is down (restarting, fatal)


def _known_down(exc: AnyclaudeError) -> AnyclaudeError:
    exc.known_down = True
    return exc


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
    place: Place | None = None   # its place in the engine's admission queue
    engine_stream: Callable | None = None   # replaces engines.stream (the search loop)
    record: Record | None = None            # for the status page, /metrics and the log
    cut: dict | None = None  # the optimizer left messages out: say so (cut_notice.py)


class Relay:
    def __init__(self, *, engines, breaker: Breaker, inflight: InFlight, threads: int,
                 ping_interval: float, stall_after: float, progress_ping: float,
                 write_deadline: float, early_grace: float = 0.25, accept_wait: float = 0.0,
                 queue_size: int = 256,
                 clock: Callable[[], float] = time.monotonic,
                 admission: Admission | None = None, watch: EngineWatch | None = None):
        self.engines, self.breaker, self.inflight = engines, breaker, inflight
        self.ping_interval, self.stall_after = ping_interval, stall_after
        self.progress_ping, self.write_deadline = progress_ping, write_deadline
        self.early_grace, self.queue_size, self.clock = early_grace, queue_size, clock
        self.accept_wait = accept_wait   # headers wait this long for a first engine frame
        self.admission, self.watch = admission, watch
        self.pool = ThreadPoolExecutor(max_workers=max(threads, 1), thread_name_prefix="relay")
        self.closing = threading.Event()
        self.close_reason = "anyclaude is shutting down"
        self._jobs: set[Job] = set()
        self._jobs_lock = threading.Lock()
        self._watchdog: threading.Thread | None = None
        self.retries = 0
        self.clients_cut = 0       # stalled clients cut off at the write deadline
        self.recorder = Recorder()

    # -- the engine call, shared by both paths --
    def _frames(self, call: Call, gone: Callable[[], bool]) -> Iterator[messages.Message]:
        outcome = IGNORE
        try:
            waited = call.place is not None and self.admission.wait_turn(call.place, gone)
            retried = False
            while True:
                if self.watch is not None:
                    self._check_engine(call, gone, patient=waited and not retried)
                output = False
                run = call.engine_stream or self.engines.stream
                frames = run(call.model_id, call.request, request_id=call.request_id,
                             client_gone=gone)
                if call.cut:
                    frames = with_cut_notice(frames, call.cut)
                try:
                    for frame in frames:
                        if isinstance(frame, (messages.Delta, messages.Done)):
                            output = True
                            self.recorder.first_output(call.record)
                        if isinstance(frame, messages.Done):
                            outcome = SUCCESS
                            self.recorder.done(call.record, frame)
                        yield frame
                    return
                except (errors.EngineFailed, errors.ServiceUnavailable) as exc:
                    if self.watch is not None:
                        self.watch.suspect(call.model_id)
                    if output or retried or not self._retry_allowed(call, exc, gone, waited):
                        raise
                    retried = True
                    self.retries += 1
                    log.info("frontdoor.engine_retry", request_id=call.request_id,
                             model=call.model_id, error=exc.message)
                finally:
                    frames.close()   # in this thread: bus.Client.stream sends Cancel if unfinished
        except Exception as exc:   # not GeneratorExit: a consumer that stops is neutral
            outcome = outcome_of(exc)
            status, kind, _ = public_error(self._cancelled(call, exc)
                                           if isinstance(exc, errors.Cancelled) else exc)
            self.recorder.fail(call.record, status, kind)
            raise
        finally:
            self.breaker.record(outcome, trial=call.trial)
            if call.place is not None:
                self.admission.leave(call.place)
            self.inflight.leave(call.ticket)
            self.recorder.finish(call.record)

    def _check_engine(self, call: Call, gone: Callable[[], bool], *, patient: bool) -> None:
        """A suspected engine that is down: an error at once - but a request that already
        waited its turn in line waits (bounded) for the restarted engine instead."""
        try:
            self.watch.check(call.model_id)
        except errors.Overloaded as exc:       # restarting (a fatal engine is EngineDown)
            if not patient or self.watch.restart_wait <= 0:
                raise
            self._await_restart(call, gone, exc.message)

    def _retry_allowed(self, call: Call, exc: AnyclaudeError, gone: Callable[[], bool],
                       waited: bool) -> bool:
        """One retry, once a fresh engine is ready: when the engine process died under this
        call (before any output), or - for a request that waited in line - when the engine
        turned out to be restarting. Anything else (not running, still loading, busy, hung
        when a new request reaches it) is answered at once: 529, or 503 when given up on.
        Raises the better error when the engine does not come back."""
        if self.watch is None or self.watch.restart_wait <= 0:
            return False
        died = isinstance(exc, errors.EngineFailed) and getattr(exc, "peer_gone", False)
        if not died:
            svc = self.watch.service(call.model_id, fresh=True) if waited else None
            if svc is None or svc.get("state") == "ready":
                return False
        self._await_restart(call, gone, exc.message)
        return True

    def _await_restart(self, call: Call, gone: Callable[[], bool], why: str) -> None:
        svc = self.watch.wait_restart(call.model_id, gone, self.closing)
        if svc is None:
            return
        if self.closing.is_set():
            raise errors.Overloaded(self.close_reason, retry_after=5.0)
        if svc.get("state") == "fatal":
            raise _known_down(self.watch.down_error(svc))
        raise _known_down(errors.Overloaded(
            f"engine-{call.model_id} is not ready ({why}) and was not ready again within "
            f"{self.watch.restart_wait:g} s (it is {svc.get('state')}); retry shortly",
            retry_after=5.0))

    def _gone(self, call: Call, disconnected: Callable[[], bool],
              job: Job | None = None) -> Callable[[], bool]:
        superseded = call.ticket.superseded
        closing = self.closing

        def gone() -> bool:
            return superseded.is_set() or closing.is_set() or disconnected() \
                or (job is not None and job.abandoned.is_set())
        return gone

    def release(self, call: Call) -> None:
        """Give back what the handler took when the call never reaches the engine."""
        self.breaker.record(IGNORE, trial=call.trial)
        if call.place is not None:
            self.admission.leave(call.place)
        self.inflight.leave(call.ticket)
        self.recorder.finish(call.record)

    def _cancelled(self, call: Call, exc: errors.Cancelled) -> AnyclaudeError:
        if call.ticket.superseded.is_set():
            return errors.Cancelled("cancelled: an identical request (same body and key) "
                                    "replaced this one")
        if self.closing.is_set():
            return errors.Overloaded(self.close_reason, retry_after=5.0)
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
    def stream(self, call: Call, disconnected: Callable[[], bool], *, thinking: bool,
               close_connection: Callable[[], None] | None = None) -> Body:
        job = Job(self.queue_size, self.write_deadline, close_connection, self._cut)
        try:
            self.pool.submit(self._pump, call, job, self._gone(call, disconnected, job))
        except RuntimeError:   # the pool is shut down: we are stopping
            self.release(call)
            raise errors.Overloaded("the front door is shutting down") from None
        early = job.first_decisive(self.early_grace, self.accept_wait)
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
        self._track(job)
        if self.closing.is_set():
            job.shut(self.close_reason)

        def closed() -> None:
            job.abandoned.set()
            with self._jobs_lock:
                self._jobs.discard(job)
        return Body(writer.chunks(early), closed)

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

    # -- open streams: the stall watchdog and shutdown --
    def _cut(self) -> None:
        self.clients_cut += 1

    def _track(self, job: Job) -> None:
        with self._jobs_lock:
            self._jobs.add(job)
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch_writers, daemon=True,
                                                  name="relay-watchdog")
                self._watchdog.start()

    def _watch_writers(self) -> None:
        """Cut off clients whose writes have been blocked past the write deadline."""
        while True:
            time.sleep(min(0.25, max(self.write_deadline / 4, 0.01)))
            with self._jobs_lock:
                stalled = [job for job in self._jobs
                           if job.stalled() and not job.abandoned.is_set()]
            for job in stalled:
                job.cut_off()

    def open_streams(self) -> int:
        with self._jobs_lock:
            return len(self._jobs)

    def begin_shutdown(self) -> None:
        """Refuse new requests and release the queued ones; running ones go on."""
        if self.admission is not None:
            self.admission.close(self.close_reason)

    def shutdown(self) -> None:
        """End every open stream now with an error event and cancel its engine work."""
        self.begin_shutdown()
        self.closing.set()
        with self._jobs_lock:
            jobs = list(self._jobs)
        for job in jobs:
            job.shut(self.close_reason)
        log.info("frontdoor.streams_closed", streams=len(jobs))
