"""The HTTP client for one SearXNG instance: ``GET {url}/search?q=…&format=json``.

Only the configured URL is ever contacted (redirects are not followed). Time is bounded
twice: a connect timeout and a total deadline for the whole exchange (a watchdog closes the
socket when it passes, so a server trickling bytes cannot stretch it); ``timeout_limit`` is
sent so SearXNG itself gives up on slow engines before our deadline.

Failures raise :class:`Failure` with the web_search error code the client should see:
403 (json not enabled) and anything that is not a JSON object -> unavailable,
429 (limiter) -> too_many_requests, other statuses, refused, reset or timed out -> unavailable.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from urllib.parse import urlencode, urlsplit

MAX_BODY_BYTES = 16 * 1024 * 1024
USER_AGENT = "anyclaude-websearch/0.1"

JSON_HINT = ("SearXNG refuses JSON (HTTP 403): add json to search.formats in its settings.yml "
             "(search: formats: [html, json]) and restart it")
LIMITER_HINT = ("SearXNG's limiter refused us (HTTP 429): in limiter.toml add "
                "[botdetection.ip_lists] pass_ip = ['127.0.0.1'] (our address), or turn "
                "server.limiter off")


class Failure(Exception):
    """``code`` is a web_search error code; ``hint`` is for the log, not the client;
    ``reached`` says whether SearXNG was reachable (None: cannot tell, e.g. a timeout)."""

    def __init__(self, code: str, message: str, hint: str = "", reached: bool | None = True):
        super().__init__(message)
        self.code, self.message, self.hint, self.reached = code, message, hint, reached


def check_url(url: str) -> str:
    """The base URL, or ValueError saying what is wrong with it."""
    try:
        parts = urlsplit(url)
        parts.port  # ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"searxng_url {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"searxng_url {url!r} is not an http(s) URL with a host")
    if parts.query or parts.fragment:
        raise ValueError(f"searxng_url {url!r} must not carry a query or fragment")
    return url


def request_target(base_url: str, query: str, timeout_limit: float) -> str:
    path = urlsplit(base_url).path.rstrip("/") + "/search"
    params = urlencode({"q": query, "format": "json", "timeout_limit": f"{timeout_limit:g}"})
    return f"{path}?{params}"


def timeout_limit_for(timeout_s: float) -> float:
    """What SearXNG may spend on engines: most of our deadline, leaving room to answer."""
    return round(max(0.1, min(timeout_s - 0.5, timeout_s * 0.8)), 2)


def search(base_url: str, query: str, *, timeout_s: float, connect_timeout_s: float = 3.0,
           max_body_bytes: int = MAX_BODY_BYTES) -> dict:
    """One search; the parsed JSON object SearXNG returned, or raises Failure."""
    parts = urlsplit(base_url)
    where = parts.netloc.rsplit("@", 1)[-1]  # never echo credentials
    deadline = time.monotonic() + timeout_s
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=min(connect_timeout_s, timeout_s))
    target = request_target(base_url, query, timeout_limit_for(timeout_s))
    watchdog = None
    try:
        conn.connect()
        sock = conn.sock  # the response reads through this same socket object
        watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), _shut, [sock])
        watchdog.daemon = True
        watchdog.start()
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        conn.request("GET", target, headers={"Accept": "application/json",
                                             "User-Agent": USER_AGENT})
        response = conn.getresponse()
        body = _read_body(response, sock, deadline, max_body_bytes)
    except Failure:
        raise
    except (socket.timeout, TimeoutError):
        raise _timed_out(timeout_s) from None
    except ConnectionRefusedError:
        raise Failure("unavailable", f"SearXNG at {where} refused the connection "
                      "(is it running?)", reached=False) from None
    except (OSError, http.client.HTTPException) as exc:
        if time.monotonic() >= deadline:
            raise _timed_out(timeout_s) from None
        raise Failure("unavailable", f"SearXNG at {where} failed: "
                      f"{exc.__class__.__name__}: {exc}", reached=False) from None
    finally:
        if watchdog is not None:
            watchdog.cancel()
        conn.close()
    return _interpret(response.status, body)


def _timed_out(timeout_s: float) -> Failure:
    return Failure("unavailable", f"SearXNG did not answer within {timeout_s:g} s", reached=None)


def _shut(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _read_body(response: http.client.HTTPResponse, sock: socket.socket, deadline: float,
               limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        chunk = response.read1(65536)
        if not chunk:
            if time.monotonic() >= deadline:
                raise TimeoutError  # the watchdog cut the connection
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise Failure("unavailable", f"SearXNG's answer is larger than {limit} bytes")
        chunks.append(chunk)


def _interpret(status: int, body: bytes) -> dict:
    if status == 403:
        raise Failure("unavailable", "SearXNG refused JSON output (HTTP 403); its settings.yml "
                      "must list json in search.formats", hint=JSON_HINT)
    if status == 429:
        raise Failure("too_many_requests", "SearXNG's rate limiter refused the search (HTTP 429)",
                      hint=LIMITER_HINT)
    data = None
    try:
        data = json.loads(body)
    except ValueError:  # also UnicodeDecodeError
        pass
    if status != 200:
        detail = data.get("error") if isinstance(data, dict) else None
        detail = f": {str(detail)[:200]}" if detail else ""
        raise Failure("unavailable", f"SearXNG answered HTTP {status}{detail}")
    if not isinstance(data, dict):
        raise Failure("unavailable", "SearXNG answered HTTP 200 with something that is not a "
                      "JSON object (is json in search.formats?)")
    return data
