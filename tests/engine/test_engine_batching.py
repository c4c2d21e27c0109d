"""Continuous batching (services/engine/mlx/batching.py) on the real tiny model.

The reference for "alone" is the one-at-a-time path (the session ``core``, batch_size 1,
stream_generate); the batch must give each request the same tokens, tool calls, stop
reason and usage whatever runs beside it.
"""

from __future__ import annotations

import threading
import time

import pytest

from engine_helpers import BASH_TOOL, CONTEXT_WINDOW, PREFILL_STEP, events_of, make_request, run

from anyclaude.messages import Delta, Done, Error

CALL = '<tool_call>\n{"name": "Bash", "arguments": {"command": "ls -la"}}\n</tool_call>'
LONG = "one two three four five six seven eight nine ten " * 30   # ~300 tokens
RULES = [{"match": "alpha", "say": "Forced alpha reply, with some words."},
         {"match": "beta", "say": CALL},
         {"match": "gamma", "say": "keep going until STOP here, not further"},
         {"match": "long", "say": LONG}]


def batch_core_for(tiny_model_dir, force_path, *, memory_budget_mb=0, size=4):
    from anyclaude.services.engine.mlx.generation import EngineCore
    # max_output_tokens 512: room for the long forced text that keeps a batch busy.
    return EngineCore(str(tiny_model_dir), model_id="tiny", context_window=CONTEXT_WINDOW,
                      max_output_tokens=512, prefill_step_size=PREFILL_STEP,
                      force_file=str(force_path), memory_budget_mb=memory_budget_mb,
                      batch_size=size)


@pytest.fixture(scope="module")
def batch_core(tiny_model_dir, force_path):
    return batch_core_for(tiny_model_dir, force_path)


def requests():
    """Four different requests: forced text, a forced tool call, a stop sequence cutting a
    forced text, and free greedy (temperature 0) decoding up to max_tokens; prompts of
    different lengths, so the batch pads and the requests join at different steps."""
    return [
        make_request("alpha " + "context words " * 30, max_tokens=40),
        make_request("beta: list the files", tools=[BASH_TOOL], max_tokens=60),
        make_request("gamma", stop_sequences=["STOP"], max_tokens=60),
        make_request("free greedy text " * 3, temperature=0.0, max_tokens=24),
    ]


def outcome(frames):
    final = frames[-1]
    assert sum(isinstance(f, (Done, Error)) for f in frames) == 1
    assert isinstance(final, Done), final
    return {"events": _merged(events_of(frames)), "stop_reason": final.stop_reason,
            "stop_sequence": final.stop_sequence, "usage": final.usage}


def _merged(events):
    """Events joined across Delta frames (frame boundaries depend on timing only)."""
    out = []
    for e in events:
        key = {"text": "text", "thinking": "text", "tool_args": "json"}.get(e["type"])
        if out and key and out[-1]["type"] == e["type"]:
            out[-1] = {**out[-1], key: out[-1][key] + e[key]}
        else:
            out.append(dict(e))
    for e in out:
        e.pop("id", None)     # tool-use ids are fresh per call
    return out


def batch_empties(core, within=5.0) -> bool:
    """The batch thread counts its requests after each step: give it that step."""
    deadline = time.monotonic() + within
    while core.batch.running and time.monotonic() < deadline:
        time.sleep(0.01)
    return core.batch.running == 0


def run_together(core, reqs, cancel_after_first_delta=()):
    """Every request in its own thread, released at once; frames per request."""
    results = [None] * len(reqs)
    barrier = threading.Barrier(len(reqs))

    def one(i):
        frames = []
        cancel = threading.Event()

        def emit(msg):
            frames.append(msg)
            if i in cancel_after_first_delta and isinstance(msg, Delta):
                cancel.set()
        barrier.wait()
        core.generate(reqs[i], emit, cancel.is_set)
        results[i] = frames

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(reqs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_each_request_gives_the_same_output_alone_and_inside_a_batch_of_four(
        core, batch_core, force):
    force(rules=RULES)
    alone = [outcome(run(core, r)) for r in requests()]          # the one-at-a-time path
    single = [outcome(run(batch_core, r)) for r in requests()]   # the batch, one at a time
    together = [outcome(f) for f in run_together(batch_core, requests())]
    assert batch_core.batch.peak >= 3        # they really ran side by side
    assert single == alone
    assert together == alone
    assert alone[1]["stop_reason"] == "tool_use"
    assert alone[2]["stop_reason"] == "stop_sequence"
    assert alone[3]["stop_reason"] == "max_tokens" or alone[3]["usage"]["output_tokens"] < 24


def test_each_request_in_a_batch_reads_its_own_prefix_from_the_cache(
        tiny_model_dir, force_path, force):
    force(rules=RULES)
    cached = batch_core_for(tiny_model_dir, force_path, memory_budget_mb=64)
    system = ["You are a careful assistant. " * 40]
    first = [make_request(w + " first turn", system=system, max_tokens=20)
             for w in ("alpha", "gamma", "long", "plain")]
    run_together(cached, first)                       # fills the cache, one entry each
    second = [dict(r, messages=r["messages"] + [
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
        {"role": "user", "content": [{"type": "text", "text": r["messages"][0]["content"][0]
                                      ["text"].split()[0] + " again"}]}]) for r in first]
    results = [outcome(f) for f in run_together(cached, second)]
    n_prompt = [cached.count(r) for r in second]
    for result, total in zip(results, n_prompt):
        usage = result["usage"]
        assert usage["cache_read_input_tokens"] >= 200              # its own turn-one prefix
        assert usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"] == total
    stats = cached.cache_stats()
    assert stats["hits"] >= 4


def test_a_cancelled_request_leaves_the_batch_at_once_and_the_others_finish(
        core, batch_core, force):
    force(rules=RULES)
    reqs = [make_request(f"long {i}", max_tokens=400) for i in range(4)]
    alone = outcome(run(batch_core, reqs[0]))
    results = [None] * 5
    started_fifth = {}

    def first_frames(i, cancel_at_delta):
        frames, cancel = [], threading.Event()

        def emit(msg):
            frames.append(msg)
            if cancel_at_delta and isinstance(msg, Delta):
                cancel.set()
            if i == 4 and "at" not in started_fifth:
                started_fifth["at"] = time.monotonic()
        batch_core.generate(reqs[min(i, 3)] if i < 4 else make_request("alpha"), emit,
                            cancel.is_set)
        results[i] = (frames, time.monotonic())

    threads = [threading.Thread(target=first_frames, args=(i, i == 0)) for i in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while results[0] is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert results[0] is not None
    cancelled_frames, cancelled_at = results[0]
    assert isinstance(cancelled_frames[-1], Error) and cancelled_frames[-1].type == "cancelled"
    # Its place is free at once: a fifth request starts while the other three still run.
    fifth = threading.Thread(target=first_frames, args=(4, False))
    fifth.start()
    for t in threads + [fifth]:
        t.join(120)
    others_done = [results[i][1] for i in (1, 2, 3)]
    assert started_fifth["at"] < min(others_done)
    for i in (1, 2, 3):
        got = outcome(results[i][0])
        assert got["events"] == alone["events"]
        assert got["usage"]["output_tokens"] == alone["usage"]["output_tokens"]
    assert outcome(results[4][0])["stop_reason"] == "end_turn"
    assert batch_empties(batch_core)


def test_a_failing_request_fails_alone_and_its_neighbours_finish(batch_core, force):
    # The force file's "fail" rule: the forced text, then an injected engine failure.
    force(rules=[{"match": "breaks", "say": "about to fail", "fail": True}, *RULES])
    reqs = [make_request("this one breaks"), make_request("long ok", max_tokens=60),
            make_request("alpha ok")]
    results = run_together(batch_core, reqs)
    failed = results[0][-1]
    assert isinstance(failed, Error) and failed.type != "cancelled"
    assert "injected failure" in failed.message
    assert outcome(results[1])["usage"]["output_tokens"] == 60
    assert outcome(results[2])["stop_reason"] == "end_turn"
    assert batch_empties(batch_core)
