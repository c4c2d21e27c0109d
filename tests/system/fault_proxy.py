"""An HTTP proxy in front of a real upstream that can break one generation on purpose.

Everything passes through unchanged (counts, templates, health) except a generation request
(``/v1/chat/completions`` or ``/v1/messages``) while a fault is armed:

    proxy.fail_next(500)        the next generation is answered HTTP 500 with an error body
    proxy.cut_next(after=400)   the next generation's stream is cut after 400 body bytes

Each fault fires once. The real server still does the real work for a cut stream.
"""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

GENERATION_PATHS = ("/v1/chat/completions", "/v1/messages")


class FaultProxy:
    def __init__(self, upstream_url: str):
        target = urlsplit(upstream_url)
        self.host, self.port_up = target.hostname, target.port
        self.lock = threading.Lock()
        self.fault: tuple[str, int] | None = None
        self.fired: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                proxy.forward(self, None)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                proxy.forward(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def fail_next(self, status: int) -> None:
        with self.lock:
            self.fault = ("status", status)

    def cut_next(self, after: int) -> None:
        with self.lock:
            self.fault = ("cut", after)

    def _take_fault(self, path: str) -> tuple[str, int] | None:
        if not path.startswith(GENERATION_PATHS) or path.endswith("count_tokens"):
            return None
        with self.lock:
            fault, self.fault = self.fault, None
            if fault:
                self.fired.append(f"{fault[0]}:{fault[1]} {path}")
            return fault

    def forward(self, handler: BaseHTTPRequestHandler, body: bytes | None) -> None:
        fault = self._take_fault(handler.path)
        if fault and fault[0] == "status":
            payload = json.dumps({"error": {"message": f"injected HTTP {fault[1]}",
                                            "type": "server_error"}}).encode()
            handler.send_response(fault[1])
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
            return
        conn = http.client.HTTPConnection(self.host, self.port_up, timeout=300)
        headers = {k: v for k, v in handler.headers.items()
                   if k.lower() not in ("host", "connection", "content-length")}
        conn.request(handler.command, handler.path, body=body, headers=headers)
        reply = conn.getresponse()
        handler.send_response(reply.status)
        for key, value in reply.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                handler.send_header(key, value)
        handler.send_header("transfer-encoding", "chunked")
        handler.send_header("connection", "close")
        handler.end_headers()
        budget = fault[1] if fault else None
        try:
            while True:
                piece = reply.read1(4096)
                if not piece:
                    handler.wfile.write(b"0\r\n\r\n")
                    break
                if budget is not None:
                    piece = piece[:budget]
                    budget -= len(piece)
                if piece:
                    handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                handler.wfile.flush()
                if budget == 0:
                    break   # the cut: no last chunk, the connection closes mid-stream
        except OSError:
            pass
        finally:
            conn.close()
            handler.close_connection = True

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
