"""Optional trace files (``models.<id>.trace_dir``): one JSON-lines file per exchange with an
upstream, holding the request (URL, headers, body), every response line and the outcome.

Keys never reach the file: the authorization, x-api-key and api-key headers are replaced by
"[redacted]", and any occurrence of the key's value anywhere in a line is replaced too.
Files are created 0600 in a 0700 directory.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import structlog

log = structlog.get_logger()

REDACTED = "[redacted]"
_SECRET_HEADERS = {"authorization", "x-api-key", "api-key", "proxy-authorization"}


class Trace:
    def __init__(self, path: Path, secrets: list[str]):
        self.path = path
        self.secrets = [s for s in secrets if s and len(s) >= 4]
        self._fh = None
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._fh = os.fdopen(fd, "a", encoding="utf-8")
        except OSError as exc:
            log.warning("engine.trace_unwritable", path=str(path), error=exc.strerror)

    @classmethod
    def open(cls, trace_dir: str, model_id: str, secrets: list[str]) -> "Trace | None":
        if not trace_dir:
            return None
        folder = Path(trace_dir).expanduser()
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("engine.trace_unwritable", path=str(folder), error=exc.strerror)
            return None
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{model_id}-{uuid.uuid4().hex[:8]}.jsonl"
        return cls(folder / name, secrets)

    def write(self, kind: str, **fields) -> None:
        if self._fh is None:
            return
        text = json.dumps({"t": round(time.time(), 3), "kind": kind, **fields}, ensure_ascii=False,
                          default=str)
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        self._fh.write(text + "\n")
        self._fh.flush()

    def request(self, url: str, headers: dict, body: bytes) -> None:
        shown = {k: (REDACTED if k.lower() in _SECRET_HEADERS else v) for k, v in headers.items()}
        try:
            payload = json.loads(body)
        except ValueError:
            payload = body.decode("utf-8", "replace")
        self.write("request", url=url, headers=shown, body=payload)

    def close(self, **outcome) -> None:
        if self._fh is None:
            return
        self.write("end", **outcome)
        self._fh.close()
        self._fh = None
