"""Cache files on the engine side: KV arrays for the disk writer, and a checked load.

The file format lives in anyclaude.kvfiles (numpy only, shared with the
store). Loading goes through mlx-lm's ``load_prompt_cache``. ``mx.load`` of a safetensors
file returns at once (lazy), but the first evaluation reads each whole tensor into a fresh
buffer (not an mmap: RSS grows by the tensor size even when only a slice is used), so a
file is read twice at most: once for the CRC, once by MLX (the second from the page cache).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import KVCache, load_prompt_cache

from anyclaude.kvfiles import CacheFileError, FileInfo, read_header, verify_crc

DTYPES = {mx.float32: "float32", mx.float16: "float16", mx.bfloat16: "bfloat16"}


def disk_layers(layers: list, tokens: int) -> list:
    """Evaluated views of the first ``tokens`` of each layer's (keys, values), ready for the
    writer thread (which reads them through numpy). bfloat16 has no numpy type: it is cast
    to float16 here, on the caller's thread."""
    out = []
    for keys, values in layers:
        k, v = keys[..., :tokens, :], values[..., :tokens, :]
        if k.dtype == mx.bfloat16:
            k, v = k.astype(mx.float16), v.astype(mx.float16)
        out.append((k, v))
    mx.eval(out)
    return out


def read_checked(path: str, *, fingerprint: str, hashes: list) -> FileInfo:
    """The header of the cache file at ``path``, checked against what the index promised:
    this model, and a chain starting with ``hashes`` (the prompt's own, up to the blocks the
    index matched). Raises CacheFileError otherwise."""
    info = read_header(path)
    if info.meta["fingerprint"] != fingerprint:
        raise CacheFileError(f"{path}: written for another model")
    if info.hashes[:len(hashes)] != list(hashes):
        raise CacheFileError(f"{path}: holds a different token prefix")
    return info


def reusable(info: FileInfo, prompt: np.ndarray, blocks: int) -> int:
    """How many leading tokens of ``prompt`` the file holds: its matched blocks, extended
    token by token through the rest of its ids when it carries them."""
    n = blocks * info.block_tokens
    ids = info.token_ids
    if ids is None:
        return n
    m = min(len(ids), len(prompt))
    diff = np.flatnonzero(ids[n:m] != prompt[n:m])
    return n + int(diff[0]) if diff.size else m


def load_checked(path: str, info: FileInfo, *, reuse: int) -> list:
    """A list of KVCache holding the first ``reuse`` tokens of the checked file at ``path``
    (header ``info`` from read_checked), in the model's dtype. Raises CacheFileError when
    the data is damaged."""
    dtype = getattr(mx, info.meta["dtype"], None)
    if dtype not in DTYPES:
        raise CacheFileError(f"{path}: unknown dtype {info.meta['dtype']!r}")
    if reuse > info.tokens:
        raise CacheFileError(f"{path}: holds {info.tokens} tokens, not {reuse}")
    verify_crc(path, info)
    try:
        loaded = load_prompt_cache(path)
    except Exception as exc:  # mlx raises RuntimeError/ValueError on bad files
        raise CacheFileError(f"{path}: mlx-lm cannot load it: {exc}") from None
    cache = []
    for layer in loaded:
        if not isinstance(layer, KVCache) or layer.keys is None or layer.offset != info.tokens:
            raise CacheFileError(f"{path}: unexpected cache layout")
        c = KVCache()
        c.keys = layer.keys[..., :reuse, :].astype(dtype)
        c.values = layer.values[..., :reuse, :].astype(dtype)
        c.offset = reuse
        cache.append(c)
    mx.eval([(c.keys, c.values) for c in cache])
    return cache
