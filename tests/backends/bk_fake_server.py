"""A scriptable upstream on 127.0.0.1 (a real threading HTTP server) for the backend tests.

Each POST takes the next scripted Reply (or the default one); every request is recorded
with its path, headers and JSON body. A Reply streams its pieces with an optional pause
between them, and notes when the client hung up while it was still sending.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    status: int = 200
    pieces: list = field(default_factory=list)      # bytes sent one after another
    headers: dict = field(default_factory=dict)
    pause: float = 0.0                              # seconds between pieces
    content_type: str = "text/event-stream"
    chunked: bool = False                           # Transfer-Encoding: chunked (uvicorn, vLLM)


@dataclass
class Seen:
    path: str
    headers: dict
    body: dict


def openai_sse(*chunks: dict, done: bool = True) -> list[bytes]:
    out = [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks]
    return out + ([b"data: [DONE]\n\n"] if done else [])


def anthropic_sse(*events: dict) -> list[bytes]:
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]


def delta(**fields) -> dict:
    """One chat.completion.chunk with a delta (finish_reason=... and usage=... allowed)."""
    finish = fields.pop("finish_reason", None)
    usage = fields.pop("usage", None)
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m",
             "choices": [{"index": 0, "delta": fields, "finish_reason": finish}]}
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def usage_chunk(prompt: int, completion: int, cached: int | None = None) -> dict:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion,
             "total_tokens": prompt + completion}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": usage}


def json_reply(status: int, payload, headers: dict | None = None) -> Reply:
    return Reply(status=status, pieces=[json.dumps(payload).encode()], headers=headers or {},
                 content_type="application/json")


class FakeUpstream:
    def __init__(self):
        self.script: list[Reply] = []
        self.default = Reply(pieces=openai_sse(delta(content="ok", finish_reason="stop"),
                                               usage_chunk(10, 1)))
        self.routes: dict = {}                    # path -> a Reply, or body -> Reply (/tokenize)
        self.seen: list[Seen] = []
        self.hangups = 0                          # replies cut short by the client
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"_raw": raw.decode("utf-8", "replace")}
                with fake.lock:
                    fake.seen.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    reply = (fake.routes.get(self.path)
                             or (fake.script.pop(0) if fake.script else fake.default))
                fake.answer(self, reply(body) if callable(reply) else reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def answer(self, handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        handler.send_response(reply.status)
        handler.send_header("content-type", reply.content_type)
        for key, value in reply.headers.items():
            handler.send_header(key, value)
        if reply.chunked:
            handler.send_header("transfer-encoding", "chunked")
        else:
            handler.send_header("connection", "close")
        handler.end_headers()
        try:
            for i, piece in enumerate(reply.pieces):
                if i and reply.pause:
                    time.sleep(reply.pause)
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if reply.chunked else piece)
                handler.wfile.flush()
            if reply.chunked:
                handler.wfile.write(b"0\r\n\r\n")
        except OSError:
            with self.lock:
                self.hangups += 1
        handler.close_connection = True

    def push(self, *replies: Reply) -> None:
        with self.lock:
            self.script.extend(replies)

    def requests(self, path_suffix: str = "") -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.path.endswith(path_suffix)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
