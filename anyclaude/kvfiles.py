"""The KV-cache file format and block hashes, with numpy only (the store never imports mlx).

A cache file is a safetensors file in exactly the layout of mlx-lm's ``save_prompt_cache``,
so ``mlx_lm.models.cache.load_prompt_cache`` reads it as is:

    tensors   "<layer>.0" keys, "<layer>.1" values  [1, kv_heads, tokens, head_dim], fp16
              "<layer>.2" the offset (int32 scalar)
    metadata  mlx-lm's own keys ("1.<layer>" class name, "2.*" its scalar table) and ours
              under "0.": format, fingerprint, tokens, block_tokens, block_hashes (the chain,
              comma-separated, shortest first), crc32 (of the data section), dtype (the
              model's KV dtype, restored on load), and optionally token_ids (base64 of
              the little-endian int32 ids the file covers, included in the CRC).

A file with token_ids may hold any number of tokens (its chain names its full blocks, the
ids after the last full block make its tail): the engine then reuses exactly the prefix a
prompt shares with it, not only whole blocks. A file without them covers whole blocks only.

We write it ourselves rather than with ``save_prompt_cache`` because that one saves the
padded KV buffers (up to 255 unused slots per layer), cannot fsync, and would run MLX in the
writer thread. Writing streams one layer at a time (one layer's fp16 copy in memory) and
fills in the CRC by rewriting the fixed-width header field at the end.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = "anyclaude-kv-1"
SUFFIX = ".safetensors"
MAX_HEADER = 64 * 2**20
_CRC_PLACEHOLDER = "00000000"
_DTYPES = {np.dtype(np.float16): "F16", np.dtype(np.float32): "F32", np.dtype(np.int32): "I32"}
_ITEMSIZE = {"F16": 2, "F32": 4, "I32": 4, "BF16": 2}
REQUIRED = ("format", "fingerprint", "tokens", "block_tokens", "block_hashes", "crc32", "dtype")


def encode_ids(ids) -> str:
    return base64.b64encode(np.asarray(ids, dtype="<i4").tobytes()).decode("ascii")


def _ids_crc(meta: dict) -> int:
    """The CRC's seed: the token ids, when the file carries them."""
    ids = meta.get("token_ids")
    return zlib.crc32(ids.encode("ascii")) if isinstance(ids, str) and ids else 0


class CacheFileError(ValueError):
    """A cache file that must not be used: unreadable, truncated, or not what it claims."""


def chain_hashes(fingerprint: str, ids, block_tokens: int) -> list[str]:
    """The chained hash at each full block boundary of ``ids``, shortest prefix first.

    hash_k = blake2b(hash_{k-1} || int32 tokens of block k), hash_0 = blake2b(fingerprint):
    equal hashes mean the same model and the same token prefix."""
    data = np.asarray(ids, dtype="<i4").tobytes()
    step = 4 * block_tokens
    prev = hashlib.blake2b(fingerprint.encode(), digest_size=16).digest()
    out = []
    for end in range(step, len(data) + 1, step):
        prev = hashlib.blake2b(prev + data[end - step:end], digest_size=16).digest()
        out.append(prev.hex())
    return out


@dataclass(frozen=True)
class FileInfo:
    meta: dict            # our metadata (the "0." keys, prefix stripped)
    tensors: dict         # name -> {dtype, shape, data_offsets}
    data_start: int
    size: int

    @property
    def tokens(self) -> int:
        return int(self.meta["tokens"])

    @property
    def hashes(self) -> list[str]:
        return self.meta["block_hashes"].split(",") if self.meta["block_hashes"] else []

    @property
    def block_tokens(self) -> int:
        return int(self.meta["block_tokens"])

    @property
    def token_ids(self) -> np.ndarray | None:
        """The ids the file covers (checked against the chain by read_header), or None."""
        raw = self.meta.get("token_ids")
        if not raw:
            return None
        return np.frombuffer(base64.b64decode(raw), dtype="<i4").astype(np.int32)


def _layout(shapes: list[tuple[tuple, tuple]]) -> tuple[dict, list[int]]:
    """Header tensor entries and the byte size of each tensor, in write order."""
    tensors, sizes, offset = {}, [], 0
    for layer, (kshape, vshape) in enumerate(shapes):
        for i, shape in ((0, kshape), (1, vshape)):
            size = 2 * int(np.prod(shape))
            tensors[f"{layer}.{i}"] = {"dtype": "F16", "shape": list(shape),
                                       "data_offsets": [offset, offset + size]}
            sizes.append(size)
            offset += size
        tensors[f"{layer}.2"] = {"dtype": "I32", "shape": [], "data_offsets": [offset, offset + 4]}
        sizes.append(4)
        offset += 4
    return tensors, sizes


def _header_bytes(tensors: dict, meta: dict, n_layers: int) -> bytes:
    full = {f"0.{k}": str(v) for k, v in meta.items()}
    full.update({f"1.{i}": "KVCache" for i in range(n_layers)})
    full["2.0"] = ""
    for i in range(n_layers):
        full[f"2.{i + 1}.0"] = f"{i}.2"
        full[f"2.{i + 1}.1"] = "scalar"
    raw = json.dumps({**tensors, "__metadata__": full}, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def write_cache_file(path: str | os.PathLike, layers: list, meta: dict, *, opener=open) -> int:
    """Write ``layers`` [(keys, values)] (anything np.asarray accepts: numpy or evaluated mlx
    arrays, [1, heads, tokens, dim]) as fp16 to ``path`` with ``meta`` (our keys, without
    crc32), fsync it, and return its size. On any error the partial file is removed."""
    meta = {**meta, "format": FORMAT, "crc32": _CRC_PLACEHOLDER}
    shapes = [(tuple(k.shape), tuple(v.shape)) for k, v in layers]
    tensors, _ = _layout(shapes)
    head = _header_bytes(tensors, meta, len(layers))
    crc = _ids_crc(meta)
    try:
        with opener(path, "wb") as fh:
            fh.write(head)
            for layer, (keys, values) in enumerate(layers):
                for arr in (keys, values):
                    chunk = np.ascontiguousarray(np.asarray(arr), dtype=np.float16)
                    view = memoryview(chunk).cast("B")
                    crc = zlib.crc32(view, crc)
                    fh.write(view)
                    del chunk, view
                offset = struct.pack("<i", int(shapes[layer][0][2]))
                crc = zlib.crc32(offset, crc)
                fh.write(offset)
            fixed = head.replace(f'"0.crc32":"{_CRC_PLACEHOLDER}"'.encode(),
                                 f'"0.crc32":"{crc:08x}"'.encode(), 1)
            fh.seek(0)
            fh.write(fixed)
            fh.flush()
            os.fsync(fh.fileno())
            size = os.fstat(fh.fileno()).st_size
    except BaseException:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    return size


def read_header(path: str | os.PathLike) -> FileInfo:
    """Parse and check the header only (fast: no tensor data is read)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            first = fh.read(8)
            if len(first) < 8:
                raise CacheFileError(f"{path.name}: shorter than a safetensors header")
            (n,) = struct.unpack("<Q", first)
            if n > MAX_HEADER or 8 + n > size:
                raise CacheFileError(f"{path.name}: header length {n} does not fit the file")
            raw = fh.read(n)
    except OSError as exc:
        raise CacheFileError(f"{path.name}: cannot read: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise CacheFileError(f"{path.name}: header is not valid JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise CacheFileError(f"{path.name}: header has no metadata")
    full = header.pop("__metadata__")
    meta = {k[2:]: v for k, v in full.items() if k.startswith("0.")}
    missing = [k for k in REQUIRED if not isinstance(meta.get(k), str)]
    if missing or meta["format"] != FORMAT:
        raise CacheFileError(f"{path.name}: not an anyclaude cache file (missing {missing or 'format'})")
    try:
        tokens, block = int(meta["tokens"]), int(meta["block_tokens"])
        end = 0
        for name, t in header.items():
            begin, stop = (int(x) for x in t["data_offsets"])
            want = _ITEMSIZE[t["dtype"]] * int(np.prod(t["shape"], dtype=np.int64))
            if not 0 <= begin <= stop or stop - begin != want:
                raise ValueError(name)
            end = max(end, stop)
    except (KeyError, TypeError, ValueError):
        raise CacheFileError(f"{path.name}: malformed tensor table or metadata") from None
    if 8 + n + end != size:
        raise CacheFileError(f"{path.name}: {size} bytes, header says {8 + n + end} (truncated?)")
    hashes = meta["block_hashes"].split(",") if meta["block_hashes"] else []
    exact = bool(meta.get("token_ids"))
    if (tokens <= 0 or block <= 0 or len(hashes) != tokens // block or not hashes
            or (tokens % block and not exact)):
        raise CacheFileError(f"{path.name}: token count and block hashes disagree")
    info = FileInfo(meta, header, 8 + n, size)
    if exact:
        _check_ids(path, info)
    return info


def _check_ids(path: Path, info: FileInfo) -> None:
    """token_ids must be as many as the file's tokens and hash to its chain."""
    try:
        ids = info.token_ids
    except (binascii.Error, ValueError, TypeError):
        raise CacheFileError(f"{path.name}: token_ids is not base64 int32") from None
    if ids is None or len(ids) != info.tokens or chain_hashes(
            info.meta["fingerprint"], ids, info.block_tokens) != info.hashes:
        raise CacheFileError(f"{path.name}: token_ids do not match the block hashes")


def verify_crc(path: str | os.PathLike, info: FileInfo, chunk: int = 8 * 2**20) -> None:
    """Check the data section (and token ids) against the header's CRC32 (catches bit rot,
    torn writes)."""
    crc = _ids_crc(info.meta)
    try:
        with open(path, "rb") as fh:
            fh.seek(info.data_start)
            while block := fh.read(chunk):
                crc = zlib.crc32(block, crc)
    except OSError as exc:
        raise CacheFileError(f"{Path(path).name}: cannot read: {exc.strerror or exc}") from None
    if f"{crc:08x}" != info.meta["crc32"]:
        raise CacheFileError(f"{Path(path).name}: data checksum mismatch")
