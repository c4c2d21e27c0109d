#!/usr/bin/env python3
"""What the openai-kind engine adds in front of an OpenAI-compatible server (mlx_lm.server).

Starts mlx_lm.server on a model built offline (the tiny test model by default, or
``--preset qwen2.5-0.5b`` for Qwen2.5-0.5B's layer shape) and an engine process whose model
is kind openai with that server as base_url, then, in the same run:

1. time to first content: ``--requests`` short requests straight to the server (HTTP,
   time until the first chunk carrying text) and as many through the engine (bus
   Generate, time until the first Delta), interleaved; every prompt is new, so each side
   gets the same cache state (the shared system prompt cached, the rest not). The added
   latency is the difference of the medians.
2. prefix-cache hit rate over a ``--turns``-turn session, each turn appending the model's
   reply and a new user message, directly (usage.prompt_tokens_details.cached_tokens /
   prompt_tokens) and through the engine (cache_read_input_tokens / all input tokens).

    .venv/bin/python scripts/bench_backends.py [--requests 20] [--turns 10] [--preset tiny]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = ("You are a careful coding assistant working in a large repository. " * 40).strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(check, what: str, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.2)


def request(system: str, turns: list[dict], max_tokens: int) -> dict:
    return {"model": "up", "system": [system], "tools": [], "tool_choice": None,
            "messages": turns, "max_tokens": max_tokens, "temperature": 0.0, "top_p": None,
            "top_k": None, "stop_sequences": [], "thinking": False}


def user(text: str) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


# --- the two paths ----------------------------------------------------------------------

def direct(port: int, model_dir: str, internal: dict) -> tuple[float, str, dict]:
    """(seconds to the first text chunk, the text, usage) straight from mlx_lm.server."""
    from anyclaude.services.engine.backends.openai_translate import chat_body
    body = json.dumps(chat_body(internal, model_name=model_dir, max_tokens=internal["max_tokens"]))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body=body,
                 headers={"content-type": "application/json"})
    response = conn.getresponse()
    first, text, usage = None, [], {}
    for line in response:
        if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                first = first if first is not None else time.perf_counter() - start
                text.append(piece)
    conn.close()
    return (first if first is not None else time.perf_counter() - start), "".join(text), usage


def engine(client, internal: dict) -> tuple[float, str, dict]:
    """(seconds to the first Delta, the text, usage) through the engine over the bus."""
    from anyclaude import messages
    start = time.perf_counter()
    first, text, usage = None, [], {}
    for frame in client.stream(messages.Generate(internal)):
        if isinstance(frame, messages.Delta):
            first = first if first is not None else time.perf_counter() - start
            text += [e["text"] for e in frame.events if e["type"] == "text"]
        elif isinstance(frame, messages.Done):
            usage = frame.usage
    return (first if first is not None else time.perf_counter() - start), "".join(text), usage


def session(run_turn, system: str, turns: int) -> list[tuple[int, int]]:
    """(cached, total prompt tokens) per turn of a growing conversation."""
    history, out = [], []
    for i in range(turns):
        history.append(user(f"Step {i}: look at module_{i}.py and tell me what it does."))
        _, text, (cached, total) = run_turn(request(system, history, 24))
        history.append({"role": "assistant", "content": [{"type": "text", "text": text or "ok"}]})
        out.append((cached, total))
    return out


def rate(rows: list[tuple[int, int]]) -> float:
    later = rows[1:]
    return sum(c for c, _ in later) / max(1, sum(t for _, t in later))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--preset", default="tiny")
    args = parser.parse_args()

    from anyclaude.tinymodel import ensure_tiny_model
    work = Path(tempfile.mkdtemp(prefix="bench-backends-"))
    model_dir = str(ensure_tiny_model(preset=args.preset))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlx_lm", "server", "--model", model_dir,
                               "--port", str(port), "--log-level", "WARNING"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (work / "anyclaude.toml").write_text(
        f'[models.up]\nkind = "openai"\nbase_url = "http://127.0.0.1:{port}/v1"\npath = "{model_dir}"\n'
        f'context_window = 32768\nmax_output_tokens = 256\n[logging]\ndir = "{work / "logs"}"\n')
    run_dir = tempfile.mkdtemp(prefix="acb", dir="/tmp")
    env = {**os.environ, "ANYCLAUDE_RUN_DIR": run_dir, "ANYCLAUDE_CONFIG": str(work / "anyclaude.toml")}
    os.environ["ANYCLAUDE_RUN_DIR"] = run_dir
    proc = subprocess.Popen([sys.executable, "-m", "anyclaude.services.engine", "--model", "up"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from anyclaude import bus, errors, messages
    client = bus.Client("engine-up")
    try:
        def up() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1):
                    return True
            except OSError:
                return False

        def engine_ready() -> bool:
            try:
                client.request(messages.Count(request("x", [user("x")], 1)), timeout=5)
                return True
            except errors.AnyclaudeError:
                client.reset()
                return False

        wait(up, "mlx_lm.server", server)
        wait(engine_ready, "engine-up", proc)

        for i in range(3):   # warm up both paths and cache the shared system prompt
            direct(port, model_dir, request(SYSTEM, [user(f"warm {i}")], 4))
            engine(client, request(SYSTEM, [user(f"warm engine {i}")], 4))
        times = {"direct": [], "engine": []}
        for i in range(args.requests):
            order = ("direct", "engine") if i % 2 == 0 else ("engine", "direct")
            for route in order:
                internal = request(SYSTEM, [user(f"Question {i} via {route}: what is {i} + {i}?")], 8)
                took = (direct(port, model_dir, internal) if route == "direct"
                        else engine(client, internal))
                times[route].append(took[0])

        def direct_turn(internal):
            first, text, usage = direct(port, model_dir, internal)
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
            return first, text, (cached, usage.get("prompt_tokens", 0))

        def engine_turn(internal):
            first, text, usage = engine(client, internal)
            cached = usage.get("cache_read_input_tokens", 0)
            return first, text, (cached, cached + usage.get("input_tokens", 0))

        direct_rows = session(direct_turn, "Session A. " + SYSTEM, args.turns)
        engine_rows = session(engine_turn, "Session B. " + SYSTEM, args.turns)
        ms = 1000
        report = {
            "model": f"{args.preset} (mlx_lm.server, CPU)", "requests_each": args.requests,
            "first_content_ms": {
                "direct_p50": round(statistics.median(times["direct"]) * ms, 2),
                "engine_p50": round(statistics.median(times["engine"]) * ms, 2),
                "added_p50": round((statistics.median(times["engine"])
                                    - statistics.median(times["direct"])) * ms, 2)},
            "session": {"turns": args.turns,
                        "direct_hit_rate_turns_2_on": round(rate(direct_rows), 3),
                        "engine_hit_rate_turns_2_on": round(rate(engine_rows), 3),
                        "direct_per_turn": " ".join(f"{c}/{t}" for c, t in direct_rows),
                        "engine_per_turn": " ".join(f"{c}/{t}" for c, t in engine_rows)},
        }
        print(json.dumps(report, indent=2))
    finally:
        client.close()
        for p in (proc, server):
            p.terminate()
        for p in (proc, server):
            p.wait(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
