"""The real kvstore process for tests, and helpers to make cache files without a model.

Imported by name (tests/kvstore is put on sys.path by pytest; tests/engine adds it itself).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from anyclaude import bus, errors, messages
from anyclaude import kvfiles as files

FP = "f" * 32


class KVStoreProc:
    """``python -m anyclaude.services.kvstore`` with its own run dir and cache dir.

    ``cache_dir`` may be given (e.g. a tmpfs mount point); the store uses <cache_dir>/kv."""

    def __init__(self, budget_mb: int = 1, cache_dir: Path | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="ac", dir="/tmp"))
        self.cache_dir = Path(cache_dir) if cache_dir else self.dir / "cache"
        self.kv_dir = self.cache_dir / "kv"
        self.spool = self.kv_dir / "spool"
        self.log_dir = self.dir / "logs"
        env = {**os.environ, "ANYCLAUDE_RUN_DIR": f"{self.dir}/r",
               "ANYCLAUDE_CACHE_DIR": str(self.cache_dir),
               "ANYCLAUDE_CACHE_DISK_BUDGET_MB": str(budget_mb),
               "ANYCLAUDE_LOGGING_DIR": str(self.log_dir), "XDG_CONFIG_HOME": str(self.dir)}
        env.pop("ANYCLAUDE_CONFIG", None)
        self.env = env
        self.saved_run_dir = os.environ.get("ANYCLAUDE_RUN_DIR")
        os.environ["ANYCLAUDE_RUN_DIR"] = env["ANYCLAUDE_RUN_DIR"]
        self.client = bus.Client("kvstore")
        self.proc = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "anyclaude.services.kvstore"],
                                     env=self.env, cwd=self.dir, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read().decode()
            try:
                if self.client.request(messages.Command("ping"), timeout=0.5).ok:
                    return
            except errors.AnyclaudeError:
                self.client.reset()
        raise AssertionError("kvstore did not answer ping")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stderr.close()
        self.client.reset()

    def restart(self) -> None:
        self.stop()
        self.start()

    def request(self, msg, timeout: float = 5.0):
        return self.client.request(msg, timeout=timeout)

    def command(self, name: str, **args) -> messages.Reply:
        reply = self.request(messages.Command(name, args))
        assert isinstance(reply, messages.Reply)
        return reply

    def stats(self) -> dict:
        return self.command("stats").data

    def log_text(self) -> str:
        path = self.log_dir / "kvstore.log"
        return path.read_text() if path.exists() else ""

    def close(self) -> None:
        self.stop()
        self.client.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.saved_run_dir is None:
            os.environ.pop("ANYCLAUDE_RUN_DIR", None)
        else:
            os.environ["ANYCLAUDE_RUN_DIR"] = self.saved_run_dir


def fake_ids(seed: int, n: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, 1000, n).tolist()


def write_spool_file(spool: Path, ids: list[int], block: int = 16, *, fingerprint: str = FP,
                     layers: int = 2, heads: int = 2, dim: int = 32, name: str | None = None,
                     exact: bool = False):
    """A valid cache file for the block-aligned prefix of ``ids`` (random KV), in the spool;
    ``exact``: for all of ``ids``, carrying their token ids. Returns (path, hashes). fp16
    size: 2 * layers * heads * dim * 2 bytes per token."""
    hashes = files.chain_hashes(fingerprint, ids, block)
    tokens = len(ids) if exact else len(hashes) * block
    rng = np.random.default_rng(len(ids))
    kv = [(rng.standard_normal((1, heads, tokens, dim)).astype(np.float32),
           rng.standard_normal((1, heads, tokens, dim)).astype(np.float32))
          for _ in range(layers)]
    spool.mkdir(parents=True, exist_ok=True)
    path = spool / (name or f"{hashes[-1]}.test.tmp")
    meta = {"fingerprint": fingerprint, "tokens": tokens, "block_tokens": block,
            "block_hashes": ",".join(hashes), "dtype": "float32"}
    if exact:
        meta["token_ids"] = files.encode_ids(ids)
    files.write_cache_file(path, kv, meta)
    return path, hashes


def put(store: KVStoreProc, ids: list[int], block: int = 16, pinned: bool = False, **kw):
    """Write a file for ``ids`` into the store's spool and put it. Returns (reply, hashes)."""
    path, hashes = write_spool_file(store.spool, ids, block, **kw)
    reply = store.request(messages.CachePut(kw.get("fingerprint", FP), hashes[-1],
                                            len(hashes) * block, str(path), pinned))
    return reply, hashes


def lookup(store: KVStoreProc, ids: list[int], block: int = 16, fingerprint: str = FP):
    hashes = files.chain_hashes(fingerprint, ids, block)
    return store.request(messages.CacheLookup(fingerprint, hashes))
