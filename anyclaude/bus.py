"""ZeroMQ service side: the ROUTER loop every service runs (dispatch, heartbeats, readiness,
thread-safe replies).

Endpoints, sockets and the client live in ``anyclaude.bus_client`` and are re-exported
here, so ``bus.Client``, ``bus.Deadlines``, ``bus.endpoint``, ``bus.run_dir`` ... keep working;
so are ``bus.ThreadClients`` and ``bus.Workers`` (anyclaude.bus_workers: per-thread clients
and the worker pool for handlers that block).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import structlog
import zmq

from anyclaude import errors, messages
from anyclaude.bus_client import (HWM, POLL_MS, Client, Deadlines, endpoint, make_socket,
                                  new_request_id, run_dir, socket_path)
from anyclaude.bus_workers import ThreadClients, Workers, error_reply
from anyclaude.messages import Message

__all__ = ["HWM", "POLL_MS", "Call", "Client", "Deadlines", "Handler", "Service",
           "ThreadClients", "Workers", "endpoint", "error_reply", "make_socket",
           "new_request_id", "run_dir", "socket_path"]

log = structlog.get_logger()


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
                 info: Callable[[], dict] | None = None, heartbeat_interval: float = 1.0,
                 fallback: Handler | None = None, supervised: bool = True,
                 on_tick: Callable[[], None] | None = None, tick_s: float = POLL_MS / 1000):
        """``fallback`` answers the kinds no handler takes (default: Commands get ping/info,
        anything else a bad_frame Error). ``supervised=False`` (the supervisor's own control
        socket) neither heartbeats nor announces ready. ``on_tick`` runs in the loop thread
        before every poll, which waits at most ``tick_s``; it may call ``stop()``."""
        self.name = name
        self.handlers = {cls.kind: fn for cls, fn in handlers.items()}
        self.fallback = fallback
        self.info = info or dict
        self.heartbeat_interval = heartbeat_interval
        self.supervised = supervised
        self.on_tick = on_tick
        self.tick_ms = max(1, int(tick_s * 1000))
        self.state = "starting"
        self.ctx = zmq.Context.instance()
        self._outbox_address = f"inproc://outbox-{name}-{id(self)}"
        self._local = threading.local()
        self._loop_thread: int | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._ready_sent = False
        self._calls: dict[bytes, Call] = {}  # peer+request_id -> Call, for marking gone
        self._watched: dict[zmq.Socket, Callable[[zmq.Socket], None]] = {}
        self.seq = 0

    # -- public --
    def mark_ready(self) -> None:
        self._ready.set()

    def stop(self) -> None:
        self._stop.set()

    def watch(self, sock: zmq.Socket, reader: Callable[[zmq.Socket], None]) -> None:
        """Poll ``sock`` in the loop too; ``reader(sock)`` runs in the loop thread when it
        is readable (the supervisor's events SUB). Call before ``run``; the caller closes it."""
        self._watched[sock] = reader

    def run(self, *, ready: bool = True) -> None:
        if ready:
            self._ready.set()
        self._loop_thread = threading.get_ident()
        path = socket_path(self.name)
        if path.exists():
            path.unlink()  # stale socket of a dead predecessor
        router = make_socket(self.ctx, zmq.ROUTER)
        router.bind(endpoint(self.name))
        outbox = make_socket(self.ctx, zmq.PULL)
        outbox.bind(self._outbox_address)
        pub = None
        if self.supervised:
            pub = make_socket(self.ctx, zmq.PUB)
            pub.connect(endpoint("events"))
        self._router = router
        readers = {router: self._drain_router, outbox: self._drain_outbox, **self._watched}
        log.info("bus.service.listening", service=self.name, endpoint=endpoint(self.name))
        try:
            self._loop(readers, pub)
        finally:
            self.state = "stopping"
            for sock in (router, outbox, pub):
                if sock is not None:
                    sock.close(0)
            if path.exists():
                path.unlink()
            log.info("bus.service.stopped", service=self.name)

    def _loop(self, readers: dict, pub: zmq.Socket | None) -> None:
        poller = zmq.Poller()
        for sock in readers:
            poller.register(sock, zmq.POLLIN)
        next_beat = 0.0
        while True:
            if self.on_tick is not None:
                self.on_tick()
            if self._stop.is_set():
                return
            timeout = self.tick_ms
            if pub is not None:
                now = time.monotonic()
                if self._ready.is_set() and not self._ready_sent:
                    self.state = "ready"
                    self._ready_sent = True
                    self._announce_ready()
                if now >= next_beat:
                    self._heartbeat(pub)
                    next_beat = now + self.heartbeat_interval
                timeout = max(0, min(timeout, int((next_beat - now) * 1000)))
            for sock, _ in poller.poll(timeout):
                readers[sock](sock)

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
        handler = self.handlers.get(msg.kind, self.fallback)
        call = Call(self, peer, request_id, msg)
        if handler is None:
            if isinstance(msg, messages.Command):
                return self.builtin_command(call)
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

    def builtin_command(self, call: Call) -> None:
        """ping and info, and the unknown-command reply (for a handler of its own Commands)."""
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
