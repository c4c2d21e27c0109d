#!/usr/bin/env python
"""Prefix-cache behaviour of the optimizer over a simulated Claude Code session.

A 60-turn agentic session (big system prompt and tools, tool outputs from a few hundred
characters to 80 KB) runs against a small context window with a deterministic char-based
token counter (4 characters a token, the same stand-in chat template the tests use). Each
turn's prompt is compared with the previous turn's prompt plus its reply: the shared prefix
is what a prefix (KV) cache would reuse; the rest must be prefilled.

Policies, same conversation:
  optimizer  anyclaude.services.optimizer (the real code, fake counter)
  window     naive: tool outputs truncated to the same cap, then the longest pair-safe
             suffix of messages that fits (a sliding window)
  last-N     naive: tool outputs truncated, then the last N messages (may overflow)
  unlimited  reference ceiling: no fitting at all (ignores the window; shows how much of
             each prompt is new content that no cache can hold)

    .venv/bin/python scripts/bench_optimizer.py [--turns 60] [--window 16384] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import time

import structlog

from anyclaude.config import ModelConfig, RoutesConfig, Settings
from anyclaude.services.optimizer import plan as P
from anyclaude.services.optimizer.core import Optimizer, budget_for

CHARS_PER_TOKEN = 4


def render(request: dict) -> str:
    parts = ["<|system|>" + "\n\n".join(request["system"]),
             "<|tools|>" + json.dumps(request["tools"], ensure_ascii=False)]
    for message in request["messages"]:
        parts.append(f"<|{message['role']}|>")
        for block in message["content"]:
            if block["type"] == "text":
                parts.append(block["text"])
            elif block["type"] == "tool_use":
                parts.append(f"<call {block['id']} {block['name']}>" + json.dumps(block["input"]))
            elif block["type"] == "tool_result":
                parts.append(f"<result {block['tool_use_id']}>"
                             + "".join(c.get("text", "") for c in block["content"]))
    return "\n".join(parts)


def tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + 1


class Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self, request: dict) -> int:
        self.calls += 1
        return tokens(render(request))


# --- the simulated session -------------------------------------------------------------------

def words(rng: random.Random, n: int) -> str:
    vocab = ["def", "return", "self", "import", "class", "value", "error", "line", "file",
             "test", "config", "request", "=", "(", ")", ":", "\n", "    ", "#", "None"]
    out, size = [], 0
    while size < n:
        w = rng.choice(vocab)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n]


def session(turns: int, seed: int):
    """Yields (request messages so far, the assistant reply that will follow)."""
    rng = random.Random(seed)
    system = ["x-anthropic-billing-header: cc_version=2.1.3; cc_entrypoint=cli; cch=ab12;",
              "You are Claude Code, a coding agent.\n" + words(rng, 6000)]
    tools = [{"name": f"Tool{i}", "description": words(rng, 300),
              "input_schema": {"type": "object", "properties": {"arg": {"type": "string"}}}}
             for i in range(25)]
    messages = [{"role": "user", "content": [{"type": "text", "text": "Fix the failing tests. "
                                              + words(rng, 800)}]}]
    for turn in range(turns):
        call = f"toolu_{turn:03d}"
        reply = {"role": "assistant", "content": [
            {"type": "text", "text": words(rng, rng.randint(50, 600))},
            {"type": "tool_use", "id": call, "name": "Tool1", "input": {"arg": f"step {turn}"}}]}
        yield system, tools, list(messages), reply
        size = rng.choices([rng.randint(100, 2000), rng.randint(2000, 10000),
                            rng.randint(20000, 80000)], weights=[6, 3, 1])[0]
        output = [{"type": "text", "text": words(rng, size)}]
        result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call,
                                               "content": output, "is_error": False}]}
        if turn % 12 == 11:
            result["content"].append({"type": "text", "text": "Also: " + words(rng, 300)})
        messages += [reply, result]


# --- naive policies --------------------------------------------------------------------------

def truncate(messages: list[dict], cap_chars: int) -> list[dict]:
    out = []
    for m in messages:
        content = []
        for b in m["content"]:
            if b["type"] == "tool_result":
                t = "".join(c.get("text", "") for c in b["content"])
                if len(t) > cap_chars:
                    t = t[:cap_chars * 2 // 3] + "\n[… cut …]\n" + t[-(cap_chars // 3):]
                b = {**b, "content": [{"type": "text", "text": t}]}
            content.append(b)
        out.append({**m, "content": content})
    return out


def sliding_window(req: dict, budget: int, cap_chars: int) -> dict:
    msgs = truncate(req["messages"], cap_chars)
    for start in [0, *P.boundaries(msgs)]:
        candidate = {**req, "messages": msgs[start:]}
        if tokens(render(candidate)) <= budget:
            return candidate
    return {**req, "messages": msgs[-1:]}


def last_n(req: dict, n: int, cap_chars: int) -> dict:
    msgs = truncate(req["messages"], cap_chars)
    starts = [0, *P.boundaries(msgs)]
    start = next((s for s in starts if s >= len(msgs) - n), starts[-1])
    return {**req, "messages": msgs[start:]}


# --- measuring -------------------------------------------------------------------------------

class Track:
    def __init__(self, name: str, budget: int):
        self.name, self.budget = name, budget
        self.previous = ""          # last prompt + its reply, as rendered
        self.rows = []              # (prompt tokens, cached tokens)

    def turn(self, prompt_request: dict, reply: dict) -> None:
        prompt = render(prompt_request)
        cached = tokens(os.path.commonprefix([prompt, self.previous])) if self.previous else 0
        self.rows.append((tokens(prompt), min(cached, tokens(prompt))))
        self.previous = render({**prompt_request, "messages": [*prompt_request["messages"], reply]})

    def summary(self) -> dict:
        prompts = [p for p, _ in self.rows[1:]]
        cached = [c for _, c in self.rows[1:]]
        return {"policy": self.name,
                "hit_rate_mean": sum(c / p for p, c in self.rows[1:]) / len(prompts),
                "hit_rate_tokens": sum(cached) / sum(prompts),
                "prefill_tokens": sum(p - c for p, c in self.rows),
                "prompt_mean": sum(p for p, _ in self.rows) / len(self.rows),
                "prompt_max": max(p for p, _ in self.rows),
                "over_budget": sum(p > self.budget for p, _ in self.rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=60)
    parser.add_argument("--window", type=int, default=16384)
    parser.add_argument("--max-output", type=int, default=4096)
    parser.add_argument("--last-n", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())

    settings = Settings(models={"local": ModelConfig(context_window=args.window,
                                                     max_output_tokens=args.max_output)},
                        routes=RoutesConfig(default="local"))
    counter = Counter()
    optimizer = Optimizer(settings, counter)
    budget = budget_for(args.window, 32000, args.max_output, 0.25)
    cap_chars = int(budget * 0.2) * CHARS_PER_TOKEN
    tracks = {name: Track(name, budget)
              for name in ("optimizer", "window", f"last-{args.last_n}", "unlimited")}
    cuts, elapsed = 0, 0.0
    print(f"window {args.window}, budget {budget} prompt tokens, {args.turns} turns\n")
    print(f"{'turn':>4} {'msgs':>4} | {'optimizer':>16} | {'window':>16} | {'last-N':>16}")
    for turn, (system, tools, messages, reply) in enumerate(session(args.turns, args.seed)):
        req = {"model": "local", "requested_model": "claude-sonnet-4-5", "system": system,
               "tools": tools, "messages": messages, "server_tools": [], "tool_choice": None,
               "max_tokens": 32000, "thinking": False}
        started = time.perf_counter()
        fitted, notes = optimizer.optimize(req)
        elapsed += time.perf_counter() - started
        cut = any(n.get("action") == "cut" for n in notes)
        cuts += cut
        clean = {**req, "system": system[1:]}   # the naive policies get hygiene for free
        tracks["optimizer"].turn(fitted, reply)
        tracks["window"].turn(sliding_window(clean, budget, cap_chars), reply)
        tracks[f"last-{args.last_n}"].turn(last_n(clean, args.last_n, cap_chars), reply)
        tracks["unlimited"].turn(clean, reply)
        if turn % 5 == 0 or cut:
            cells = []
            for track in list(tracks.values())[:3]:
                p, c = track.rows[-1]
                cells.append(f"{p:>6} tok {c / p:>5.0%}")
            print(f"{turn:>4} {len(messages):>4} | " + " | ".join(cells) + ("  cut" if cut else ""))
    print()
    print(f"{'policy':>10} {'hit(mean)':>10} {'hit(tok)':>9} {'prefill':>9} {'prompt':>8} "
          f"{'max':>6} {'over':>5}")
    for track in tracks.values():
        s = track.summary()
        print(f"{s['policy']:>10} {s['hit_rate_mean']:>10.1%} {s['hit_rate_tokens']:>9.1%} "
              f"{s['prefill_tokens']:>9} {s['prompt_mean']:>8.0f} {s['prompt_max']:>6} "
              f"{s['over_budget']:>5}")
    print(f"\noptimizer: {cuts} cuts in {args.turns} turns, {counter.calls} exact counts "
          f"({counter.calls / args.turns:.2f} per turn), {elapsed / args.turns * 1000:.1f} ms "
          "per request")


if __name__ == "__main__":
    main()
