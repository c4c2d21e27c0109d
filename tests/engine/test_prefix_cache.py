"""The engine's prefix cache on a real (tiny, random) mlx-lm model: reuse must give exactly
what a cold run gives, in memory and from the real kvstore process on disk."""

from __future__ import annotations

import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_map
from mlx_lm.generate import generate_step
from mlx_lm.models import qwen3
from mlx_lm.models.cache import RotatingKVCache, make_prompt_cache

from anyclaude.services.engine.prefix.prefix_cache import PrefixCache
from anyclaude.kvstore_client import KVStoreClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kvstore"))
from kvstore_proc import KVStoreProc  # noqa: E402

BLOCK = 16
FP = "0123456789abcdef0123456789abcdef"
STEP = 64           # prefill step, as the engine uses


@pytest.fixture(scope="module")
def model():
    """Qwen3 layer code, 2 layers, fp32. Weights ~N(0, 0.1): the demo model's 0.02 makes a
    greedy decode repeat one token, which would make "token-identical" a weak check."""
    args = qwen3.ModelArgs(model_type="qwen3", hidden_size=128, num_hidden_layers=2,
                           intermediate_size=256, num_attention_heads=4, rms_norm_eps=1e-6,
                           vocab_size=512, num_key_value_heads=2, max_position_embeddings=4096,
                           rope_theta=1e6, head_dim=32, tie_word_embeddings=True)
    m = qwen3.Model(args)
    mx.random.seed(0)
    m.update(tree_map(lambda p: mx.random.normal(p.shape) * 0.1 if p.ndim > 1 else p,
                      m.parameters()))
    mx.eval(m.parameters())
    return m


def ids_of(seed: int, n: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, 500, n).tolist()


def generate(model, ids, cache, reused, n=10) -> list[int]:
    out = []
    for token, _ in generate_step(mx.array(ids[reused:]), model, prompt_cache=cache,
                                  max_tokens=n, prefill_step_size=STEP):
        out.append(token)
    return out


def cold(model, ids, n=10) -> list[int]:
    return generate(model, ids, make_prompt_cache(model), 0, n)


def next_logits(model, ids, cache, reused) -> np.ndarray:
    out = model(mx.array([ids[reused:]]), cache=cache)[0, -1]
    return np.array(out.astype(mx.float32))


def cold_logits(model, ids) -> np.ndarray:
    return next_logits(model, ids, make_prompt_cache(model), 0)


def pcache(model, budget=50_000_000, store=None) -> PrefixCache:
    return PrefixCache(model, memory_budget_bytes=budget, fingerprint=FP, block_tokens=BLOCK,
                       store=store)


def turn(model, pc, ids, n=10):
    """One request the way EngineCore runs it: fetch, generate, store prompt + output."""
    cache, reused, source = pc.fetch(ids)
    out = generate(model, ids, cache, reused, n)
    pc.store(ids + out, cache)
    return out, reused, source


# --- memory ---------------------------------------------------------------------------------

def test_second_turn_reuses_the_first_and_continues_exactly_like_a_cold_run(model):
    pc = pcache(model)
    p1 = ids_of(1, 300)
    out1, reused, source = turn(model, pc, p1)
    assert (reused, source) == (0, "none") and out1 == cold(model, p1)
    p2 = p1 + out1 + ids_of(2, 40)               # the next turn starts with the reply
    out2, reused, source = turn(model, pc, p2, n=12)
    assert source == "memory" and reused == len(p1) + len(out1)
    assert out2 == cold(model, p2, n=12)
    assert len(set(out2)) > 3                     # a real continuation, not one token repeated
    stats = pc.stats()
    assert (stats["hits"], stats["misses"], stats["reused_tokens"]) == (1, 1, reused)
    assert stats["entries"] == 1                  # turn 1's entry is a prefix of turn 2's
    assert stats["cached_tokens"] == len(p2) + len(out2)


def test_a_longer_entry_is_cut_back_to_the_common_prefix_and_never_modified(model):
    pc = pcache(model)
    long = ids_of(3, 300)
    cache, _, _ = pc.fetch(long)
    generate(model, long, cache, 0, 1)
    pc.store(long, cache)
    short = long[:150] + ids_of(4, 30)            # diverges inside a block (150 % 16 != 0)
    cache, reused, source = pc.fetch(short)
    assert (reused, source) == (150, "memory")
    np.testing.assert_allclose(next_logits(model, short, cache, reused), cold_logits(model, short),
                               atol=1e-4)
    out = generate(model, short, *pc.fetch(short)[:2])
    assert out == cold(model, short)
    # the stored entry still holds the original prompt's KV, not the short prompt's
    cache, reused, _ = pc.fetch(long + [7])
    assert reused == 300
    np.testing.assert_allclose(next_logits(model, long + [7], cache, reused),
                               cold_logits(model, long + [7]), atol=1e-4)


def test_exact_hit_refeeds_the_last_token(model):
    pc = pcache(model)
    p = ids_of(5, 200)
    cache, _, _ = pc.fetch(p)
    generate(model, p, cache, 0, 1)
    pc.store(p, cache)
    cache, reused, source = pc.fetch(p)
    assert (reused, source) == (199, "memory")
    assert cache[0].offset == 199
    np.testing.assert_allclose(next_logits(model, p, cache, reused), cold_logits(model, p),
                               atol=1e-4)
    cache, reused, _ = pc.fetch(p[:90])           # a prompt inside an entry
    assert reused == 89


def test_lru_by_bytes_evicts_but_keeps_the_pinned_prefix(model):
    per_entry = 2 * 2 * 2 * 32 * 4 * 512          # fp32 KV, 2 layers, buffer of 512 slots
    pc = pcache(model, budget=int(2.5 * per_entry))
    system = ids_of(6, 120)
    pc.pin(system)
    main = system + ids_of(7, 200)
    turn(model, pc, main, n=2)
    for seed in (8, 9, 10):                      # side calls with other prompts
        turn(model, pc, ids_of(seed, 300), n=2)
    stats = pc.stats()
    assert stats["bytes"] <= stats["budget"] and stats["pinned_tokens"] == 120
    _, reused, source = pc.fetch(ids_of(8, 300))   # the oldest side call: evicted
    assert (reused, source) == (0, "none")
    cache, reused, source = pc.fetch(main)       # main turn evicted, its pinned prefix kept
    assert (reused, source) == (120, "memory")
    np.testing.assert_allclose(next_logits(model, main, cache, reused), cold_logits(model, main),
                               atol=1e-4)
    _, reused, _ = pc.fetch(ids_of(10, 300))     # the newest side call: still there
    assert reused == 299


def test_concurrent_sessions_with_different_system_prompts_both_hit(model):
    pc = pcache(model)
    sessions = {name: ids_of(seed, 150) + ids_of(seed + 100, 60) for name, seed in (("a", 11), ("b", 12))}
    outs = {}
    for name, p in sessions.items():
        outs[name], reused, _ = turn(model, pc, p, n=4)
        assert reused == 0
    for name, p in sessions.items():
        nxt = p + outs[name] + ids_of(13, 20)
        out, reused, source = turn(model, pc, nxt, n=4)
        assert (source, reused) == ("memory", len(p) + 4)
        assert out == cold(model, nxt, n=4)
    assert pc.stats()["hits"] == 2 and pc.stats()["entries"] == 2


def test_divergence_says_where_the_prompt_left_the_closest_entry(model):
    pc = pcache(model)
    p = ids_of(14, 100)
    assert pc.divergence(p) == (0, 0)
    turn(model, pc, p, n=3)
    assert pc.divergence(p[:40] + [501, 502]) == (40, 103)


def test_caches_that_cannot_be_cut_are_reused_only_whole(model):
    pc = pcache(model)
    p = ids_of(15, 100)
    cache = make_prompt_cache(model, max_kv_size=1024)
    assert isinstance(cache[0], RotatingKVCache)
    out = generate(model, p, cache, 0, 3)
    pc.store(p + out, cache)
    longer = p + out + ids_of(16, 10)
    cache, reused, source = pc.fetch(longer)
    assert (reused, source) == (103, "memory")
    assert generate(model, longer, cache, reused, 4) == cold(model, longer, 4)
    assert pc.fetch(p[:50] + ids_of(17, 60))[1] == 0   # would need a cut: not reused


# --- disk (the real kvstore process) ----------------------------------------------------------

@pytest.fixture
def kvstore():
    proc = KVStoreProc(budget_mb=8)
    yield proc
    proc.close()


def test_a_fresh_engine_loads_the_prefix_from_disk_and_continues_like_a_cold_run(model, kvstore):
    client = KVStoreClient(kvstore.kv_dir)
    try:
        first = pcache(model, store=client)
        p1 = ids_of(20, 300)
        out1, _, _ = turn(model, first, p1)
        assert client.flush(10) and client.counts["writes"] == 1
        assert kvstore.command("info").data["entries"] == 1
        fresh = pcache(model, store=client)       # a restarted engine: empty memory
        p2 = p1 + out1 + ids_of(21, 40)
        cache, reused, source = fresh.fetch(p2)
        assert source == "disk" and reused == len(p1) + len(out1)   # the tail too, not
        assert (len(p1) + len(out1)) % BLOCK                           # only whole blocks
        assert cache[0].keys.dtype == mx.float32   # stored as fp16, back in the model's dtype
        # fp16 on disk: logits agree to fp16 precision, and the greedy tokens are the same
        np.testing.assert_allclose(next_logits(model, p2, cache, reused), cold_logits(model, p2),
                                   atol=2e-2)
        assert generate(model, p2, *fresh.fetch(p2)[:2], n=12) == cold(model, p2, n=12)
        assert fresh.stats()["disk_hits"] == 2
    finally:
        client.close()


def test_a_prompt_that_leaves_a_file_inside_its_tail_reuses_exactly_the_shared_tokens(
        model, kvstore):
    client = KVStoreClient(kvstore.kv_dir)
    try:
        p1 = ids_of(31, 2 * BLOCK + 10)
        turn(model, pcache(model, store=client), p1, n=2)
        assert client.flush(10)
        assert [e["tokens"] for e in kvstore.command("ls").data["entries"]] == [2 * BLOCK + 12]
        other = p1[:2 * BLOCK + 5] + [t + 1 for t in p1[2 * BLOCK + 5:]]   # differs at +5
        fresh = pcache(model, store=client)
        cache, reused, source = fresh.fetch(other)
        assert (source, reused) == ("disk", 2 * BLOCK + 5)
        assert generate(model, other, cache, reused, 6) == cold(model, other, 6)
    finally:
        client.close()


def test_a_restarted_engine_preloads_the_most_recent_file_and_serves_it_as_a_disk_hit(
        model, kvstore):
    client = KVStoreClient(kvstore.kv_dir)
    try:
        first = pcache(model, store=client)
        older = ids_of(40, 3 * BLOCK)
        turn(model, first, older, n=2)
        assert client.flush(10)
        p1 = ids_of(41, 5 * BLOCK + 3)
        out1, _, _ = turn(model, first, p1, n=4)
        assert client.flush(10)
        fresh = pcache(model, store=client)       # a restarted engine: empty memory
        path, tokens = client.recent(FP, fresh.budget)
        assert tokens == len(p1) + len(out1)      # the newest file, not the older one
        assert fresh.preload(path) == tokens and fresh.stats()["entries"] == 1
        assert client.recent(FP, 100) is None     # nothing that small
        p2 = p1 + out1 + ids_of(42, 20)
        cache, reused, source = fresh.fetch(p2)
        assert (source, reused) == ("disk", tokens)   # from memory, read from disk at start
        assert fresh.stats()["disk_hits"] == 1
        assert generate(model, p2, cache, reused, 8) == cold(model, p2, 8)
        assert fresh.fetch(p2)[2] == "memory"     # later hits on it are memory hits
        assert kvstore.stats()["preloads"] == 1
    finally:
        client.close()


def test_a_damaged_file_is_not_preloaded_and_gets_quarantined(model, kvstore):
    client = KVStoreClient(kvstore.kv_dir)
    try:
        turn(model, pcache(model, store=client), ids_of(43, 2 * BLOCK), n=2)
        assert client.flush(10)
        path, _ = client.recent(FP, 2**30)
        data = bytearray(Path(path).read_bytes())
        data[-100] ^= 0xFF
        Path(path).write_bytes(bytes(data))
        fresh = pcache(model, store=client)
        assert fresh.preload(path) == 0 and fresh.stats()["entries"] == 0
        assert fresh.stats()["disk_errors"] == 1
        assert kvstore.stats()["quarantined"] == 1 and client.recent(FP, 2**30) is None
    finally:
        client.close()


def test_a_corrupt_file_on_disk_is_a_miss_and_gets_quarantined(model, kvstore):
    client = KVStoreClient(kvstore.kv_dir)
    try:
        p = ids_of(22, 200)
        turn(model, pcache(model, store=client), p, n=2)
        assert client.flush(10)
        path = Path(kvstore.command("ls").data["entries"][0]["path"])
        data = bytearray(path.read_bytes())
        data[-200] ^= 0xFF                        # bit rot in the KV data
        path.write_bytes(bytes(data))
        fresh = pcache(model, store=client)
        cache, reused, source = fresh.fetch(p + [1])
        assert (reused, source) == (0, "none") and cache[0].offset == 0
        assert fresh.stats()["disk_errors"] == 1
        assert not path.exists() and kvstore.stats()["quarantined"] == 1
        assert kvstore.command("info").data["entries"] == 0
    finally:
        client.close()


def test_disk_full_still_serves_from_memory_and_marks_the_store_degraded(model, kvstore):
    def full(path, mode):
        raise OSError(28, "No space left on device")

    client = KVStoreClient(kvstore.kv_dir, opener=full, retry_after=60)
    try:
        pc = pcache(model, store=client)
        p1 = ids_of(23, 200)
        out1, _, _ = turn(model, pc, p1, n=3)
        assert client.flush(10) and client.counts["write_errors"] == 1
        p2 = p1 + out1 + ids_of(24, 20)
        out2, reused, source = turn(model, pc, p2, n=3)   # memory-only, request served
        assert (source, reused) == ("memory", 203) and out2 == cold(model, p2, n=3)
        assert client.flush(10) and client.stats()["memory_only"] is True
        assert client.counts["skipped"] >= 1 and client.counts["write_errors"] == 1
        assert kvstore.command("info").data["degraded"] is True
        assert list(kvstore.spool.iterdir()) == []
    finally:
        client.close()


def test_the_pinned_prefix_gets_a_file_of_its_own_that_serves_other_conversations(model, kvstore):
    client = KVStoreClient(kvstore.kv_dir)
    try:
        pc = pcache(model, store=client)
        system = ids_of(25, 40)                   # 2 full blocks + 8 tokens
        pc.pin(system)
        p1 = system + ids_of(26, 100)
        out1, _, _ = turn(model, pc, p1, n=3)
        p2 = p1 + out1 + ids_of(27, 30)
        turn(model, pc, p2, n=3)
        assert client.flush(10)
        entries = kvstore.command("ls").data["entries"]
        assert sorted((e["tokens"], e["pinned"]) for e in entries) == [(40, True), (176, False)]
        assert client.counts["writes"] == 3       # pin once, turn 1 (superseded), turn 2
        other = system + ids_of(28, 50)           # another conversation, same system prompt
        fresh = pcache(model, store=client)
        cache, reused, source = fresh.fetch(other)
        assert (source, reused) == ("disk", 40)           # the exact system prompt
        assert generate(model, other, cache, reused, 6) == cold(model, other, 6)
    finally:
        client.close()


def test_with_the_kvstore_down_requests_are_served_from_memory(model, tmp_path, monkeypatch):
    import shutil
    import tempfile
    run_dir = tempfile.mkdtemp(prefix="ac", dir="/tmp")
    monkeypatch.setenv("ANYCLAUDE_RUN_DIR", run_dir)
    client = KVStoreClient(tmp_path / "kv", timeout=0.3)      # nobody serves "kvstore" here
    try:
        pc = pcache(model, store=client)
        p1 = ids_of(29, 100)
        out1, reused, source = turn(model, pc, p1, n=3)
        assert (reused, source) == (0, "none")
        assert client.flush(10) and client.counts["writes"] == 0
        assert client.counts["rejected"] == 1                 # the put found no store
        assert list((tmp_path / "kv" / "spool").iterdir()) == []   # its file was removed
        p2 = p1 + out1 + ids_of(30, 20)
        out2, reused, source = turn(model, pc, p2, n=3)
        assert (source, reused) == ("memory", 103) and out2 == cold(model, p2, n=3)
    finally:
        client.close()
        shutil.rmtree(run_dir, ignore_errors=True)
