"""The KV store's disk fails (faults rows 13-14): full (a real tmpfs filled up, or - where we
may not mount one - a spool that cannot be written), and corrupt cache files."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from anyclaude import messages
from anyclaude.kvfiles import read_header, verify_crc

from .harness import body, unique_words, wait_for


@contextlib.contextmanager
def disk_full(system):
    """Fill the tmpfs under the KV store to the last few KB (or break its spool)."""
    kv = system.kv_dir
    if system.tmpfs:
        filler = kv / "filler"
        with open(filler, "wb") as fh:
            free = shutil.disk_usage(kv).free
            os.posix_fallocate(fh.fileno(), 0, max(free - 64 * 1024, 1))
        try:
            yield "disk full"
        finally:
            filler.unlink()
    else:
        spool, aside = kv / "spool", kv / "spool.aside"
        spool.rename(aside)
        spool.write_text("not a directory")
        try:
            yield "cache write failed"
        finally:
            spool.unlink()
            aside.rename(spool)


def spool_files(system) -> list[Path]:
    spool = system.kv_dir / "spool"
    return list(spool.iterdir()) if spool.is_dir() else []


def test_row13_disk_full_still_serves_leaves_no_partial_file_and_recovers(system):
    entries = len(system.kv("ls")["entries"])
    with disk_full(system) as error:
        reply = system.post(body(unique_words(150, "disk-full") + " hello"))
        assert reply.status_code == 200 and reply.json()["content"][0]["text"] == "ok"
        stats = wait_for(lambda: (lambda s: s if s["degraded"] else None)(system.kv("stats")), 15,
                         what="the kvstore degraded")
        assert error in stats["last_error"], stats["last_error"]
        assert not spool_files(system)                    # the partial file was removed
        assert len(system.kv("ls")["entries"]) == entries
        status = system.cli("cache", "stats")
        assert "DEGRADED" in status.stdout, status.stdout + status.stderr
    # room again: the next good write clears it (memory-only for write_retry_s = 1 s first)
    def recovered():
        system.post(body(unique_words(150, f"disk-ok-{os.urandom(3).hex()}") + " hello"))
        return not system.kv("stats")["degraded"]
    wait_for(recovered, 30, interval=0.5, what="the kvstore to recover after a good write")
    assert len(system.kv("ls")["entries"]) > entries


def only_entry(system):
    entries = [e for e in system.kv("ls")["entries"] if e["tokens"] >= 512 and not e["pinned"]]
    return entries[0] if len(entries) == 1 else None


def test_row14_corrupt_cache_file_is_quarantined_as_a_miss_and_never_blocks_start(system):
    system.settle_cache()
    system.kv("clear")                                # only this test's files from here on
    prefix = unique_words(120, "corrupt-data")
    assert system.post(body(prefix + " first")).status_code == 200
    entry = wait_for(lambda: only_entry(system), 15, what="the prefix written to disk")
    before = system.kv("stats")
    path = Path(entry["path"])
    try:
        # damage the tensor data (the header still parses): found by the CRC when loaded
        with open(path, "r+b") as fh:
            fh.seek(path.stat().st_size // 2)
            fh.write(os.urandom(4096))
        system.restart("engine-tiny")                 # empty memory: the next hit is on disk
        reply = system.post(body(prefix + " second"))
        assert reply.status_code == 200 and reply.json()["content"][0]["text"] == "ok"
        assert reply.json()["usage"]["cache_read_input_tokens"] == 0   # a miss, not loaded
        assert system.engine_info()["cache"]["disk_hits"] == 0
        wait_for(lambda: system.kv("stats")["quarantined"] > before["quarantined"], 10,
                 what="the file quarantined")
        assert list((system.kv_dir / "quarantine").glob(f"*{path.name}*"))   # kept for a look
        if path.exists():        # the same prefix, stored again by this request: a good copy
            verify_crc(path, read_header(path))
    finally:
        _forget_if_damaged(system, path)
    # a damaged header: the store quarantines it while rebuilding its index, and starts
    system.settle_cache()
    other = wait_for(lambda: next(iter(system.kv("ls")["entries"]), None), 15,
                     what="a file on disk")
    with open(other["path"], "r+b") as fh:
        fh.write(b"\xff" * 16)
    system.restart("kvstore")
    assert system.kv("stats")["quarantined"] >= 1 and not Path(other["path"]).exists()
    assert other["path"] not in [e["path"] for e in system.kv("ls")["entries"]]
    assert system.post(body("still fine")).status_code == 200


def _forget_if_damaged(system, path: Path) -> None:
    """If a failed assertion left the damaged file indexed, quarantine it for the next tests."""
    if path.exists() and str(path) in [e["path"] for e in system.kv("ls")["entries"]]:
        try:
            verify_crc(path, read_header(path))
        except Exception:
            system.ask("kvstore", messages.Command("quarantine", {"path": str(path),
                                                                   "reason": "test cleanup"}))
