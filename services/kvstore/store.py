"""The kvstore's files: adopt what the engine wrote, find prefixes, evict, quarantine.

Layout under ``kv_dir``::

    spool/                     the engine writes temp files here (same filesystem: rename)
    <fingerprint>/<hash>.safetensors   one file per stored prefix (see files.py)
    quarantine/                files that failed to parse or load, kept for a post-mortem
    pins.json                  {fingerprint: hash} of the pinned prefix of each model

Everything runs in the service loop thread: a put is a header read, a rename and a
directory fsync; a lookup is a dict walk. The index is rebuilt from file headers at start.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import structlog

from anyclaude.messages import CacheHit, CacheLookup, CachePut, Reply

from anyclaude.kvfiles import SUFFIX, CacheFileError, read_header
from anyclaude.services.kvstore.index import Entry, Index

log = structlog.get_logger()

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SPOOL_MAX_AGE_S = 3600.0      # older temp files are leftovers of a writer that died
KEEP_QUARANTINED = 16


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    def __init__(self, kv_dir: str | os.PathLike, budget_bytes: int, *, clock=time.time):
        self.dir = Path(kv_dir)
        self.spool = self.dir / "spool"
        self.quarantine_dir = self.dir / "quarantine"
        self.pins_file = self.dir / "pins.json"
        self.index = Index(budget_bytes)
        self.clock = clock
        self.counts = dict(hits=0, misses=0, puts=0, rejected=0, evicted=0, quarantined=0,
                           preloads=0)
        self.degraded = False
        self.last_error = ""
        self._spool_cleaned = 0.0

    # -- start ------------------------------------------------------------------------------
    def open(self) -> None:
        for d in (self.dir, self.spool, self.quarantine_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._clean_spool()
        started = time.monotonic()
        pins = self._read_pins()
        for sub in sorted(p for p in self.dir.iterdir() if p.is_dir()):
            if sub in (self.spool, self.quarantine_dir):
                continue
            for path in sorted(sub.glob("*" + SUFFIX)):
                self._index_file(path, pins)
        self._delete(self.index.over_budget(), "over_budget")
        log.info("kvstore.index_rebuilt", entries=len(self.index), bytes=self.index.bytes,
                 budget=self.index.budget, seconds=round(time.monotonic() - started, 3))

    def _index_file(self, path: Path, pins: dict) -> None:
        try:
            info = read_header(path)
            fp = info.meta["fingerprint"]
            if path.parent.name != fp or path.stem != info.hashes[-1]:
                raise CacheFileError(f"{path.name}: name does not match its metadata")
        except CacheFileError as exc:
            self._move_to_quarantine(path, str(exc))
            return
        entry = Entry(fp, info.hashes, info.tokens, info.size, str(path),
                      last_used=path.stat().st_mtime, pinned=pins.get(fp) == info.hashes[-1],
                      block=info.block_tokens)
        self._delete(self.index.add(entry), "superseded")

    # -- requests ---------------------------------------------------------------------------
    def lookup(self, msg: CacheLookup) -> CacheHit:
        hashes = [h for h in msg.block_hashes if isinstance(h, str)]
        while (found := self.index.lookup(msg.fingerprint, hashes)) is not None:
            entry, tokens = found
            try:
                os.utime(entry.path)      # the LRU order survives a restart
            except FileNotFoundError:     # removed behind our back
                self.index.remove(entry)
                continue
            except OSError:
                pass
            entry.last_used = self.clock()
            self.counts["hits"] += 1
            return CacheHit(path=entry.path, tokens=tokens,
                            block_hash=entry.hashes[tokens // entry.block_tokens - 1])
        self.counts["misses"] += 1
        return CacheHit()

    def put(self, msg: CachePut) -> Reply:
        src = Path(msg.path)
        if src.parent.resolve() != self.spool.resolve() or not src.is_file():
            return self._reject(None, f"{msg.path} is not a file in the spool {self.spool}")
        if not (_NAME.match(msg.fingerprint) and _NAME.match(msg.block_hash)):
            return self._reject(src, "fingerprint and block_hash must be short [A-Za-z0-9_-] names")
        try:
            info = read_header(src)
        except CacheFileError as exc:
            return self._reject(src, str(exc))
        claimed = (msg.fingerprint, msg.block_hash, msg.tokens)
        if (info.meta["fingerprint"], info.hashes[-1], info.tokens) != claimed:
            return self._reject(src, "the file's metadata does not match the put")
        if info.size > self.index.budget:
            return self._reject(src, f"{info.size} bytes is more than the whole budget "
                                     f"({self.index.budget} bytes)")
        dest = self.dir / msg.fingerprint / (msg.block_hash + SUFFIX)
        try:
            dest.parent.mkdir(exist_ok=True)
            os.replace(src, dest)
            fsync_dir(dest.parent)
            fsync_dir(self.dir)
        except OSError as exc:
            self._set_degraded(f"adopting {src.name}: {exc.strerror or exc}")
            return self._reject(src, self.last_error)
        entry = Entry(msg.fingerprint, info.hashes, info.tokens, info.size, str(dest),
                      last_used=self.clock(), pinned=msg.pinned, block=info.block_tokens)
        gone = self.index.add(entry)
        if msg.pinned:
            self.index.set_pin(msg.fingerprint, entry.key)
        gone += self.index.over_budget(protect=entry)
        self._delete([g for g in gone if g.path != entry.path], "superseded_or_evicted")
        self._save_pins()
        self.counts["puts"] += 1
        if self.degraded:
            log.info("kvstore.recovered", after=self.last_error)
        self.degraded, self.last_error = False, ""
        self._clean_spool()
        return Reply(True, {"path": str(dest), "removed": len(gone)})

    def write_failed(self, error: str) -> Reply:
        """The engine could not write a cache file (disk full, I/O error)."""
        self._set_degraded(error or "a cache write failed")
        return Reply(True, {"degraded": True})

    def quarantine(self, path: str, reason: str) -> Reply:
        """A file that failed to load on the engine side: move it away, forget it."""
        entry = next((e for e in self.index.entries.values() if e.path == path), None)
        if entry is None:
            return Reply(False, error=f"{path} is not a file of this store")
        self.index.remove(entry)
        self._move_to_quarantine(Path(path), reason or "reported by the engine")
        self._save_pins()
        return Reply(True, {"quarantined": path})

    def clear(self, fingerprint: str = "") -> Reply:
        victims = [e for e in self.index.entries.values()
                   if not fingerprint or e.fingerprint == fingerprint]
        freed = sum(e.size for e in victims)
        for e in victims:
            self.index.remove(e)
        self._delete(victims, "cleared")
        self._save_pins()
        return Reply(True, {"removed": len(victims), "bytes": freed})

    def recent(self, fingerprint: str, max_bytes: int) -> Reply:
        """The most recently used file of this model that fits ``max_bytes``: what a
        restarted engine loads first (a restart mid-session goes on with it). Files of the
        main session (those holding the pinned system+tools prefix) come first, so a side
        call that happened last does not win."""
        fits = [e for e in self.index.entries.values()
                if e.fingerprint == fingerprint and e.size <= max_bytes]
        if not fits:
            return Reply(True, {"path": "", "tokens": 0})
        pin = self.index.pins().get(fingerprint)
        main = [e for e in fits if pin is not None and pin in e.depth]
        newest = max(main or fits, key=lambda e: e.last_used)
        self.counts["preloads"] += 1
        return Reply(True, {"path": newest.path, "tokens": newest.tokens})

    def ls(self) -> Reply:
        rows = sorted(self.index.entries.values(), key=lambda e: -e.last_used)
        return Reply(True, {"entries": [
            {"fingerprint": e.fingerprint, "block_hash": e.hashes[-1], "tokens": e.tokens,
             "bytes": e.size, "pinned": e.pinned, "last_used": e.last_used, "path": e.path}
            for e in rows]})

    def info(self) -> dict:
        return {"entries": len(self.index), "bytes": self.index.bytes,
                "budget": self.index.budget, "hits": self.counts["hits"],
                "misses": self.counts["misses"], "preloads": self.counts["preloads"],
                "degraded": self.degraded}

    def stats(self) -> dict:
        return {**self.info(), **self.counts, "dir": str(self.dir), "last_error": self.last_error,
                "pinned": sum(1 for e in self.index.entries.values() if e.pinned)}

    # -- files ------------------------------------------------------------------------------
    def _reject(self, src: Path | None, why: str) -> Reply:
        self.counts["rejected"] += 1
        log.warning("kvstore.put_rejected", path=str(src) if src else None, reason=why)
        if src is not None:
            try:
                src.unlink()
            except OSError:
                pass
        return Reply(False, error=why)

    def _set_degraded(self, error: str) -> None:
        if not self.degraded:
            log.warning("kvstore.degraded", error=error)
        self.degraded, self.last_error = True, error

    def _delete(self, entries: list[Entry], why: str) -> None:
        for e in entries:
            try:
                os.unlink(e.path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("kvstore.delete_failed", path=e.path, error=str(exc))
            if why != "superseded":
                self.counts["evicted"] += 1
            log.info("kvstore.removed", path=e.path, tokens=e.tokens, reason=why)

    def _move_to_quarantine(self, path: Path, reason: str) -> None:
        self.counts["quarantined"] += 1
        target = self.quarantine_dir / f"{path.parent.name}-{path.name}.{int(self.clock())}"
        try:
            os.replace(path, target)
        except OSError:
            try:
                path.unlink()
            except OSError:
                pass
        log.warning("kvstore.quarantined", path=str(path), reason=reason)
        kept = sorted(self.quarantine_dir.iterdir(), key=lambda p: p.stat().st_mtime)
        for old in kept[:-KEEP_QUARANTINED]:
            old.unlink(missing_ok=True)

    def _clean_spool(self) -> None:
        now = time.time()
        if now - self._spool_cleaned < 600:
            return
        self._spool_cleaned = now
        for path in self.spool.iterdir():
            try:
                if now - path.stat().st_mtime > SPOOL_MAX_AGE_S:
                    path.unlink()
            except OSError:
                pass

    def _read_pins(self) -> dict:
        try:
            pins = json.loads(self.pins_file.read_text())
            return pins if isinstance(pins, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save_pins(self) -> None:
        pins = self.index.pins()
        if pins == self._read_pins():
            return
        tmp = self.pins_file.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(pins))
            os.replace(tmp, self.pins_file)
        except OSError as exc:
            log.warning("kvstore.pins_not_saved", error=str(exc))
