"""ZeroMQ helpers: endpoints, sockets, the service loop and the client.

Rules this module enforces so callers cannot forget them:
- DEALER <-> ROUTER only; LINGER 0 everywhere; bounded HWM; ROUTER_MANDATORY on routers.
- One socket, one thread: a socket is created and closed by the thread that uses it.
- Every receive has a deadline.
"""

from __future__ import annotations

import os
import stat
import threading
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


# --- the service side -------------------------------------------------------------------

class Call:
    """One request received by a service. ``send`` may be called from any thread."""

    def __init__(self, service: "Service", peer: bytes, request_id: bytes, message: Message):
        self.service, self.peer, self.request_id, self.message = service, peer, request_id, message
        self.gone = threading.Event()  # set when the caller can no longer be reached

    def send(self, msg: Message) -> None:
        self.service._send(self, msg)


Handler = Callable[[Call], None]


class Service:
    """A ROUTER loop: dispatch by kind, heartbeats, readiness, thread-safe replies.

    Handlers run in the loop thread and must return quickly; long work goes to a thread of
    the service's own, which replies through ``call.send``.
    """

    def __init__(self, name: str, handlers: dict[type[Message], Handler], *,
                 info: Callable[[], dict] | None = None, heartbeat_interval: float = 1.0):
        self.name = name
        self.handlers = {cls.kind: fn for cls, fn in handlers.items()}
        self.info = info or dict
        self.heartbeat_interval = heartbeat_interval
        self.state = "starting"
        self.ctx = zmq.Context.instance()
        self._outbox_address = f"inproc://outbox-{name}-{id(self)}"
        self._local = threading.local()
        self._loop_thread: int | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._ready_sent = False
        self._calls: dict[bytes, Call] = {}  # peer+request_id -> Call, for marking gone
        self.seq = 0

    # -- public --
    def mark_ready(self) -> None:
        self._ready.set()

    def stop(self) -> None:
        self._stop.set()

    def run(self, *, ready: bool = True) -> None:
        if ready:
            self._ready.set()
        self._loop_thread = threading.get_ident()
        router = make_socket(self.ctx, zmq.ROUTER)
        path = socket_path(self.name)
        if path.exists():
            path.unlink()  # stale socket of a dead predecessor
        router.bind(endpoint(self.name))
        outbox = make_socket(self.ctx, zmq.PULL)
        outbox.bind(self._outbox_address)
        pub = make_socket(self.ctx, zmq.PUB)
        pub.connect(endpoint("events"))
        self._router = router
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(outbox, zmq.POLLIN)
        next_beat = 0.0
        log.info("bus.service.listening", service=self.name, endpoint=endpoint(self.name))
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if self._ready.is_set() and not self._ready_sent:
                    self.state = "ready"
                    self._ready_sent = True
                    self._announce_ready()
                if now >= next_beat:
                    self._heartbeat(pub)
                    next_beat = now + self.heartbeat_interval
                timeout = max(0, min(POLL_MS, int((next_beat - now) * 1000)))
                for sock, _ in poller.poll(timeout):
                    if sock is router:
                        self._drain_router(router)
                    else:
                        self._drain_outbox(outbox)
        finally:
            self.state = "stopping"
            for sock in (router, outbox, pub):
                sock.close(0)
            if path.exists():
                path.unlink()
            log.info("bus.service.stopped", service=self.name)

    # -- loop internals --
    def _drain_router(self, router: zmq.Socket) -> None:
        for _ in range(1000):
            try:
                frames = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._dispatch(frames)

    def _drain_outbox(self, outbox: zmq.Socket) -> None:
        for _ in range(1000):
            try:
                frames = outbox.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._route(frames[0], frames[1:])

    def _dispatch(self, frames: list[bytes]) -> None:
        peer, body = frames[0], frames[1:]
        request_id = body[1] if len(body) >= 2 else b""
        try:
            msg, request_id = messages.decode(body)
        except messages.WireError as exc:
            log.warning("bus.bad_frame", service=self.name, error=str(exc))
            self._route(peer, messages.encode(messages.Error("bad_frame", str(exc)), request_id))
            return
        handler = self.handlers.get(msg.kind)
        call = Call(self, peer, request_id, msg)
        if handler is None:
            if isinstance(msg, messages.Command):
                return self._builtin_command(call)
            text = f"service {self.name!r} does not handle {msg.kind} messages"
            call.send(messages.Error("bad_frame", text))
            return
        self._calls[peer + b"/" + request_id] = call
        if len(self._calls) > 4096:  # forget the oldest: only live calls need tracking
            for key in list(self._calls)[:1024]:
                del self._calls[key]
        try:
            handler(call)
        except errors.AnyclaudeError as exc:
            call.send(messages.Error(exc.type, exc.message, exc.retryable))
        except Exception as exc:
            log.exception("bus.handler_failed", service=self.name, kind=msg.kind)
            call.send(messages.Error("internal", f"{self.name}: {exc.__class__.__name__}: {exc}"))

    def _builtin_command(self, call: Call) -> None:
        name = call.message.name
        if name == "ping":
            call.send(messages.Reply(True, {"service": self.name, "state": self.state}))
        elif name == "info":
            call.send(messages.Reply(True, self.info()))
        else:
            call.send(messages.Reply(False, error=f"unknown command {name!r} for {self.name}"))

    def _send(self, call: Call, msg: Message) -> None:
        frames = messages.encode(msg, call.request_id)
        if threading.get_ident() == self._loop_thread:
            self._route(call.peer, frames)
            return
        push = getattr(self._local, "push", None)
        if push is None:
            push = self._local.push = make_socket(self.ctx, zmq.PUSH)
            push.connect(self._outbox_address)
        push.send_multipart([call.peer, *frames])

    def _route(self, peer: bytes, frames: list[bytes]) -> None:
        try:
            self._router.send_multipart([peer, *frames], zmq.NOBLOCK)
        except (zmq.Again, zmq.ZMQError) as exc:
            # Unknown peer (it went away) or its queue is full (it stopped reading).
            call = self._calls.pop(peer + b"/" + frames[1], None)
            if call is not None:
                call.gone.set()
            log.info("bus.peer_unreachable", service=self.name, error=str(exc))

    def close_thread_sockets(self) -> None:
        """Call from a worker thread before it exits, to close its outbox socket."""
        push = getattr(self._local, "push", None)
        if push is not None:
            push.close(0)
            self._local.push = None

    def _heartbeat(self, pub: zmq.Socket) -> None:
        self.seq += 1
        try:
            beat = messages.Heartbeat(self.name, self.state, os.getpid(), self.seq, self.info())
        except Exception:
            log.exception("bus.info_failed", service=self.name)
            beat = messages.Heartbeat(self.name, self.state, os.getpid(), self.seq, {})
        try:
            pub.send_multipart(messages.encode(beat, b""), zmq.NOBLOCK)
        except zmq.Again:
            pass

    def _announce_ready(self) -> None:
        """Tell the supervisor (if there is one) through its ROUTER; PUB would lose it."""
        if not socket_path("control").exists():
            return
        client = Client("control")
        try:
            client.request(messages.Command("ready", {"service": self.name, "pid": os.getpid()}),
                           timeout=2.0)
        except errors.AnyclaudeError as exc:
            log.warning("bus.ready_not_acknowledged", service=self.name, error=exc.message)
        finally:
            client.close()


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
            for attempt in range(retries + 1):
                try:
                    self.send(msg, request_id, timeout=deadlines.accept)
                except errors.ServiceUnavailable:
                    if attempt == 0:
                        raise
                    break   # a peer that took the first try but no longer answers at all
                accepted = self._await(request_id, deadlines.accept, client_gone)
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
