"""The cache file format: mlx-lm reads what we write; damage of every kind is detected."""

from __future__ import annotations

import errno
import json
import struct

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models.cache import load_prompt_cache

from anyclaude import kvfiles as files
from anyclaude.services.kvstore.index import Entry, Index
from kvstore_proc import FP, fake_ids, write_spool_file


def test_chain_hashes_are_chained_per_block_and_keyed_by_model():
    ids = fake_ids(1, 100)
    h = files.chain_hashes(FP, ids, 16)
    assert len(h) == 6                                   # full blocks only
    assert files.chain_hashes(FP, ids[:40], 16) == h[:2]  # a prefix has a prefix chain
    other = ids[:20] + [ids[20] + 1] + ids[21:]
    h2 = files.chain_hashes(FP, other, 16)
    assert h2[0] == h[0] and h2[1:] != h[1:] and not set(h2[1:]) & set(h[1:])
    assert files.chain_hashes("another-model", ids, 16)[0] != h[0]


def test_written_file_loads_with_mlx_lm_and_keeps_metadata(tmp_path):
    path, hashes = write_spool_file(tmp_path, fake_ids(2, 70), 16, layers=3)
    info = files.read_header(path)
    assert info.tokens == 64 and info.hashes == hashes and info.meta["fingerprint"] == FP
    files.verify_crc(path, info)
    final = tmp_path / "x.safetensors"   # mx.load picks the format by the suffix
    path.rename(final)
    cache, meta = load_prompt_cache(str(final), return_metadata=True)
    assert len(cache) == 3 and meta["tokens"] == "64"
    assert cache[0].offset == 64 and cache[0].keys.shape == (1, 2, 64, 32)
    assert cache[0].keys.dtype == mx.float16
    rng = np.random.default_rng(70)      # write_spool_file's generator for len(ids) == 70
    first_keys = rng.standard_normal((1, 2, 64, 32)).astype(np.float32).astype(np.float16)
    assert np.array_equal(np.array(cache[0].keys), first_keys)


@pytest.mark.parametrize("damage", ["truncate", "header_json", "crc", "not_ours", "empty"])
def test_damaged_files_are_detected(tmp_path, damage):
    path, _ = write_spool_file(tmp_path, fake_ids(3, 64), 16)
    data = bytearray(path.read_bytes())
    n = struct.unpack("<Q", data[:8])[0]
    if damage == "truncate":
        data = data[:-100]
    elif damage == "header_json":
        data[8 + 5] = ord("}")
    elif damage == "crc":
        data[8 + n + 1000] ^= 0xFF
    elif damage == "not_ours":
        header = json.loads(data[8:8 + n])
        header["__metadata__"].pop("0.format")
        raw = json.dumps(header).encode()
        data = struct.pack("<Q", len(raw)) + raw + data[8 + n:]
    else:
        data = b""
    path.write_bytes(bytes(data))
    with pytest.raises(files.CacheFileError):
        files.verify_crc(path, files.read_header(path))


def test_a_file_with_token_ids_may_end_inside_a_block(tmp_path):
    ids = fake_ids(4, 70)
    path, hashes = write_spool_file(tmp_path, ids, 16, exact=True)
    info = files.read_header(path)
    files.verify_crc(path, info)
    assert info.tokens == 70 and len(hashes) == 4 and info.token_ids.tolist() == ids


def _rewrite_meta(path, key, value):
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header["__metadata__"]["0." + key] = value
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


@pytest.mark.parametrize("damage", ["tail_id", "block_id", "not_base64", "count"])
def test_damaged_token_ids_are_detected(tmp_path, damage):
    ids = fake_ids(5, 70)
    path, _ = write_spool_file(tmp_path, ids, 16, exact=True)
    changed = list(ids)
    if damage == "tail_id":            # after the last full block: only the CRC sees it
        changed[68] += 1
    elif damage == "block_id":         # inside a full block: the chain no longer matches
        changed[3] += 1
    value = {"not_base64": "%%%", "count": files.encode_ids(ids[:69])}.get(
        damage, files.encode_ids(changed))
    _rewrite_meta(path, "token_ids", value)
    with pytest.raises(files.CacheFileError):
        files.verify_crc(path, files.read_header(path))


def test_failed_write_leaves_no_partial_file(tmp_path):
    written = []

    class Full:
        """A file that takes 10 KB, then the disk is full."""
        def __init__(self, path, mode):
            self.fh = open(path, mode)

        def write(self, data):
            if sum(written) + len(data) > 10_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            written.append(len(data))
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    layers = [(np.ones((1, 2, 256, 32), np.float32),) * 2]
    with pytest.raises(OSError) as info:
        files.write_cache_file(tmp_path / "t.tmp", layers,
                               {"fingerprint": FP, "tokens": 256, "block_tokens": 16,
                                "block_hashes": ",".join(["a"] * 16), "dtype": "float32"},
                               opener=Full)
    assert info.value.errno == errno.ENOSPC and sum(written) > 0
    assert list(tmp_path.iterdir()) == []


def _entry(name, hashes, size, used, pinned=False):
    return Entry(FP, hashes, 16 * len(hashes), size, f"/x/{name}", used, pinned)


def test_index_longest_prefix_supersede_and_lru_with_pins():
    index = Index(budget_bytes=300)
    a = _entry("a", ["h1", "h2"], 100, 1.0)
    assert index.add(a) == []
    b = _entry("b", ["h1", "h2", "h3"], 100, 2.0)
    assert index.add(b) == [a]                       # b covers a's prefix: a is redundant
    assert index.lookup(FP, ["h1", "h2", "zz"]) == (b, 32)   # an interior hash serves too
    assert index.lookup(FP, ["h1", "h2", "h3", "h4"]) == (b, 48)
    assert index.lookup(FP, ["nope"]) is None and index.lookup("other", ["h1"]) is None
    pin = _entry("p", ["p1"], 150, 0.5, pinned=True)
    index.add(pin)
    c = _entry("c", ["c1"], 100, 3.0)
    index.add(c)
    assert index.bytes == 350
    assert index.over_budget(protect=c) == [b]       # least recently used, pin kept
    assert index.bytes == 250 and pin.key in index.entries
    index.set_pin(FP, c.key)
    assert not pin.pinned and c.pinned and index.pins() == {FP: "c1"}
