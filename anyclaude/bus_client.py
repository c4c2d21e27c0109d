"""ZeroMQ endpoints, sockets and the client (the DEALER side of every request).

Rules this module enforces so callers cannot forget them:
- DEALER <-> ROUTER only; LINGER 0 everywhere; bounded HWM; ROUTER_MANDATORY on routers.
- One socket, one thread: a socket is created and closed by the thread that uses it.
- Every receive has a deadline.

The endpoint and socket helpers live here rather than in ``bus`` (the service side) because
the service announces its readiness through a Client: ``bus`` imports this module, never the
reverse. ``bus`` re-exports every name here, so ``bus.Client``, ``bus.endpoint`` still work.
"""

from __future__ import annotations

import os
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog
import zmq

from anyclaude import errors, messages
from anyclaude.messages import Message

log = structlog.get_logger()

HWM = 10_000
POLL_MS = 100


# --- endpoints and sockets --------------------------------------------------------------

def run_dir() -> Path:
    """The 0700 directory holding ipc sockets. Short on purpose: ipc paths max ~100 bytes."""
    path = Path(os.environ.get("ANYCLAUDE_RUN_DIR") or f"/tmp/anyclaude-{os.getuid()}")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise errors.ConfigError(f"run directory {path} belongs to another user; "
                                 "set ANYCLAUDE_RUN_DIR to a directory of your own")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def endpoint(name: str) -> str:
    address = f"ipc://{run_dir()}/{name}"
    if len(address) > 100:
        raise errors.ConfigError(f"ipc path too long ({len(address)} bytes): {address}; "
                                 "use a shorter ANYCLAUDE_RUN_DIR")
    return address


def socket_path(name: str) -> Path:
    return run_dir() / name


def make_socket(ctx: zmq.Context, socket_type: int) -> zmq.Socket:
    sock = ctx.socket(socket_type)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    if socket_type == zmq.ROUTER:
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    if socket_type == zmq.DEALER:
        sock.setsockopt(zmq.IMMEDIATE, 1)  # a send with no live peer fails instead of queueing
    return sock


def new_request_id() -> bytes:
    return uuid.uuid4().hex[:20].encode()


# --- the client side --------------------------------------------------------------------

@dataclass(frozen=True)
class Deadlines:
    accept: float = 5.0         # until Accepted
    first_frame: float = 600.0  # from Accepted until the first Delta/Done (big prefills)
    idle: float = 120.0         # between frames; Progress resets it
    total: float = 3600.0


class Client:
    """A DEALER for one thread. Replies whose request_id is not the one awaited are dropped."""

    def __init__(self, name: str, *, ctx: zmq.Context | None = None):
        self.name = name
        self.ctx = ctx or zmq.Context.instance()
        self._open()

    def _open(self) -> None:
        self.sock = make_socket(self.ctx, zmq.DEALER)
        self.monitor = self.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.sock.connect(endpoint(self.name))

    def close(self) -> None:
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(0)
        self.sock.close(0)

    def reset(self) -> None:
        """Lazy Pirate: a fresh socket after a timeout, so late replies cannot confuse us."""
        self.close()
        self._open()

    def send(self, msg: Message, request_id: bytes, *, timeout: float) -> None:
        frames = messages.encode(msg, request_id)
        self._forget_old_disconnects()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.send_multipart(frames, zmq.NOBLOCK)
                return
            except zmq.Again:
                # IMMEDIATE: no connected peer yet (starting, restarting, or down).
                if time.monotonic() >= deadline:
                    raise errors.ServiceUnavailable(
                        f"{self.name} is not running (or not answering: no connection within "
                        f"{timeout:g} s)") from None
                if self.sock.poll(min(50, POLL_MS), zmq.POLLOUT):
                    continue

    def _forget_old_disconnects(self) -> None:
        # A disconnect seen while no request was waiting concerns an earlier peer process.
        while self.monitor.poll(0):
            self.monitor.recv_multipart()

    def receive(self, request_id: bytes, timeout: float) -> Message | None:
        """The next frame for request_id, or None at the deadline. Raises if the peer died."""
        deadline = time.monotonic() + timeout
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            for sock, _ in poller.poll(min(int(left * 1000) + 1, POLL_MS)):
                if sock is self.monitor:
                    self.monitor.recv_multipart()
                    exc = errors.EngineFailed(f"{self.name} went away", retryable=True)
                    exc.peer_gone = True   # the process disconnected (crashed, killed)
                    raise exc
                try:
                    frames = self.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    continue
                try:
                    msg, rid = messages.decode(frames)
                except messages.WireError as exc:
                    log.warning("bus.client.bad_frame", peer=self.name, error=str(exc))
                    continue
                if rid == request_id:
                    return msg
                log.debug("bus.client.stale_reply", peer=self.name, kind=msg.kind)

    def request(self, msg: Message, *, timeout: float, retries: int = 0) -> Message:
        """One request, one reply. Retries (fresh socket, same message) only when the caller
        says the request is safe to repeat. An Error reply is raised as an exception."""
        for attempt in range(retries + 1):
            request_id = new_request_id()
            self.send(msg, request_id, timeout=timeout)
            reply = self.receive(request_id, timeout)
            if reply is not None:
                if isinstance(reply, messages.Error):
                    raise errors.from_wire(reply.type, reply.message, reply.retryable, reply.retry_after)
                return reply
            self.reset()
            log.info("bus.client.retry", peer=self.name, kind=msg.kind, attempt=attempt + 1)
        raise errors.Timeout(f"{self.name} did not answer {msg.kind} within {timeout:g} s")

    def stream(self, msg: Message, *, deadlines: Deadlines = Deadlines(),
               request_id: bytes | None = None, retries: int = 1,
               client_gone: Callable[[], bool] | None = None) -> Iterator[Message]:
        """Send a request whose answer is many frames, ending in Done or Error.

        Yields Accepted, Progress and Delta messages and the final Done; an Error frame is
        raised. The request is re-sent (Lazy Pirate) only while nothing was accepted. If the
        consumer stops early or a deadline passes, a Cancel is sent.
        """
        request_id = request_id or new_request_id()
        finished = False
        try:
            accepted = None
            # One accept deadline for all tries together (a resend does not restart it): a
            # hung peer is refused after deadlines.accept, not after (retries + 1) times it.
            # The first try may use all of it: a live peer that is slow to accept (just
            # restarted, busy loading) must not get the request twice, and a peer that went
            # away is seen by the socket monitor, not by a timeout.
            accept_by = time.monotonic() + deadlines.accept
            for attempt in range(retries + 1):
                now = time.monotonic()
                if attempt > 0 and now >= accept_by:
                    break
                try_by = accept_by
                try:   # waiting for a connection may take the whole deadline
                    self.send(msg, request_id, timeout=deadlines.accept if attempt == 0
                              else max(accept_by - now, 0.0))
                except errors.ServiceUnavailable:
                    if attempt == 0:
                        raise
                    break   # a peer that took the first try but no longer answers at all
                accepted = self._await(request_id, max(try_by - time.monotonic(), 0.0),
                                       client_gone)
                if accepted is not None:
                    break
                self.reset()
                log.info("bus.client.resend", peer=self.name, attempt=attempt + 1)
            if accepted is None:
                raise errors.ServiceUnavailable(
                    f"{self.name} did not accept the request within {deadlines.accept:g} s")
            if isinstance(accepted, messages.Error):
                finished = True
                raise errors.from_wire(accepted.type, accepted.message, accepted.retryable,
                                        accepted.retry_after)
            yield accepted
            started = time.monotonic()
            seen_output = not isinstance(accepted, messages.Accepted)
            while True:
                now = time.monotonic()
                limit = deadlines.idle
                if not seen_output:
                    limit = min(limit, started + deadlines.first_frame - now)
                limit = min(limit, started + deadlines.total - now)
                frame = self._await(request_id, max(limit, 0), client_gone)
                if frame is None:
                    what = "first output" if not seen_output else "next frame"
                    raise errors.Timeout(f"{self.name} produced no {what} in time")
                if isinstance(frame, messages.Error):
                    finished = True
                    raise errors.from_wire(frame.type, frame.message, frame.retryable,
                                        frame.retry_after)
                if isinstance(frame, (messages.Delta, messages.Done)):
                    seen_output = True
                if isinstance(frame, messages.Done):
                    finished = True  # nothing to cancel even if the consumer stops here
                    yield frame
                    return
                yield frame
        finally:
            if not finished:
                self.cancel(request_id)

    def _await(self, request_id: bytes, timeout: float,
               client_gone: Callable[[], bool] | None) -> Message | None:
        """receive() in slices so a vanished HTTP client is noticed while we wait."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            frame = self.receive(request_id, min(left, 0.25) if client_gone else left)
            if frame is not None:
                return frame
            if client_gone is not None and client_gone():
                raise errors.Cancelled("the client went away")

    def cancel(self, request_id: bytes) -> None:
        try:
            self.sock.send_multipart(messages.encode(messages.Cancel("caller"), request_id),
                                     zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
