#!/usr/bin/env python3
"""One client, warm prefix: does the batched engine path cost anything when it runs alone?

Two EngineCores in one process on the same model directory (``--preset qwen2.5-0.5b``:
Qwen2.5-0.5B's layer shape, ``--layers`` of them), each with its own prefix cache: one
with ``batch_size`` 1 (stream_generate in the caller's thread), one with ``--batch`` (the
request goes through BatchRunner / mlx-lm's BatchGenerator even when it is alone). Both
first prefill the same ~``--tokens``-token Claude-Code-shaped prompt (cold), then, rounds
interleaved, get that prompt + a new short user message (warm): TTFT = the first Delta.

    .venv/bin/python scripts/bench_batch_warm.py [--tokens 5500] [--rounds 5] [--layers 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import sized_request  # noqa: E402


def internal(body: dict, text: str, max_tokens: int) -> dict:
    messages = body["messages"] + [{"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
                                   {"role": "user", "content": [{"type": "text", "text": text}]}]
    return {"model": "m", "system": [b["text"] for b in body["system"]], "tools": body["tools"],
            "tool_choice": None, "messages": messages, "max_tokens": max_tokens,
            "temperature": 0.0, "top_p": None, "top_k": None, "stop_sequences": [],
            "thinking": False}


def ttft(core, request) -> float:
    from anyclaude.messages import Delta
    started, first = time.perf_counter(), []

    def emit(msg):
        if isinstance(msg, Delta) and not first:
            first.append(time.perf_counter() - started)
    core.generate(request, emit, lambda: False)
    return first[0] if first else time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=5500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--step", type=int, default=256)
    args = parser.parse_args()

    from anyclaude.services.engine.mlx.generation import EngineCore
    from anyclaude.tinymodel import ensure_tiny_model
    model_dir = str(ensure_tiny_model(preset="qwen2.5-0.5b", layers=args.layers))
    cores = {name: EngineCore(model_dir, model_id="m", context_window=32768,
                              max_output_tokens=64, prefill_step_size=args.step,
                              memory_budget_mb=2048, batch_size=size)
             for name, size in (("one-at-a-time", 1), (f"batched ({args.batch})", args.batch))}
    counter = cores["one-at-a-time"]
    body = sized_request(3, args.tokens, lambda b: counter.count(internal(b, "warm up", 1)))
    n = counter.count(internal(body, "warm up the cache", 1))
    print(f"model {model_dir}; prompt {n} tokens; prefill step {args.step}", flush=True)
    for name, core in cores.items():
        print(f"{name:<16} cold TTFT {ttft(core, internal(body, 'warm up the cache', 1)):.2f} s",
              flush=True)
    times = {name: [] for name in cores}
    for r in range(args.rounds):
        order = list(cores) if r % 2 == 0 else list(cores)[::-1]
        for name in order:
            question = f"Round {r}: now look at module_{r}.py and tell me what it does, briefly."
            times[name].append(ttft(cores[name], internal(body, question, 1)))
    for name, got in times.items():
        print(f"{name:<16} warm TTFT median {statistics.median(got):.3f} s "
              f"(min {min(got):.3f}, max {max(got):.3f}, n {len(got)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
