"""Test helpers: a fake SearXNG (a real HTTP server on 127.0.0.1) and the real service process.

The fake answers by query text: ``q=<shape>`` picks one of the shapes below, anything else
gets ``results``. Every request is recorded (path, query parameters, Host header).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from anyclaude import bus, errors, messages


def result(url, title="A page", content="Some snippet", published=None, **extra):
    return {"url": url, "title": title, "content": content, "engine": "ddg",
            "engines": ["ddg"], "score": 1.0, "category": "general",
            "publishedDate": published, **extra}


def page(results, unresponsive=()):
    return {"query": "q", "results": results, "answers": [], "corrections": [],
            "infoboxes": [], "suggestions": [], "unresponsive_engines": list(unresponsive)}


RESULTS = page([
    result("https://docs.python.org/3/", "Python <b>docs</b> &amp; more", "The official\n docs.",
           published="2024-05-01T12:00:00"),
    result("https://example.com/a", "Example A", "Alpha snippet"),
    result("http://other.org/b", "Other B", "Beta snippet", published=None),
])

SHAPES = {
    "results": (200, "application/json", RESULTS),
    "empty": (200, "application/json", page([])),
    "empty-unresponsive": (200, "application/json", page(
        [], [["google", "timeout"], ["bing", "Suspended: too many requests"]])),
    "nullurls-unresponsive": (200, "application/json", page(
        [result(None, "Answer")], [["wikidata", "timeout"]])),
    "forbidden": (403, "text/html", "<html><body><h1>Forbidden</h1></body></html>"),
    "limited": (429, "text/html", "<html><body>Too Many Requests</body></html>"),
    "error500": (500, "application/json", {"error": "search error"}),
    "nonjson": (200, "text/html", "<!DOCTYPE html><html><body>results</body></html>"),
    "jsonlist": (200, "application/json", [1, 2, 3]),
    "nullurls": (200, "application/json", page([
        result(None, "kv"), result("ftp://files.example.com/x"), result("javascript:alert(1)"),
        result("/relative/path"), result(""), result("https://"), result(42),
        result("https://good.example.net/page", "Good"),
    ])),
    "duplicates": (200, "application/json", page([
        result("https://example.com/doc", "First"), result("https://example.com/doc/", "Slash"),
        result("https://example.com/doc#part", "Fragment"), result("http://EXAMPLE.com/doc", "Case"),
        result("https://www.example.com/doc", "WWW"), result("https://example.com/doc?x=1", "Query"),
    ])),
    "huge": (200, "application/json", page([
        result("https://big.example.com/", "T" * 100_000, "x" * 1_000_000),
        result("https://big.example.com/2", "Second", "<p>" + "word " * 200_000 + "</p>"),
    ])),
    "dated": (200, "application/json", page([
        result("https://a.example.com/", published="2023-12-25T08:30:00+00:00"),
        result("https://b.example.com/", published=None),
        result("https://c.example.com/", published="not a date"),
        result("https://d.example.com/"),
    ])),
    "domains": (200, "application/json", page([
        result("https://example.com/1"), result("https://docs.example.com/2"),
        result("https://badexample.com/3"), result("https://example.com.evil.net/4"),
        result("https://other.org/5"), result("https://blog.other.org/6"),
    ])),
    "many": (200, "application/json", page(
        [result(f"https://many.example.com/{i}", f"R{i}") for i in range(40)])),
}


class FakeSearxng:
    def __init__(self, redirect_to: str = ""):
        self.requests: list[dict] = []
        self.redirect_to = redirect_to
        self.slow_s = 2.5
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                parts = urlsplit(self.path)
                params = {k: v[0] for k, v in parse_qs(parts.query).items()}
                fake.requests.append({"path": parts.path, "params": params,
                                      "host": self.headers.get("Host")})
                fake.answer(self, params.get("q", ""))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def queries(self, q=None) -> list[dict]:
        return [r for r in self.requests if q is None or r["params"].get("q") == q]

    def answer(self, handler, q: str) -> None:
        try:
            if q == "slow":
                time.sleep(self.slow_s)
                return self._send(handler, *SHAPES["results"])
            if q == "trickle":  # headers at once, then a valid body one byte at a time
                body = json.dumps(RESULTS).encode()
                handler.send_response(200)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                for i in range(0, len(body), max(1, len(body) // 30)):
                    handler.wfile.write(body[i:i + max(1, len(body) // 30)])
                    handler.wfile.flush()
                    time.sleep(0.1)
                return
            if q == "redirect":
                handler.send_response(302)
                handler.send_header("Location", f"{self.redirect_to}/search?q=redirected&format=json")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            self._send(handler, *SHAPES.get(q, SHAPES["results"]))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first, as it should

    @staticmethod
    def _send(handler, status, content_type, body) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    """``python -m anyclaude.services.websearch`` in its own run dir, with a bus client."""

    def __init__(self, url: str, timeout_s: float = 1.0):
        self.dir = tempfile.mkdtemp(prefix="ac", dir="/tmp")
        self.log_dir = Path(self.dir) / "logs"
        env = {**os.environ, "ANYCLAUDE_RUN_DIR": f"{self.dir}/r",
               "ANYCLAUDE_SEARCH_SEARXNG_URL": url,
               "ANYCLAUDE_SEARCH_TIMEOUT_S": str(timeout_s),
               "ANYCLAUDE_LOGGING_DIR": str(self.log_dir),
               "XDG_CONFIG_HOME": self.dir}
        env.pop("ANYCLAUDE_CONFIG", None)
        self.env = env
        self.proc = subprocess.Popen([sys.executable, "-m", "anyclaude.services.websearch"],
                                     env=env, cwd=self.dir, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        # bus.Client finds the endpoint through this variable (also when it resets)
        self.saved_run_dir = os.environ.get("ANYCLAUDE_RUN_DIR")
        os.environ["ANYCLAUDE_RUN_DIR"] = env["ANYCLAUDE_RUN_DIR"]
        self.client = bus.Client("websearch")
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read().decode()
            try:
                reply = self.client.request(messages.Command("ping"), timeout=0.5)
                if reply.ok:
                    return
            except errors.AnyclaudeError:
                self.client.reset()
        raise AssertionError("websearch service did not answer ping")

    def search(self, query, allowed=(), blocked=(), max_results=0) -> messages.Results:
        reply = self.client.request(
            messages.Search(query, list(allowed), list(blocked), max_results), timeout=10)
        assert isinstance(reply, messages.Results)
        return reply

    def info(self) -> dict:
        return self.client.request(messages.Command("info"), timeout=5).data

    def log_text(self) -> str:
        path = self.log_dir / "websearch.log"
        return path.read_text() if path.exists() else ""

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.saved_run_dir is None:
            os.environ.pop("ANYCLAUDE_RUN_DIR", None)
        else:
            os.environ["ANYCLAUDE_RUN_DIR"] = self.saved_run_dir
