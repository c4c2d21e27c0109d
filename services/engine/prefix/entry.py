"""One entry of the in-memory prefix cache and the two small tests the cache runs on them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mlx_lm.models.cache import KVCache


@dataclass(eq=False)
class Entry:
    ids: np.ndarray         # int32 token ids the KV covers
    hashes: list            # chained hashes of its full blocks
    layers: list            # plain KV: [(keys, values)] buffers >= len(ids); else the cache
    nbytes: int
    sliceable: bool
    pinned: bool = False
    from_disk: bool = False     # preloaded from the kvstore, not used yet


def lcp(a: np.ndarray, b: np.ndarray, limit: int) -> int:
    """The length of the common prefix of ``a`` and ``b``, at most ``limit``."""
    m = min(len(a), len(b), limit)
    diff = np.flatnonzero(a[:m] != b[:m])
    return int(diff[0]) if diff.size else m


def plain(cache: list) -> bool:
    """A cache of plain KVCache layers only (they can be sliced and shared)."""
    return bool(cache) and all(type(c) is KVCache for c in cache)
