#!/usr/bin/env python
"""A long agentic session through the whole system on a small context window: the
optimizer's fitting vs a naive client that keeps the last N messages itself.

Two sessions of the same shape (system, tools, a tool call each turn answered with a
1-4 KB tool output, a summary and a new user message every fifth result), each with its
own system text so they share no cache, run turn by turn interleaved (so background load
hits both alike) against one anyclaude system:

    optimizer   the client sends the whole conversation; the optimizer fits it
    last-N      the client sends the last N messages (fewer if they do not fit the
                window, counted with the engine's own tokenizer and template), so the
                optimizer never has to cut

Per policy: prefix-cache hit rate (cache_read_input_tokens / all input tokens), TTFT
(first content delta) mean / p50 / p95, prefill tokens in all, optimizer cuts.

    .venv/bin/python scripts/bench_long_session.py [--turns 40] [--window 8192] [--last-n 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

MAX_TOKENS = 64


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Policy:
    def __init__(self, name: str, session: B.AgentSession, pick):
        self.name, self.session, self.pick = name, session, pick
        self.turns: list[dict] = []
        self.cuts = 0


def naive_pick(count, budget: int, n: int):
    def pick(messages: list[dict], session: B.AgentSession) -> list[dict]:
        k = n
        while True:
            chosen = B.last_n(messages, k)
            if count(session.body(chosen, MAX_TOKENS)) <= budget or len(chosen) <= 1:
                return chosen
            k -= 1
    return pick


def run(args, system: B.BenchSystem, policies: list[Policy], count) -> None:
    for turn in range(1, args.turns + 1):
        for p in policies:
            messages = p.pick(p.session.messages, p.session)
            before = system.service("optimizer")["info"]["cuts"]
            reply = B.stream_messages(system.url, p.session.body(messages, MAX_TOKENS))
            cut = system.service("optimizer")["info"]["cuts"] - before
            p.cuts += cut
            full = count(p.session.body(None, MAX_TOKENS))
            p.turns.append({"ttft": reply.ttft, "input": reply.input_total,
                            "cached": reply.cache_read, "sent": len(messages),
                            "full": full, "cut": cut})
            p.session.add_reply(reply.blocks)
        line = "  ".join(f"{p.name} {p.turns[-1]['input']:5}/{p.turns[-1]['cached']:5} "
                         f"{p.turns[-1]['ttft']:6.2f}s{'*' if p.turns[-1]['cut'] else ' '}"
                         for p in policies)
        print(f"turn {turn:3}  conversation {policies[0].turns[-1]['full']:6} tokens  {line}",
              flush=True)


def report(policies: list[Policy]) -> None:
    print("\n(per turn above: prompt tokens sent / read from the cache, TTFT; * = the "
          "optimizer cut)\n")
    print("| policy | turns | hit rate | TTFT mean | TTFT p50 | TTFT p95 | prefill tokens "
          "| optimizer cuts |")
    print("|---|---|---|---|---|---|---|---|")
    for p in policies:
        t = p.turns
        ttft = [x["ttft"] for x in t]
        rate = sum(x["cached"] for x in t) / sum(x["input"] for x in t)
        prefill = sum(x["input"] - x["cached"] for x in t)
        print(f"| {p.name} | {len(t)} | {rate:.3f} | {statistics.mean(ttft):.2f} s | "
              f"{percentile(ttft, 0.5):.2f} s | {percentile(ttft, 0.95):.2f} s | {prefill} "
              f"| {p.cuts} |")
    rest = [p.turns[1:] for p in policies]
    print("\nwithout the first (cold) turn: " + ", ".join(
        f"{p.name} hit rate {sum(x['cached'] for x in r) / sum(x['input'] for x in r):.3f}, "
        f"TTFT mean {statistics.mean(x['ttft'] for x in r):.2f} s"
        for p, r in zip(policies, rest)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--window", type=int, default=8192, help="context_window (tokens)")
    parser.add_argument("--last-n", type=int, default=10, help="messages the naive client keeps")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--model-dir", default="")
    parser.add_argument("--keep", action="store_true", help="keep the temp home (logs)")
    args = parser.parse_args()

    from anyclaude.tinymodel import ensure_tiny_model
    model_dir = Path(args.model_dir) if args.model_dir else ensure_tiny_model(preset=args.preset)
    home = Path(tempfile.mkdtemp(prefix="bench-long-"))
    system = B.BenchSystem(home, model_dir, context_window=args.window, max_output_tokens=256,
                           memory_budget_mb=512, block_tokens=64)
    count = B.local_counter(model_dir)
    budget = args.window - MAX_TOKENS      # the optimizer's budget for this max_tokens
    shape = dict(system_chars=1500, n_tools=6, description_chars=400, output_chars=(1000, 4000))
    policies = [
        Policy("optimizer", B.AgentSession(args.seed, label="[A] ", **shape),
               lambda messages, session: messages),
        Policy(f"last-{args.last_n}", B.AgentSession(args.seed, label="[B] ", **shape),
               naive_pick(count, budget, args.last_n)),
    ]
    started = time.monotonic()
    try:
        system.up()
        B.force_agent(system)
        print(f"model {args.model_dir or args.preset}, window {args.window}, {args.turns} turns, "
              f"BLAS {system.service(system.engine)['info']['blas']}, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        run(args, system, policies, count)
        report(policies)
        print(f"\ntotal {time.monotonic() - started:.0f} s, load average now "
              f"{os.getloadavg()[0]:.1f} (other processes share the CPUs)")
    finally:
        system.down()
        if args.keep:
            print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
