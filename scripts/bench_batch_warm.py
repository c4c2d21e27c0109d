#!/usr/bin/env python3
"""One client, warm prefix: does the batched engine path cost anything when it runs alone?

Two EngineCores in one process on the same model directory (``--preset qwen2.5-0.5b``:
Qwen2.5-0.5B's layer shape, ``--layers`` of them), each with its own prefix cache: one
with ``batch_size`` 1 (stream_generate in the caller's thread), one with ``--batch`` (the
request goes through BatchRunner / mlx-lm's BatchGenerator even when it is alone). The
first prefills a ~``--tokens``-token Claude-Code-shaped prompt (cold) and both get that
cache; then, rounds interleaved, each gets that prompt + a new short user message (warm):
TTFT = the first Delta, in wall seconds and in CPU seconds of the process (which the
neighbours on a shared machine do not change much).

    .venv/bin/python scripts/bench_batch_warm.py [--tokens 5500] [--rounds 5] [--layers 8]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import claude_code_request  # noqa: E402


def internal(body: dict, text: str, max_tokens: int) -> dict:
    messages = body["messages"] + [{"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
                                   {"role": "user", "content": [{"type": "text", "text": text}]}]
    return {"model": "m", "system": [b["text"] for b in body["system"]], "tools": body["tools"],
            "tool_choice": None, "messages": messages, "max_tokens": max_tokens,
            "temperature": 0.0, "top_p": None, "top_k": None, "stop_sequences": [],
            "thinking": False}


def ttft(core, request) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to the first Delta."""
    from anyclaude.messages import Delta
    started, cpu, first = time.perf_counter(), time.process_time(), []

    def emit(msg):
        if isinstance(msg, Delta) and not first:
            first.append((time.perf_counter() - started, time.process_time() - cpu))
    core.generate(request, emit, lambda: False)
    return first[0] if first else (time.perf_counter() - started, time.process_time() - cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=5500)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--step", type=int, default=256)
    args = parser.parse_args()

    from anyclaude import blas
    if "LD_PRELOAD" not in os.environ and blas.find_openblas():   # as the engine process runs
        os.execve(sys.executable, [sys.executable, *sys.argv], blas.engine_env())
    from anyclaude.services.engine.mlx.generation import EngineCore
    from anyclaude.tinymodel import ensure_tiny_model
    model_dir = str(ensure_tiny_model(preset="qwen2.5-0.5b", layers=args.layers))
    cores = {name: EngineCore(model_dir, model_id="m", context_window=32768,
                              max_output_tokens=64, prefill_step_size=args.step,
                              memory_budget_mb=2048, batch_size=size)
             for name, size in (("one-at-a-time", 1), (f"batched ({args.batch})", args.batch))}
    counter = cores["one-at-a-time"]
    def make(scale: float) -> dict:
        return claude_code_request(random.Random(3), system_chars=int(6000 * scale), turns=1,
                                   description_chars=max(60, int(800 * scale)))
    size_at_1 = counter.count(internal(make(1.0), "warm up", 1))
    body = make(args.tokens / size_at_1)
    n = counter.count(internal(body, "warm up the cache", 1))
    print(f"model {model_dir}; prompt {n} tokens; prefill step {args.step}; "
          f"blas {blas.active_blas()}; load {os.getloadavg()[0]:.1f}", flush=True)
    first, second = cores.values()
    cold = internal(body, "warm up the cache", 1)
    took, _ = ttft(first, cold)
    print(f"cold TTFT {took:.2f} s (one-at-a-time; the batched core gets a copy of its cache)",
          flush=True)
    ids = first.renderer.render_prompt(cold).ids
    cache, reused, _ = first.prefix_cache.fetch(ids)     # one prefill serves both cores
    second.prefix_cache.store(ids[:reused], cache)
    times = {name: [] for name in cores}
    for r in range(args.rounds):
        order = list(cores) if r % 2 == 0 else list(cores)[::-1]
        for name in order:
            question = f"Round {r}: now look at module_{r}.py and tell me what it does, briefly."
            times[name].append(ttft(cores[name], internal(body, question, 1)))
    # CPU seconds of this process per request: what the path costs, whatever else the
    # (shared) machine runs; wall seconds vary with the neighbours' load.
    for name, got in times.items():
        wall, cpu = [w for w, _ in got], [c for _, c in got]
        print(f"{name:<16} warm TTFT median {statistics.median(wall):.3f} s wall "
              f"(min {min(wall):.3f}, max {max(wall):.3f}), CPU {statistics.median(cpu):.3f} s "
              f"(min {min(cpu):.3f}, max {max(cpu):.3f}), n {len(got)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
