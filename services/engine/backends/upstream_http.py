"""HTTP to an upstream server: one POST, its response read line by line, cancellable.

Stdlib ``http.client`` only. Redirects are never followed, so nothing but the configured
base URL is ever contacted. A helper thread does all the blocking I/O (connect, send, read)
and hands the status line and then each response line to the caller through a queue; the
caller (the engine's generation thread) waits on that queue in short slices, so it notices
a cancel at once and can send keepalives while the upstream is silent (a long prefill).
``close()`` shuts the socket down, which ends the helper's blocking read immediately and
tells the upstream to stop generating.
"""

from __future__ import annotations

import http.client
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from anyclaude import errors

CONNECT_TIMEOUT_S = 10.0
MAX_ERROR_BODY = 256 * 1024
MAX_BODY = 64 * 1024 * 1024


@dataclass(frozen=True)
class Upstream:
    url: str            # as configured, without a trailing slash
    https: bool
    host: str
    port: int
    path: str           # base path without a trailing slash ("" or "/v1" or "/api/v1")

    def target(self, suffix: str) -> str:
        """The request path for ``suffix``, e.g. "/chat/completions" under the base path."""
        return (self.path + suffix) or "/"


def parse_base_url(url: str, where: str) -> Upstream:
    """A configured base URL, checked; ConfigError names ``where`` (e.g. models.x.base_url)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.ConfigError(f"{where} = {url!r}: expected an http:// or https:// URL "
                                 "such as http://127.0.0.1:8080/v1")
    if parts.query or parts.fragment or parts.username:
        raise errors.ConfigError(f"{where} = {url!r}: a base URL takes no query, fragment "
                                 "or credentials (put the key in the api_key_env variable)")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise errors.ConfigError(f"{where} = {url!r}: the port is not a number") from None
    return Upstream(url=url.strip().rstrip("/"), https=parts.scheme == "https",
                    host=parts.hostname, port=port, path=parts.path.rstrip("/"))


class UpstreamUnreachable(Exception):
    """Connecting or talking to the upstream failed (refused, reset, timed out)."""


_HEAD, _LINE, _END, _FAIL = "head", "line", "end", "fail"


class Exchange:
    """One POST; ``status``/``headers`` once ``wait_head`` returns, then ``lines()``."""

    def __init__(self, upstream: Upstream, path: str, body: bytes, headers: dict, *,
                 read_timeout: float = 600.0, connect_timeout: float = CONNECT_TIMEOUT_S):
        self.upstream, self.path, self.body = upstream, path, body
        self.headers = {"content-type": "application/json", "accept": "text/event-stream",
                        **headers, "content-length": str(len(body))}
        self.read_timeout, self.connect_timeout = read_timeout, connect_timeout
        self.status = 0
        self.response_headers: dict[str, str] = {}
        self._items: queue.Queue = queue.Queue()
        self._sock: socket.socket | None = None
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._io, name="upstream-io", daemon=True)
        self._thread.start()

    # -- the helper thread: all blocking I/O happens here --
    def _io(self) -> None:
        cls = http.client.HTTPSConnection if self.upstream.https else http.client.HTTPConnection
        conn = cls(self.upstream.host, self.upstream.port, timeout=self.connect_timeout)
        response = None
        try:
            conn.connect()
            # Kept here: http.client drops conn.sock once a response says "connection: close".
            with self._lock:
                self._sock = conn.sock
            if self._closed.is_set():
                raise UpstreamUnreachable("closed")
            conn.sock.settimeout(self.read_timeout)
            conn.request("POST", self.path, body=self.body, headers=self.headers)
            response = conn.getresponse()
            self._items.put((_HEAD, response.status, {k.lower(): v for k, v in response.getheaders()}))
            while True:
                line = response.readline()
                if not line:
                    break
                self._items.put((_LINE, line))
            self._items.put((_END, None))
        except (OSError, http.client.HTTPException, UpstreamUnreachable) as exc:
            self._items.put((_FAIL, exc))
        finally:
            if response is not None:
                response.close()   # it holds the socket open too
            conn.close()
            with self._lock:
                if self._sock is not None:
                    self._sock.close()

    # -- the caller's side --
    def close(self) -> None:
        """Stop the exchange: the helper's read ends now, the upstream sees a disconnect."""
        self._closed.set()
        with self._lock:
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _next(self, cancelled: Callable[[], bool], idle: Callable[[float], None] | None,
              idle_every: float):
        waited_since = time.monotonic()
        last_idle = waited_since
        while True:
            if cancelled():
                self.close()
                raise errors.Cancelled("request cancelled")
            try:
                return self._items.get(timeout=0.1)
            except queue.Empty:
                now = time.monotonic()
                if idle is not None and now - last_idle >= idle_every:
                    last_idle = now
                    idle(now - waited_since)

    def wait_head(self, cancelled: Callable[[], bool], idle: Callable[[float], None] | None = None,
                  idle_every: float = 5.0) -> int:
        kind, value, *rest = self._next(cancelled, idle, idle_every)
        if kind == _FAIL:
            raise UpstreamUnreachable(_describe(value, self.upstream))
        self.status, self.response_headers = value, rest[0]
        return self.status

    def lines(self, cancelled: Callable[[], bool], idle: Callable[[float], None] | None = None,
              idle_every: float = 5.0) -> Iterator[bytes]:
        """Response lines until the end; raises UpstreamUnreachable if the stream breaks."""
        while True:
            kind, value = self._next(cancelled, idle, idle_every)
            if kind == _END:
                return
            if kind == _FAIL:
                raise UpstreamUnreachable(_describe(value, self.upstream))
            yield value

    def read_body(self, cancelled: Callable[[], bool], limit: int = MAX_ERROR_BODY) -> bytes:
        """The rest of the response (up to ``limit`` bytes), for error statuses and plain
        JSON answers."""
        out = bytearray()
        try:
            for line in self.lines(cancelled):
                if len(out) < limit:
                    out += line
        except UpstreamUnreachable:
            pass  # keep what arrived: an error body cut short is still worth showing
        return bytes(out)


def _describe(exc: BaseException, upstream: Upstream) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return f"{upstream.url} refused the connection (is the server running?)"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"{upstream.url} did not answer in time"
    if isinstance(exc, socket.gaierror):
        return f"{upstream.url}: cannot resolve host {upstream.host!r}"
    text = str(exc) or exc.__class__.__name__
    return f"{upstream.url}: {text}"


class SSEReader:
    """Server-sent events from response lines: ``feed(line)`` -> complete (event, data)
    pairs. Comment lines come back as ("comment", text) (mlx_lm.server's keepalives)."""

    def __init__(self):
        self._event = ""
        self._data: list[str] = []

    def feed(self, raw: bytes) -> list[tuple[str, str]]:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return [("comment", line[1:].strip())]
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return []

    def finish(self) -> list[tuple[str, str]]:
        return self._dispatch()

    def _dispatch(self) -> list[tuple[str, str]]:
        if not self._data:
            self._event = ""
            return []
        out = [(self._event or "message", "\n".join(self._data))]
        self._event, self._data = "", []
        return out
