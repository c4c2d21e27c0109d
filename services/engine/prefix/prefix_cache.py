"""The engine's prefix cache: reuse the KV of the longest common token prefix across
requests and sessions, in memory (LRU by bytes) and, behind it, on disk (the kvstore).

    pc = PrefixCache(model, memory_budget_bytes=..., fingerprint=..., block_tokens=256,
                     store=KVStoreClient(settings.kv_dir) or None)
    cache, reused, source = pc.fetch(ids)     # prefill ids[reused:] into cache
    ... stream_generate(..., prompt_cache=cache) ...
    pc.store(ids + generated, cache)          # takes ownership of cache
    pc.pin(ids[:n_system_and_tools])          # the active session's prefix survives side calls

Lookup: the prompt's chained block hashes find the entries sharing its longest
block-aligned prefix; comparing token arrays then gives the exact common prefix, inside a
block too. An entry longer than the common prefix is cut back to it.

Memory: an entry keeps the KV buffers of the cache handed to ``store`` (no copy); nobody
writes into them again. ``fetch`` hands out fresh KVCache objects whose arrays are slices of
those buffers, exactly as long as the reused prefix, so mlx-lm's first update allocates a
new buffer and copies the prefix into it: copy-on-write, costing one copy of the reused
prefix per fetch (which mlx-lm would allocate anyway) and nothing per entry. An entry
that is a prefix of a newer one is dropped (the newer one serves it).

Pinning: while the pinned prefix is cached, evicting its last holder keeps a copy of just
the pinned tokens, which is itself never evicted.

Disk: when the kvstore could offer more than memory, ``fetch`` asks it for the file with
the longest stored block-aligned prefix, extends the match through the token ids the file
carries (so the exact common prefix is reused, not only whole blocks) and loads it after
checking it (model fingerprint, hash chain, CRC); a bad file is a miss and is reported, and
the store quarantines it. ``store`` queues the whole entry (and the pinned prefix, as a
pinned file of its own) to the client's writer thread; files already on disk are not
written again.

Models whose caches are not plain KVCache (rotating windows) reuse an entry only when the
whole entry is a prefix of the prompt, and skip the disk; caches without a token offset
(recurrent layers) are not kept.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import (KVCache, can_trim_prompt_cache, make_prompt_cache,
                                 trim_prompt_cache)

from anyclaude.logs import get_logger
from anyclaude.kvstore_client import PutJob
from anyclaude.services.engine.prefix.entry import Entry as _Entry, lcp as _lcp, plain as _plain
from anyclaude.kvfiles import CacheFileError, chain_hashes

from anyclaude.services.engine.prefix.cache_files import DTYPES, disk_layers, load_checked, read_checked, reusable

log = get_logger()

KNOWN_ON_DISK_S = 600.0     # trust "this prefix is on disk" this long, then write again


class PrefixCache:
    def __init__(self, model, *, memory_budget_bytes: int, fingerprint: str,
                 block_tokens: int = 256, store=None):
        if block_tokens <= 0:
            raise ValueError("block_tokens must be positive")
        self.model = model
        self.budget = int(memory_budget_bytes)
        self.fingerprint = fingerprint
        self.block = int(block_tokens)
        self.disk = store
        self._n_layers = len(make_prompt_cache(model))
        self._entries: OrderedDict[int, _Entry] = OrderedDict()   # LRU first
        self._by_hash: dict[str, set] = {}
        self._bytes = 0
        self._pin: np.ndarray | None = None
        self._on_disk: dict[str, float] = {}
        self._lock = threading.RLock()
        self._warned_pin = False
        self.counts = dict(hits=0, misses=0, disk_hits=0, reused_tokens=0, disk_errors=0)

    # -- reading ----------------------------------------------------------------------------
    def fetch(self, ids: list[int]) -> tuple[list, int, str]:
        """(cache, reused, source): ``cache`` already holds ``ids[:reused]``; the remainder
        is never empty. source is "memory", "disk" or "none". A cache failure is a miss."""
        try:
            return self._fetch(ids)
        except Exception:
            log.exception("engine.cache.fetch_failed", tokens=len(ids))
            return self._count(make_prompt_cache(self.model), 0, "none")

    def _fetch(self, ids: list[int]) -> tuple[list, int, str]:
        arr = np.asarray(ids, dtype=np.int32)
        hashes = chain_hashes(self.fingerprint, arr, self.block)
        with self._lock:
            entry, reuse = self._best(arr, hashes)
            cache = self._materialize(entry, reuse) if reuse else None
            preloaded = bool(reuse) and entry.from_disk
            if reuse:
                self._entries.move_to_end(id(entry))
                entry.from_disk = False
        if preloaded:                 # read from disk at start, for this request
            return self._count(cache, reuse, "disk")
        if self.disk is not None and min(len(hashes) * self.block, len(arr) - 1) > reuse:
            loaded = self._from_disk(arr, hashes, reuse)
            if loaded is not None:
                cache, reuse = loaded
                return self._count(cache, reuse, "disk")
        if reuse:
            return self._count(cache, reuse, "memory")
        return self._count(make_prompt_cache(self.model), 0, "none")

    def _count(self, cache: list, reuse: int, source: str) -> tuple[list, int, str]:
        key = {"memory": "hits", "disk": "disk_hits", "none": "misses"}[source]
        with self._lock:
            self.counts[key] += 1
            self.counts["reused_tokens"] += reuse
        return cache, reuse, source

    def _best(self, arr: np.ndarray, hashes: list) -> tuple[_Entry | None, int]:
        """The entry to reuse and how many tokens of it (0: none)."""
        for h in reversed(hashes):       # entries sharing the longest block-aligned prefix
            if h in self._by_hash:
                found = self._scan([self._entries[k] for k in self._by_hash[h]], arr)
                if found[1]:
                    return found
                break
        return self._scan(self._entries.values(), arr)

    @staticmethod
    def _scan(entries, arr: np.ndarray) -> tuple[_Entry | None, int]:
        best, best_n = None, 0
        for e in entries:
            n = _lcp(e.ids, arr, len(arr))
            if e.sliceable:
                n = min(n, len(arr) - 1)      # never an empty remainder: re-feed a token
            elif n < len(e.ids) or n >= len(arr):
                continue                      # only a whole, shorter entry can be reused
            if n > best_n:
                best, best_n = e, n
        return best, best_n

    def _materialize(self, entry: _Entry, n: int) -> list:
        if not entry.sliceable:
            return copy.deepcopy(entry.layers)
        cache = []
        for keys, values in entry.layers:
            c = KVCache()
            c.keys, c.values, c.offset = keys[..., :n, :], values[..., :n, :], n
            cache.append(c)
        return cache

    def _from_disk(self, arr: np.ndarray, hashes: list, reuse: int):
        found = self.disk.lookup(self.fingerprint, hashes)
        if found is None:
            return None
        path, tokens = found
        blocks = tokens // self.block
        if tokens % self.block or not 0 < blocks <= len(hashes):
            return None
        started = time.monotonic()
        try:
            info = read_checked(path, fingerprint=self.fingerprint, hashes=hashes[:blocks])
            n = min(reusable(info, arr, blocks), len(arr) - 1)
            if n <= reuse:
                return None
            cache = self._load(path, info, n)
        except CacheFileError as exc:
            self._bad_file(path, exc)
            return None
        except Exception:             # out of memory, a bug: a miss, never a failed request
            with self._lock:
                self.counts["disk_errors"] += 1
            log.exception("engine.cache.disk_load_failed", path=path)
            return None
        self._mark_on_disk(info.hashes[-1], info.tokens)
        log.info("engine.cache.disk_load", path=path, tokens=n, file_tokens=info.tokens,
                 memory_tokens=reuse, seconds=round(time.monotonic() - started, 3))
        return cache, n

    def _load(self, path: str, info, tokens: int) -> list:
        cache = load_checked(path, info, reuse=tokens)
        if len(cache) != self._n_layers:
            raise CacheFileError(f"{path}: wrong number of layers for this model")
        return cache

    def _bad_file(self, path: str, exc: CacheFileError) -> None:
        """A miss; the store quarantines the file."""
        with self._lock:
            self.counts["disk_errors"] += 1
        log.warning("engine.cache.bad_file", path=path, error=str(exc))
        self.disk.report_bad(path, str(exc))

    def preload(self, path: str) -> int:
        """Load the cache file at ``path`` into memory: what a restarted engine does first,
        so the next request of the session it left off is served at memory speed. Also runs
        one forward step against it (the first long-context step of a process is slower).
        Returns the tokens loaded; 0 when the file cannot serve (no token ids, another
        block size) or is damaged (reported to the store, as on a lookup)."""
        if self.disk is None:
            return 0
        try:
            info = read_checked(path, fingerprint=self.fingerprint, hashes=[])
            ids = info.token_ids
            if ids is None or info.block_tokens != self.block:
                return 0
            cache = self._load(path, info, info.tokens)
        except CacheFileError as exc:
            self._bad_file(path, exc)
            return 0
        self._mark_on_disk(info.hashes[-1], info.tokens)
        entry = self._store(ids.tolist(), cache, False)
        if entry is None:
            return 0
        with self._lock:
            entry.from_disk = True
            if len(entry.ids) > 1 and entry.sliceable:
                view = self._materialize(entry, len(entry.ids) - 1)
            else:
                view = None
        if view is not None:
            mx.eval(self.model(mx.array(entry.ids[-1:])[None], cache=view))
        return len(entry.ids)

    def divergence(self, ids: list[int]) -> tuple[int, int]:
        """(tokens matched, length of the closest entry): where a prompt left the cache."""
        arr = np.asarray(ids, dtype=np.int32)
        with self._lock:
            best = (0, 0)
            for e in self._entries.values():
                n = _lcp(e.ids, arr, len(arr))
                if n > best[0] or (n == best[0] and best[1] == 0):
                    best = (n, len(e.ids))
            return best

    # -- writing ----------------------------------------------------------------------------
    def pin(self, prefix_ids: list[int] | None) -> None:
        """Keep this prefix (the active session's system + tools) through side calls; it
        replaces the previous pin. None or [] unpins."""
        with self._lock:
            new = np.asarray(prefix_ids, dtype=np.int32) if prefix_ids else None
            if (new is None) != (self._pin is None) or (
                    new is not None and not np.array_equal(new, self._pin)):
                for e in self._entries.values():
                    e.pinned = False
            self._pin = new

    def store(self, ids: list[int], cache: list, *, pinned: bool = False) -> None:
        """Keep ``cache``, which holds the KV of ``ids`` (prompt + generated tokens); the
        caller must not use ``cache`` afterwards. Extra cached tokens are cut off; if the
        cache holds fewer tokens (a cancelled prefill), only that prefix is kept. Never
        raises (it runs in the engine's cleanup path): a failure is logged and forgotten."""
        try:
            self._store(ids, cache, pinned)
        except Exception:
            log.exception("engine.cache.store_failed", tokens=len(ids))

    def _store(self, ids: list[int], cache: list, pinned: bool) -> _Entry | None:
        plain = _plain(cache)
        offsets = {getattr(c, "offset", None) for c in cache}
        if len(offsets) != 1 or None in offsets:
            return None               # recurrent layers: no token count to cut back to
        held = offsets.pop()
        n = min(len(ids), held)
        if n <= 0:
            return None
        if plain:
            layers = [(c.keys, c.values) for c in cache]
            mx.eval(layers)
            nbytes = sum(k.nbytes + v.nbytes for k, v in layers)
        else:
            if held > n and not (can_trim_prompt_cache(cache) and
                                 trim_prompt_cache(cache, held - n) == held - n):
                return None
            layers, nbytes = cache, sum(c.nbytes for c in cache)
        arr = np.asarray(ids[:n], dtype=np.int32)
        entry = _Entry(arr, chain_hashes(self.fingerprint, arr, self.block), layers, nbytes, plain)
        with self._lock:
            if pinned:
                self.pin(ids[:n])
            if not self._absorb(entry):
                return None
            self._add(entry)
            entry.pinned = pinned
            self._evict()
        if self.disk is not None and plain:
            self._write_to_disk(entry)
        return entry

    def _absorb(self, entry: _Entry) -> bool:
        """Drop entries that ``entry`` covers; False if an existing one already covers it."""
        n = len(entry.ids)
        for old in list(self._entries.values()):
            m = len(old.ids)
            if m >= n and old.sliceable and _lcp(old.ids, entry.ids, n) == n:
                self._entries.move_to_end(id(old))
                return False
            if m <= n and entry.sliceable and _lcp(old.ids, entry.ids, m) == m:
                self._remove(old)
        return True

    def _add(self, entry: _Entry) -> None:
        self._entries[id(entry)] = entry
        self._bytes += entry.nbytes
        for h in entry.hashes:
            self._by_hash.setdefault(h, set()).add(id(entry))

    def _remove(self, entry: _Entry) -> None:
        del self._entries[id(entry)]
        self._bytes -= entry.nbytes
        for h in entry.hashes:
            keys = self._by_hash[h]
            keys.discard(id(entry))
            if not keys:
                del self._by_hash[h]

    def _covers_pin(self, e: _Entry) -> bool:
        p = self._pin
        return p is not None and len(e.ids) >= len(p) and _lcp(e.ids, p, len(p)) == len(p)

    def _evict(self) -> None:
        while self._bytes > self.budget:
            victim = next((e for e in self._entries.values() if not e.pinned), None)
            if victim is None:
                if not self._warned_pin:
                    self._warned_pin = True
                    log.warning("engine.cache.pin_over_budget", bytes=self._bytes,
                                budget=self.budget)
                return
            self._remove(victim)
            log.debug("engine.cache.evicted", tokens=len(victim.ids), bytes=victim.nbytes)
            if (self._covers_pin(victim) and victim.sliceable
                    and not any(self._covers_pin(e) for e in self._entries.values())):
                self._add(self._pinned_copy(victim))

    def _pinned_copy(self, victim: _Entry) -> _Entry:
        p = len(self._pin)
        layers = [(mx.contiguous(k[..., :p, :]), mx.contiguous(v[..., :p, :]))
                  for k, v in victim.layers]
        mx.eval(layers)
        ids = victim.ids[:p].copy()
        return _Entry(ids, chain_hashes(self.fingerprint, ids, self.block), layers,
                      sum(k.nbytes + v.nbytes for k, v in layers), True, pinned=True)

    # -- disk -------------------------------------------------------------------------------
    def _mark_on_disk(self, last_hash: str, tokens: int) -> None:
        self._on_disk[(last_hash, tokens)] = time.monotonic()
        if len(self._on_disk) > 100_000:
            self._on_disk.clear()

    def _stored(self, job: PutJob) -> None:
        self._mark_on_disk(job.hashes[-1], job.tokens)

    def _known_on_disk(self, last_hash: str, tokens: int) -> bool:
        seen = self._on_disk.get((last_hash, tokens))
        return seen is not None and time.monotonic() - seen < KNOWN_ON_DISK_S

    def _write_to_disk(self, entry: _Entry) -> None:
        """Queue ``entry`` (all its tokens) and, as its own file, the pinned prefix in it.
        A file needs at least one full block (its last block hash names it)."""
        n = len(entry.ids)
        pin = len(self._pin) if self._covers_pin(entry) else 0
        jobs = [(pin, True)] if self.block <= pin < n else []
        if n >= self.block:
            jobs.append((n, pin == n))
        for tokens, pinned in jobs:
            hashes = entry.hashes[:tokens // self.block]
            if self._known_on_disk(hashes[-1], tokens):
                continue
            layers = disk_layers(entry.layers, tokens)
            self.disk.put_async(PutJob(self.fingerprint, hashes, self.block, layers,
                                       DTYPES.get(entry.layers[0][0].dtype, "float16"),
                                       pinned=pinned, on_stored=self._stored,
                                       ids=entry.ids[:tokens].copy()))

    # -- reporting --------------------------------------------------------------------------
    def stats(self) -> dict:
        with self._lock:
            out = {**self.counts, "entries": len(self._entries), "bytes": self._bytes,
                   "budget": self.budget,
                   "cached_tokens": sum(len(e.ids) for e in self._entries.values()),
                   "pinned_tokens": 0 if self._pin is None else len(self._pin)}
        if self.disk is not None:
            out["disk"] = self.disk.stats()
        return out

    def clear(self) -> None:
        with self._lock:
            for e in list(self._entries.values()):
                self._remove(e)
