"""The engine's side of the kvstore: lookups on the caller's thread, writes on a thread of
their own so the generation thread never waits for the disk.

    client = KVStoreClient(settings.kv_dir)
    client.lookup(fingerprint, block_hashes) -> (path, tokens) | None
    client.put_async(PutJob(...))     write <kv_dir>/spool/<tmp>, fsync, then CachePut
    client.report_bad(path, reason)   the store quarantines a file that failed to load
    client.recent(fingerprint, max_bytes) -> (path, tokens) | None   what to preload at start

Any failure is a miss or a skipped write, never an error for the request. A failed write
(disk full, I/O error) removes its partial file, tells the store (which reports
``degraded``) and turns disk writes off for ``retry_after`` seconds: memory-only.
"""

from __future__ import annotations

import errno
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from anyclaude import bus, errors
from anyclaude.messages import CacheHit, CacheLookup, CachePut, Command, Reply

from anyclaude import kvfiles as files

log = structlog.get_logger()


@dataclass
class PutJob:
    fingerprint: str
    hashes: list            # the chain of the full blocks written, shortest first
    block_tokens: int
    layers: list            # [(keys, values)], evaluated, exactly ``tokens`` long
    dtype: str              # the model's KV dtype, restored on load
    pinned: bool = False
    on_stored: Callable[["PutJob"], None] | None = None
    ids: object = None      # the token ids written (then the file may end inside a block);
                            # None: exactly the full blocks

    @property
    def tokens(self) -> int:
        return len(self.ids) if self.ids is not None else len(self.hashes) * self.block_tokens


class KVStoreClient:
    def __init__(self, kv_dir: str | os.PathLike, *, name: str = "kvstore", timeout: float = 1.0,
                 retry_after: float = 30.0, down_for: float = 5.0, max_pending: int = 4,
                 opener=open):
        self.spool = Path(kv_dir) / "spool"
        self.name, self.timeout = name, timeout
        self.retry_after, self.down_for, self.max_pending = retry_after, down_for, max_pending
        self.opener = opener                     # tests inject a failing one (disk full)
        self.counts = dict(lookups=0, writes=0, write_errors=0, rejected=0, skipped=0, dropped=0)
        self._clients = bus.ThreadClients()
        self._cond = threading.Condition()
        self._pending: list[PutJob] = []
        self._busy = False
        self._closed = False
        self._writer: threading.Thread | None = None
        self._down_until = 0.0
        self._paused_until = 0.0

    # -- caller's thread --------------------------------------------------------------------
    def _client(self) -> bus.Client:
        return self._clients.client(self.name)

    def _request(self, msg, client: bus.Client | None = None):
        """One request; None (and a few seconds of not asking) when the store is away."""
        if time.monotonic() < self._down_until:
            return None
        try:
            return (client or self._client()).request(msg, timeout=self.timeout)
        except errors.AnyclaudeError as exc:
            self._down_until = time.monotonic() + self.down_for
            log.info("engine.kvstore.unavailable", kind=msg.kind, error=exc.message)
            return None

    def lookup(self, fingerprint: str, block_hashes: list) -> tuple[str, int] | None:
        if not block_hashes:
            return None
        self.counts["lookups"] += 1
        reply = self._request(CacheLookup(fingerprint, list(block_hashes)))
        if isinstance(reply, CacheHit) and reply.path and reply.tokens > 0:
            return reply.path, reply.tokens
        return None

    def recent(self, fingerprint: str, max_bytes: int) -> tuple[str, int] | None:
        """The most recently used file of this model no bigger than ``max_bytes``."""
        reply = self._request(Command("recent", {"fingerprint": fingerprint,
                                                 "max_bytes": int(max_bytes)}))
        if isinstance(reply, Reply) and reply.ok and reply.data.get("path"):
            return str(reply.data["path"]), int(reply.data.get("tokens") or 0)
        return None

    def report_bad(self, path: str, reason: str) -> None:
        self._request(Command("quarantine", {"path": path, "reason": reason}))

    def put_async(self, job: PutJob) -> bool:
        """Queue a write; a newer job for a longer prefix replaces a queued shorter one."""
        if time.monotonic() < self._paused_until:
            self.counts["skipped"] += 1
            return False
        with self._cond:
            if self._closed:
                return False
            superseded = set(job.hashes)
            kept = [j for j in self._pending if j.pinned or j.hashes[-1] not in superseded]
            self.counts["dropped"] += len(self._pending) - len(kept)
            if len(kept) >= self.max_pending:
                kept.pop(0)
                self.counts["dropped"] += 1
            self._pending = [*kept, job]
            if self._writer is None:
                self._writer = threading.Thread(target=self._run, name="kv-writer", daemon=True)
                self._writer.start()
            self._cond.notify_all()
        return True

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued write is done (tests, benchmarks, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()
        self._clients.close_this_thread()

    def stats(self) -> dict:
        with self._cond:
            pending = len(self._pending) + int(self._busy)
        return {**self.counts, "pending": pending,
                "memory_only": time.monotonic() < self._paused_until}

    # -- writer thread ----------------------------------------------------------------------
    def _run(self) -> None:
        client = bus.Client(self.name)
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        return
                    job = self._pending.pop(0)
                    self._busy = True
                try:
                    self._write(job, client)
                except Exception:
                    log.exception("engine.kvstore.writer_failed")
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()
        finally:
            client.close()

    def _write(self, job: PutJob, client: bus.Client) -> None:
        if time.monotonic() < self._paused_until:
            self.counts["skipped"] += 1
            return
        tmp = self.spool / f"{job.hashes[-1]}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        meta = {"fingerprint": job.fingerprint, "tokens": job.tokens,
                "block_tokens": job.block_tokens, "block_hashes": ",".join(job.hashes),
                "dtype": job.dtype}
        if job.ids is not None:
            meta["token_ids"] = files.encode_ids(job.ids)
        started = time.monotonic()
        try:
            self.spool.mkdir(parents=True, exist_ok=True)
            size = files.write_cache_file(tmp, job.layers, meta, opener=self.opener)
        except OSError as exc:
            self.counts["write_errors"] += 1
            self._paused_until = time.monotonic() + self.retry_after
            what = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
            log.warning("engine.kvstore.write_failed", error=what, tokens=job.tokens,
                        memory_only_s=self.retry_after)
            self._request(Command("write_failed", {"error": f"cache write failed: {what}"}),
                          client)
            return
        finally:
            job.layers = []          # let the KV arrays go as soon as they are on disk
        reply = self._request(CachePut(job.fingerprint, job.hashes[-1], job.tokens, str(tmp),
                                       job.pinned), client)
        if isinstance(reply, Reply) and reply.ok:
            self.counts["writes"] += 1
            log.info("engine.kvstore.stored", tokens=job.tokens, bytes=size, pinned=job.pinned,
                     seconds=round(time.monotonic() - started, 3))
            if job.on_stored is not None:
                job.on_stored(job)
            return
        self.counts["rejected"] += 1
        tmp.unlink(missing_ok=True)
        log.info("engine.kvstore.put_refused", tokens=job.tokens,
                 error=reply.error if isinstance(reply, Reply) else "store unavailable")
