#!/usr/bin/env python3
"""Many clients at once: anyclaude (continuous batching) beside mlx_lm.server, one run.

Both serve the same model directory: ``--preset smollm2`` is the default model
(SmolLM2-135M-Instruct's GGUF converted to float32 MLX: 30 layers), ``--preset qwen2.5-0.5b``
(built offline) has Qwen2.5-0.5B's layer shape, ``--layers`` of them, random weights. For each client count
(``--clients 1,2,4,8``) and each prompt kind, rounds alternate between the two servers
(interleaved, so a busy neighbour on a shared machine hits both alike). A round starts N
clients together, each streaming one reply of ``--tokens`` tokens at temperature 0:

- aggregate output tok/s: every output token of the round / wall time of the round
- TTFT p50 / max: time to the first content of each client's stream

Prompt kinds: ``short`` (a new one-line prompt per client) and ``shared`` (a
Claude-Code-shaped system prompt + tools of ~``--prefix`` tokens, the same for every
client, then a new one-line question; both servers cache the prefix once before timing).
Peak RSS of the engine process and of mlx_lm.server is sampled during each client count.

    .venv/bin/python scripts/bench_concurrency.py [--clients 1,2,4,8] [--rounds 2]
        [--tokens 64] [--layers 8] [--prefix 1500] [--concurrency 8] [--kinds short,shared]
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (BenchSystem, bench_model_dir, claude_code_request,  # noqa: E402
                      count_tokens, free_port, rss_mb, stream_messages)


def ask_mlx_server(port: int, model_dir: str, body: dict) -> tuple[float, int]:
    """(TTFT, output tokens) of one streamed chat completion from mlx_lm.server."""
    from anyclaude.services.engine.backends.openai_translate import chat_body
    internal = {**body, "system": [b["text"] for b in body.get("system") or []]}
    payload = json.dumps(chat_body(internal, model_name=model_dir, max_tokens=body["max_tokens"]))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1800)
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body=payload,
                 headers={"content-type": "application/json"})
    response = conn.getresponse()
    first, usage = None, {}
    for line in response:
        if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if first is None and (delta.get("content") or delta.get("tool_calls")):
                first = time.perf_counter() - start
    conn.close()
    return (first if first is not None else time.perf_counter() - start,
            int(usage.get("completion_tokens", 0)))


def ask_anyclaude(url: str, body: dict) -> tuple[float, int]:
    reply = stream_messages(url, body)
    return reply.ttft, int(reply.usage.get("output_tokens", 0))


def one_round(ask, bodies: list[dict]) -> dict:
    """All clients at once; aggregate tok/s and TTFTs."""
    results: list = [None] * len(bodies)
    barrier = threading.Barrier(len(bodies))

    def client(i: int) -> None:
        barrier.wait()
        try:
            results[i] = ask(bodies[i])
        except Exception as exc:   # a failed client is reported, not averaged away
            results[i] = exc

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:
        raise RuntimeError(f"{len(failed)} clients failed: {failed[0]}")
    return {"ttfts": [r[0] for r in results], "tokens": sum(r[1] for r in results), "wall": wall}


class PeakRss:
    """Samples the VmRSS of some pids every 0.2 s; ``take()`` returns and resets the peaks."""

    def __init__(self, pids: dict[str, int]):
        self.pids, self.peaks = pids, {k: 0.0 for k in pids}
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            for name, pid in self.pids.items():
                try:
                    self.peaks[name] = max(self.peaks[name], rss_mb(pid))
                except (OSError, RuntimeError):
                    pass
            time.sleep(0.2)

    def take(self) -> dict[str, float]:
        out, self.peaks = dict(self.peaks), {k: 0.0 for k in self.pids}
        return out


def bodies_for(kind: str, n: int, round_no: int, prefix: dict | None, tokens: int,
               model_id: str) -> list[dict]:
    out = []
    for i in range(n):
        question = f"Client {i}, round {round_no}, {n} clients: tell me a long story about " \
                   f"module_{i}_{round_no}.py and what each of its functions does."
        body = {"model": model_id, "max_tokens": tokens, "temperature": 0.0,
                "messages": [{"role": "user", "content": [{"type": "text", "text": question}]}]}
        if kind == "shared":
            body["system"], body["tools"] = prefix["system"], prefix["tools"]
        out.append(body)
    return out


def shared_prefix(url: str, tokens: int, model_id: str) -> tuple[dict, int]:
    """Claude Code's system prompt and 25 tools, the system text sized so that a shared
    request (prefix + a one-line question) is about ``tokens`` prompt tokens as this model's
    template renders it (a template that renders no tools, as SmolLM2's, gets a longer
    system text instead). Returns the prefix and the request's exact size."""
    def make(chars: int) -> dict:
        request = claude_code_request(random.Random(7), system_chars=chars, turns=0,
                                      description_chars=1600)
        return {"system": request["system"], "tools": request["tools"]}

    def size(prefix: dict) -> int:
        return count_tokens(url, bodies_for("shared", 1, 0, prefix, 8, model_id)[0])
    base, probe = size(make(0)), size(make(8000))
    chars = max(0, int((tokens - base) * 8000 / max(1, probe - base)))
    prefix = make(chars)
    return prefix, size(prefix)


def start_mlx_server(model_dir: str, step: int, concurrency: int) -> tuple[subprocess.Popen, int]:
    from anyclaude import blas
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlx_lm", "server", "--model", model_dir, "--port", str(port),
         "--prefill-step-size", str(step), "--decode-concurrency", str(concurrency),
         "--prompt-concurrency", str(concurrency), "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=blas.engine_env())  # same BLAS
    deadline = time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1):
                return server, port
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mlx_lm.server did not start")
            time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,2,4,8")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--preset", default="qwen2.5-0.5b", help="smollm2 or a tinymodel preset")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--prefix", type=int, default=1500, help="shared prefix tokens")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="anyclaude's models.<id>.concurrency and mlx_lm.server's "
                             "--decode/--prompt-concurrency")
    parser.add_argument("--step", type=int, default=256, help="prefill step, both servers")
    parser.add_argument("--kinds", default="short,shared")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    kinds = args.kinds.split(",")

    model_dir = str(bench_model_dir(args.preset, args.layers))
    home = Path(tempfile.mkdtemp(prefix="bench-concurrency-"))
    system = BenchSystem(home, Path(model_dir), model_id="bench", max_output_tokens=1024,
                         memory_budget_mb=1024, prefill_step_size=args.step,
                         concurrency=args.concurrency)
    system.up()
    server, port = start_mlx_server(model_dir, args.step, args.concurrency)
    sides = {"anyclaude": lambda body: ask_anyclaude(system.url, body),
             "mlx_lm.server": lambda body: ask_mlx_server(port, model_dir, body)}
    rss = PeakRss({"anyclaude": system.engine_pid(), "mlx_lm.server": server.pid})
    rows = []
    try:
        prefix = None
        if "shared" in kinds:
            prefix, prefix_tokens = shared_prefix(system.url, args.prefix, "bench")
            print(f"shared prefix: {prefix_tokens} prompt tokens with the question", flush=True)
            warm = bodies_for("shared", 1, -1, prefix, 1, "bench")[0]
            for ask in sides.values():   # both cache the shared prefix before any timing
                ask(warm)
        for kind in kinds:
            for n in clients:
                got = {side: [] for side in sides}
                rss.take()
                for r in range(args.rounds):
                    order = list(sides) if r % 2 == 0 else list(sides)[::-1]
                    for side in order:
                        bodies = bodies_for(kind, n, r, prefix, args.tokens, "bench")
                        got[side].append(one_round(sides[side], bodies))
                peaks = rss.take()
                for side, rounds in got.items():
                    ttfts = [t for rd in rounds for t in rd["ttfts"]]
                    rows.append({
                        "kind": kind, "clients": n, "side": side,
                        "tok_s": round(sum(rd["tokens"] for rd in rounds)
                                       / sum(rd["wall"] for rd in rounds), 2),
                        "ttft_p50": round(statistics.median(ttfts), 2),
                        "ttft_max": round(max(ttfts), 2),
                        "tokens": sum(rd["tokens"] for rd in rounds),
                        "peak_rss_mb": round(peaks[side])})
                    print(json.dumps(rows[-1]), flush=True)
    finally:
        server.terminate()
        system.down()
    print(f"\n{'kind':<7} {'clients':>7} {'side':<14} {'tok/s':>7} {'TTFT p50':>9} "
          f"{'TTFT max':>9} {'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['kind']:<7} {r['clients']:>7} {r['side']:<14} {r['tok_s']:>7} "
              f"{r['ttft_p50']:>9} {r['ttft_max']:>9} {r['peak_rss_mb']:>12}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
