"""A fake Hugging Face hub on loopback, for HF_ENDPOINT: the real hub is not reachable here.

It serves what huggingface_hub 2.x asks for in snapshot_download: the repo info
(``/api/models/<repo>/revision/<rev>``), the file tree (``/api/models/<repo>/tree/<rev>``),
and files at ``/<repo>/resolve/<rev>/<file>`` (HEAD with X-Repo-Commit / ETag /
Content-Length; GET with Range). An unknown repo is a 404 with ``X-Error-Code:
RepoNotFound``, as the real hub answers.

Faults, per server: ``pace_s`` sleeps between 64 KB chunks (so progress can be watched);
``cut_after`` closes the connection when a GET body reaches that offset of a longer file,
for the first ``cuts`` such GETs (then it serves; ``cuts=None`` cuts every GET).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 64 * 1024


class FakeHub:
    def __init__(self, repos: dict[str, dict[str, bytes]], *, pace_s: float = 0.0,
                 cut_after: int | None = None, cuts: int | None = 1):
        self.repos = repos
        self.commits = {repo: hashlib.sha1(repo.encode()).hexdigest() for repo in repos}
        self.pace_s, self.cut_after, self.cuts = pace_s, cut_after, cuts
        self.gets: list[tuple[str, str | None]] = []     # (path, Range header)
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.hub = self
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _take_cut(self, size: int) -> int | None:
        with self.lock:
            if self.cut_after is None or size <= self.cut_after:
                return None
            if self.cuts is None:
                return self.cut_after
            if self.cuts > 0:
                self.cuts -= 1
                return self.cut_after
            return None


class _Handler(BaseHTTPRequestHandler):
    """One request to the fake hub; ``self.server.hub`` is the FakeHub."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self._serve(body=True)

    def do_HEAD(self):
        self._serve(body=False)

    def _serve(self, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        api = re.match(r"^/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)", path)
        if api:
            return self._api(*api.groups())
        resolve = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if resolve:
            return self._file(*resolve.groups(), body=body)
        self._json(404, {"error": "not found"})

    def _not_found(self, repo: str) -> None:
        self._json(404, {"error": "Repository not found"},
                   {"X-Error-Code": "RepoNotFound",
                    "X-Error-Message": "Repository not found"})

    def _api(self, repo: str, what: str, revision: str) -> None:
        files = self.server.hub.repos.get(repo)
        if files is None:
            return self._not_found(repo)
        sha = self.server.hub.commits[repo]
        if what == "revision":
            return self._json(200, {"id": repo, "modelId": repo, "sha": sha,
                                    "private": False, "gated": False, "tags": [],
                                    "siblings": [{"rfilename": n} for n in files]})
        self._json(200, [{"type": "file", "path": name, "size": len(data),
                          "oid": hashlib.sha1(data).hexdigest()}
                         for name, data in files.items()])

    def _file(self, repo: str, revision: str, name: str, body: bool) -> None:
        files = self.server.hub.repos.get(repo)
        if files is None:
            return self._not_found(repo)
        data = files.get(name)
        if data is None:
            return self._json(404, {"error": "Entry not found"},
                              {"X-Error-Code": "EntryNotFound"})
        start, status = 0, 200
        wanted = self.headers.get("Range")
        if body:
            with self.server.hub.lock:
                self.server.hub.gets.append((name, wanted))
        match = re.match(r"bytes=(\d+)-", wanted or "")
        if match:
            start, status = int(match.group(1)), 206
        self.send_response(status)
        self.send_header("X-Repo-Commit", self.server.hub.commits[repo])
        self.send_header("ETag", '"' + hashlib.sha1(data).hexdigest() + '"')
        self.send_header("Content-Length", str(len(data) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if body:
            self._body(data, start)

    def _body(self, whole: bytes, start: int) -> None:
        cut = self.server.hub._take_cut(len(whole))       # an offset in the whole file
        if cut is not None:
            cut -= start
        data = whole[start:]
        sent = 0
        while sent < len(data):
            piece = data[sent:sent + CHUNK]
            if cut is not None and 0 <= cut < sent + len(piece):
                self.wfile.write(piece[:max(0, cut - sent)])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(piece)
            sent += len(piece)
            if self.server.hub.pace_s:
                time.sleep(self.server.hub.pace_s)

    def _json(self, status: int, value, headers: dict | None = None) -> None:
        raw = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for key, val in (headers or {}).items():
            self.send_header(key, val)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)
