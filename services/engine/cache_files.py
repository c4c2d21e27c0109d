"""Cache files on the engine side: KV arrays for the disk writer, and a checked load.

The file format lives in anyclaude.services.kvstore.files (numpy only, shared with the
store). Loading goes through mlx-lm's ``load_prompt_cache``. ``mx.load`` of a safetensors
file returns at once (lazy), but the first evaluation reads each whole tensor into a fresh
buffer (not an mmap: RSS grows by the tensor size even when only a slice is used), so a
file is read twice at most: once for the CRC, once by MLX (the second from the page cache).
"""

from __future__ import annotations

import mlx.core as mx
from mlx_lm.models.cache import KVCache, load_prompt_cache

from anyclaude.services.kvstore.files import CacheFileError, read_header, verify_crc

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


def load_checked(path: str, *, fingerprint: str, hashes: list, reuse: int) -> list:
    """A list of KVCache holding the first ``reuse`` tokens of the cache file at ``path``,
    in the model's dtype. ``hashes`` is the chain the caller expects the file to start with
    (the prompt's own hashes up to the file's length). Raises CacheFileError when the file
    is damaged or is not what the index said (different model or prefix)."""
    info = read_header(path)
    if info.meta["fingerprint"] != fingerprint:
        raise CacheFileError(f"{path}: written for another model")
    if info.hashes[:len(hashes)] != list(hashes) or reuse > info.tokens:
        raise CacheFileError(f"{path}: holds a different token prefix")
    dtype = getattr(mx, info.meta["dtype"], None)
    if dtype not in DTYPES:
        raise CacheFileError(f"{path}: unknown dtype {info.meta['dtype']!r}")
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
