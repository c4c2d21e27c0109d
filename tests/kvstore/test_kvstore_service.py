"""The real kvstore process over the real bus: put, lookup, restart, corruption, budget,
quarantine, disk full, and the `anyclaude cache` commands."""

from __future__ import annotations

import errno
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from anyclaude import messages
from anyclaude.cli_cache import cache as cache_cli
from anyclaude import kvfiles as files
from anyclaude.kvstore_client import KVStoreClient, PutJob
from kvstore_proc import FP, KVStoreProc, fake_ids, lookup, put

# write_spool_file's default shape: 2 layers, 2 heads, dim 32, fp16 -> 512 bytes per token


@pytest.fixture
def store():
    proc = KVStoreProc(budget_mb=1)
    yield proc
    proc.close()


def files_on_disk(store) -> list[Path]:
    return sorted(p for p in store.kv_dir.glob("*/*.safetensors"))


def test_put_then_lookup_finds_the_longest_stored_prefix(store):
    ids = fake_ids(1, 100)
    reply, hashes = put(store, ids)
    assert reply.ok and len(hashes) == 6
    final = Path(reply.data["path"])
    assert final == store.kv_dir / FP / f"{hashes[-1]}.safetensors" and final.is_file()
    assert list(store.spool.iterdir()) == []          # adopted by rename
    hit = lookup(store, ids + fake_ids(2, 40))
    assert (hit.path, hit.tokens, hit.block_hash) == (str(final), 96, hashes[-1])
    hit = lookup(store, ids[:50] + fake_ids(3, 30))   # shares 3 blocks: the same file serves
    assert (hit.path, hit.tokens, hit.block_hash) == (str(final), 48, hashes[2])
    assert lookup(store, fake_ids(4, 100)).path == ""
    assert lookup(store, ids, fingerprint="g" * 32).path == ""
    info = store.command("info").data
    assert (info["entries"], info["hits"], info["misses"]) == (1, 2, 2)
    assert info["bytes"] == final.stat().st_size and info["degraded"] is False


def test_recent_names_the_most_recently_used_file_that_fits(store):
    first, _ = put(store, fake_ids(5, 64))
    second, _ = put(store, fake_ids(6, 32))
    size = Path(second.data["path"]).stat().st_size
    recent = store.command("recent", fingerprint=FP, max_bytes=2**20).data
    assert (recent["path"], recent["tokens"]) == (second.data["path"], 32)
    lookup(store, fake_ids(5, 64))                    # used again: now the most recent
    assert store.command("recent", fingerprint=FP, max_bytes=2**20).data["path"] == \
        first.data["path"]
    assert store.command("recent", fingerprint=FP, max_bytes=size).data["path"] == \
        second.data["path"]                           # the newer one is too big for that
    assert store.command("recent", fingerprint="g" * 32, max_bytes=2**20).data["path"] == ""
    bad = store.command("recent", fingerprint=FP, max_bytes="lots")
    assert not bad.ok and "max_bytes" in bad.error


def test_recent_prefers_the_main_session_over_a_later_side_call(store):
    system = fake_ids(7, 32)
    put(store, system, pinned=True)                   # the main session's system + tools
    main, _ = put(store, system + fake_ids(8, 32))    # its conversation
    side, _ = put(store, fake_ids(9, 32))             # a side call, the newest file
    assert store.command("recent", fingerprint=FP, max_bytes=2**20).data["path"] == \
        main.data["path"]
    size = Path(main.data["path"]).stat().st_size     # too big: the newest that fits
    assert store.command("recent", fingerprint=FP, max_bytes=size - 1).data["path"] != \
        main.data["path"]


def test_bad_puts_are_refused_and_their_files_removed(store, tmp_path):
    outside = tmp_path / "x.tmp"
    outside.write_bytes(b"not in the spool")
    reply = store.request(messages.CachePut(FP, "a" * 32, 16, str(outside)))
    assert not reply.ok and "spool" in reply.error and outside.exists()
    from kvstore_proc import write_spool_file
    path, hashes = write_spool_file(store.spool, fake_ids(5, 64))
    reply = store.request(messages.CachePut(FP, hashes[-1], 32, str(path)))  # wrong tokens
    assert not reply.ok and "does not match" in reply.error and not path.exists()
    path, hashes = write_spool_file(store.spool, fake_ids(6, 64))
    reply = store.request(messages.CachePut("../etc", hashes[-1], 64, str(path)))
    assert not reply.ok and not path.exists()
    big, _ = write_spool_file(store.spool, fake_ids(7, 2100))   # > 1 MB budget
    reply = store.request(messages.CachePut(FP, _[-1], 2096, str(big)))
    assert not reply.ok and "budget" in reply.error
    assert files_on_disk(store) == [] and store.stats()["rejected"] == 4


def test_a_longer_prefix_supersedes_the_shorter_file(store):
    ids = fake_ids(8, 140)
    first, _ = put(store, ids[:64])
    second, hashes = put(store, ids)
    assert first.ok and second.ok and second.data["removed"] == 1
    assert not Path(first.data["path"]).exists()
    hit = lookup(store, ids[:70])
    assert (hit.path, hit.tokens) == (second.data["path"], 64)
    assert [p.name for p in files_on_disk(store)] == [f"{hashes[-1]}.safetensors"]


def test_restart_rebuilds_the_index_from_the_files(store):
    a, b = fake_ids(9, 64), fake_ids(10, 200)
    put(store, a, pinned=True)
    put(store, b)
    before = {(e["block_hash"], e["tokens"], e["pinned"]) for e in store.command("ls").data["entries"]}
    store.restart()
    after = {(e["block_hash"], e["tokens"], e["pinned"]) for e in store.command("ls").data["entries"]}
    assert after == before and len(after) == 2 and any(p for _, _, p in after)
    assert lookup(store, b).tokens == 192 and lookup(store, a).tokens == 64
    assert "kvstore.index_rebuilt" in store.log_text()


def test_corrupt_files_are_quarantined_at_start_without_blocking_it(store):
    good, bad = fake_ids(11, 64), fake_ids(12, 64)
    put(store, good)
    reply, _ = put(store, bad)
    store.stop()
    broken = Path(reply.data["path"])
    broken.write_bytes(broken.read_bytes()[:-50])                  # truncated
    (store.kv_dir / FP / "junk.safetensors").write_bytes(b"\x00" * 20)   # garbage
    store.start()                                                   # answers ping: not blocked
    assert lookup(store, bad).path == "" and lookup(store, good).tokens == 64
    stats = store.stats()
    assert stats["entries"] == 1 and stats["quarantined"] == 2
    assert len(list((store.kv_dir / "quarantine").iterdir())) == 2
    assert not broken.exists()


def test_eviction_keeps_the_store_under_budget_and_the_pin(store):
    budget = 2**20
    pinned, _ = put(store, fake_ids(20, 600), pinned=True)       # ~300 KB each
    olds = [put(store, fake_ids(21 + i, 600))[0] for i in range(2)]
    assert store.stats()["bytes"] <= budget
    lookup(store, fake_ids(21, 600))                                 # touch the oldest
    time.sleep(0.01)
    newer = put(store, fake_ids(30, 600))[0]                        # a 4th does not fit
    stats = store.stats()
    assert stats["bytes"] <= budget and stats["evicted"] == 1
    assert sum(p.stat().st_size for p in files_on_disk(store)) == stats["bytes"]
    alive = {e["path"] for e in store.command("ls").data["entries"]}
    assert pinned.data["path"] in alive                  # pinned: kept
    assert olds[0].data["path"] in alive                 # recently looked up: kept
    assert olds[1].data["path"] not in alive             # least recently used: gone
    assert newer.data["path"] in alive
    assert not Path(olds[1].data["path"]).exists()


def test_quarantine_command_and_write_failed_degrade_then_recover(store):
    reply, _ = put(store, fake_ids(40, 64))
    path = reply.data["path"]
    assert store.command("quarantine", path="/etc/passwd", reason="x").ok is False
    assert store.command("quarantine", path=path, reason="load failed").ok
    assert not Path(path).exists() and lookup(store, fake_ids(40, 64)).path == ""
    assert store.command("write_failed", error="cache write failed: disk full").ok
    info = store.command("info").data
    assert info["degraded"] is True
    assert "disk full" in store.stats()["last_error"]
    assert put(store, fake_ids(41, 64))[0].ok
    assert store.command("info").data["degraded"] is False


def test_cli_stats_ls_clear(store):
    put(store, fake_ids(50, 64), pinned=True)
    put(store, fake_ids(51, 100))
    runner = CliRunner()
    out = runner.invoke(cache_cli, ["stats"])
    assert out.exit_code == 0 and "2 entries" in out.output and "1 pinned" in out.output
    out = runner.invoke(cache_cli, ["ls"])
    assert out.exit_code == 0 and FP[:12] in out.output and "yes" in out.output
    assert "     96 " in out.output
    out = runner.invoke(cache_cli, ["clear"])
    assert out.exit_code == 0 and "removed 2 entries" in out.output
    assert files_on_disk(store) == []
    out = runner.invoke(cache_cli, ["ls"])
    assert "no cached prefixes" in out.output


def test_cli_says_when_the_store_is_not_running(monkeypatch):
    run_dir = tempfile.mkdtemp(prefix="ac", dir="/tmp")
    monkeypatch.setenv("ANYCLAUDE_RUN_DIR", run_dir)
    try:
        out = CliRunner().invoke(cache_cli, ["stats"])
        assert out.exit_code == 1 and "kvstore is not running" in out.output
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


# --- disk full: a real tiny tmpfs when this machine lets us mount one, else a failing opener

def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True)
    return done.returncode == 0


class _FullAfter:
    """open() whose files fail with ENOSPC once ``limit`` bytes were written in total."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def __call__(self, path, mode):
        outer = self
        fh = open(path, mode)

        class F:
            def write(self, data):
                if outer.used + len(data) > outer.limit:
                    fh.write(bytes(data)[: outer.limit - outer.used])   # a partial write
                    raise OSError(errno.ENOSPC, "No space left on device")
                outer.used += len(data)
                return fh.write(data)

            def __getattr__(self, name):
                return getattr(fh, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                fh.close()

        return F()


def _job(ids, block=16):
    hashes = files.chain_hashes(FP, ids, block)
    n = len(hashes) * block
    layers = [(np.ones((1, 2, n, 32), np.float32), np.ones((1, 2, n, 32), np.float32))] * 2
    return PutJob(FP, hashes, block, layers, "float32")


def test_disk_full_degrades_to_memory_only_leaves_no_partial_file_and_recovers():
    mount = Path(tempfile.mkdtemp(prefix="actmpfs", dir="/tmp"))
    mounted = _mount_tmpfs(mount, "400k")
    store = KVStoreProc(budget_mb=8, cache_dir=mount)
    opener = open if mounted else _FullAfter(400_000)
    client = KVStoreClient(store.kv_dir, retry_after=0.0, opener=opener)
    try:
        assert client.put_async(_job(fake_ids(60, 1000)))       # ~512 KB: does not fit
        assert client.flush(10)
        assert client.counts["write_errors"] == 1 and client.counts["writes"] == 0
        assert list(store.spool.iterdir()) == []                # no partial file
        assert store.command("info").data["degraded"] is True
        assert "disk full" in store.stats()["last_error"]
        if not mounted:
            opener.used = 0
        assert client.put_async(_job(fake_ids(61, 200)))        # ~100 KB: fits
        assert client.flush(10)
        assert client.counts["writes"] == 1
        assert store.command("info").data["degraded"] is False
        assert lookup(store, fake_ids(61, 200)).tokens == 192
    finally:
        client.close()
        store.close()
        if mounted:
            subprocess.run(["umount", str(mount)], check=False)
        shutil.rmtree(mount, ignore_errors=True)
