#!/usr/bin/env python
"""Whole-system prefix-cache benchmark: anyclaude (HTTP, every process) vs mlx_lm.server.

On one Claude-Code-shaped prompt (a long system text, 25 tools with long descriptions, a
few tool-using turns; --tokens of it), both servers on the same model, same BLAS, same
prefill step, streaming; TTFT = the first content delta (max_tokens small):

    cold      a fresh server, nothing cached
    warm      the same prefix + a new user message of ~--new tokens (median of --rounds,
              the two servers interleaved)
    restart   the first request after `anyclaude restart engine-<id>` (the prefix comes
              from the kvstore on disk: the restarted engine preloads the most recently
              used file, else the request looks it up; median of --restarts) / after
              mlx_lm.server was stopped and started again (it has no disk tier)

then the anyclaude engine's RSS over --rss-requests mixed requests (some sharing the long
prefix, some continuing earlier conversations, some unrelated), sampled every 10.

    .venv/bin/python scripts/bench_system_cache.py [--tokens 16384] [--new 100] [--rounds 5]
        [--preset tiny|smollm2|qwen2.5-0.5b [--layers N] | --model-dir DIR] [--concurrency N]
        [--memory-budget-mb 512] [--step 256] [--block 64]
        [--restarts 2] [--rss-requests 100] [--skip-mlx-server] [--keep]

A full run on a 2-core CPU takes 6-11 minutes; --tokens 8192 --rss-requests 30 about 2.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

SAY = "ok"


# --- the mlx_lm.server side ---------------------------------------------------------------------

class MlxServer:
    """`python -m mlx_lm.server` on the same model, with the engine's BLAS environment."""

    def __init__(self, model_dir: Path, args, log_dir: Path):
        from anyclaude.blas import engine_env
        self.model_dir, self.args, self.log_dir = model_dir, args, log_dir
        self.env = engine_env()
        self.port = B.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.log_dir / f"mlx_lm.server.{self.starts}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlx_lm.server", "--model", str(self.model_dir),
             "--port", str(self.port), "--prefill-step-size", str(self.args.step),
             "--prompt-cache-bytes", str(self.args.memory_budget_mb * 2**20),
             "--log-level", "WARNING"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlx_lm.server exited: see {log.name}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("mlx_lm.server not ready after 180 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def blas(self) -> str:
        from anyclaude.blas import active_blas
        return active_blas(f"/proc/{self.proc.pid}/maps")


def stream_openai(url: str, body: dict, timeout: float = 1800) -> B.Streamed:
    """POST /v1/chat/completions with stream: true (mlx_lm.server); TTFT is the first chunk
    carrying content, reasoning or a tool call."""
    started = time.perf_counter()
    conn, response = B.post(url, "/v1/chat/completions",
                            {**body, "stream": True, "stream_options": {"include_usage": True}},
                            {}, timeout)
    out = B.Streamed(ttft=0.0, total=0.0)
    try:
        for _, data in B.sse(response):
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                u = chunk["usage"]
                cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
                out.usage = {"input_tokens": u["prompt_tokens"] - cached,
                             "cache_read_input_tokens": cached,
                             "output_tokens": u.get("completion_tokens", 0)}
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                got = delta.get("content") or delta.get("reasoning") or delta.get("tool_calls")
                if got and not out.ttft:
                    out.ttft = time.perf_counter() - started
                out.text += delta.get("content") or ""
                out.stop_reason = choice.get("finish_reason") or out.stop_reason
    finally:
        conn.close()
    out.total = time.perf_counter() - started
    if not out.ttft:
        raise RuntimeError(f"no content in the reply (usage {out.usage})")
    return out


def to_openai(body: dict) -> dict:
    """The same request for an OpenAI-compatible server, rendered the way the anyclaude
    engine renders it (its own mapping code), so both sides prefill the same tokens."""
    from anyclaude.prompt.template import chat_tools, to_chat_messages
    internal = {**body, "system": [b["text"] if isinstance(b, dict) else b
                                   for b in body.get("system") or []],
                "messages": [{**m, "content": _blocks(m["content"])} for m in body["messages"]]}
    out = {"model": "default_model", "messages": to_chat_messages(internal),
           "max_tokens": body["max_tokens"], "temperature": 0.0,
           "chat_template_kwargs": {"enable_thinking": False}}
    tools = chat_tools(internal)
    if tools:
        out["tools"] = tools
    return out


def _blocks(content) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    out = []
    for b in content:
        if b.get("type") == "tool_result" and isinstance(b.get("content"), str):
            b = {**b, "content": [{"type": "text", "text": b["content"]}]}
        out.append(b)
    return out


# --- requests ------------------------------------------------------------------------------------

def conversation(base: dict, *extra: dict) -> dict:
    return {**base, "messages": [*base["messages"], *extra]}


def reply(text: str = SAY) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def new_message(seed: int, tokens: int) -> dict:
    # ~3 characters a token with the tiny model's tokenizer; exact counts are printed
    return B.user_text(random.Random(seed), tokens * 3)


def forced_token(model_dir: Path) -> int:
    from mlx_lm.tokenizer_utils import load
    return load(model_dir).encode(SAY, add_special_tokens=False)[0]


def fmt(seconds: float) -> str:
    return f"{seconds:8.3f} s"


# --- phase 1: TTFT on both servers -----------------------------------------------------------

def ttft_phase(args, system: B.BenchSystem, mlx: MlxServer | None, base: dict, bias: dict):
    def ours(body):
        return B.stream_messages(system.url, body)

    def theirs(body):
        return stream_openai(mlx.url, {**to_openai(body), "logit_bias": bias})

    servers = [("anyclaude", ours)] + ([("mlx_lm.server", theirs)] if mlx else [])
    warmup = {"model": "claude-sonnet-4-6", "max_tokens": 4,
              "messages": [B.user_text(random.Random(99), 600)]}
    for _, send in servers:            # compile kernels and the sampler: not part of "cold"
        send(warmup)
    results = {name: {"cold": []} for name, _ in servers}
    # Two cold prompts (different tools text, nothing shared), ABBA order against drift;
    # the warm rounds then extend the last one.
    other = B.sized_request(2, args.tokens, lambda b: B.count_tokens(system.url, b))
    for body, order in ((other, servers), (base, servers[::-1])):
        for name, send in order:
            r = send(body)
            results[name]["cold"].append(r)
            print(f"  {name:14} cold   {fmt(r.ttft)}  prompt {r.input_total} tokens, "
                  f"cached {r.cache_read}", flush=True)
    warm = {name: [] for name, _ in servers}
    for i in range(args.rounds):
        body = conversation(base, reply(), new_message(1000 + i, args.new))
        for name, send in servers:
            r = send(body)
            warm[name].append(r)
    for name, _ in servers:
        rs = warm[name]
        results[name]["warm"] = rs
        print(f"  {name:14} warm   {fmt(statistics.median(r.ttft for r in rs))}  (median of "
              f"{len(rs)}: {', '.join(f'{r.ttft:.3f}' for r in rs)}; prompt "
              f"{rs[0].input_total}, cached {rs[0].cache_read})", flush=True)
    return results, warm


def restart_phase(args, system: B.BenchSystem, mlx: MlxServer | None, base: dict, bias: dict,
                  results: dict) -> dict:
    """The first request after a restart: anyclaude --restarts times (each with another new
    message, the same long prefix), mlx_lm.server once (it has nothing to load: a cold run)."""
    runs, counters = [], {}
    for i in range(args.restarts):
        body = conversation(base, reply(), new_message(2000 + i, args.new))
        kv_before = system.kvstore_settled()
        old_pid = system.engine_pid()
        system.restart(system.engine)
        fresh = system.service(system.engine)
        counters.setdefault("fresh_rss", B.rss_mb(fresh["pid"]))   # model loaded, nothing cached
        r = B.stream_messages(system.url, body)
        engine = system.engine_info(completed=1)     # counters arrive with the next heartbeat
        kv = system.service("kvstore")["info"]
        runs.append(r)
        print(f"  {'anyclaude':14} restart{fmt(r.ttft)}  prompt {r.input_total}, cached "
              f"{r.cache_read}, prefilled {r.input_total - r.cache_read} (engine pid {old_pid} -> "
              f"{fresh['pid']}; engine cache.disk_hits {fresh['info']['cache'].get('disk_hits', 0)}"
              f" -> {engine['cache'].get('disk_hits', 0)}, kvstore hits {kv_before.get('hits', 0)}"
              f" -> {kv.get('hits', 0)}, preloads {kv_before.get('preloads', 0)} -> "
              f"{kv.get('preloads', 0)}, kvstore {kv.get('entries')} files / "
              f"{kv.get('bytes', 0) / 2**20:.0f} MB)", flush=True)
    results["anyclaude"]["restart"] = runs
    if mlx:
        mlx.stop()
        mlx.start()
        r = stream_openai(mlx.url, {**to_openai(body), "logit_bias": bias})
        results["mlx_lm.server"]["restart"] = [r]
        print(f"  {'mlx_lm.server':14} restart{fmt(r.ttft)}  prompt {r.input_total}, cached "
              f"{r.cache_read}", flush=True)
    return counters


# --- phase 2: engine RSS over mixed requests ----------------------------------------------------

def mixed_requests(args, base: dict, n: int):
    """(kind, request) x n: 'fresh' shares the long system+tools prefix with a new
    conversation, 'continue' extends an earlier one, 'other' shares nothing."""
    rng = random.Random(7)
    convos: list[dict] = []
    for i in range(n):
        kind = rng.choices(["fresh", "continue", "other"], weights=[4, 3, 3])[0]
        if kind == "continue" and not convos:
            kind = "fresh"
        if kind == "fresh":
            body = {**base, "messages": [B.user_text(rng, rng.randint(600, 4000))]}
            convos.append(body)
        elif kind == "continue":
            j = rng.randrange(max(0, len(convos) - 4), len(convos))
            call = f"toolu_{i:04d}"
            body = conversation(convos[j], {"role": "assistant", "content": [
                {"type": "tool_use", "id": call, "name": "Read", "input": {"file_path": "/a.py"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call,
                 "content": [{"type": "text", "text": B.code_output(rng, rng.randint(500, 4000))}]}]})
            convos[j] = conversation(body, reply())
        else:
            body = {"model": "claude-haiku-4-5", "max_tokens": 8,
                    "system": [{"type": "text", "text": f"Summarize session {i}. "
                                + B.prose(rng, rng.randint(300, 1500))}],
                    "messages": [B.user_text(rng, rng.randint(900, 9000))]}
        yield kind, body


def mlx_peak_mb(system: B.BenchSystem) -> float:
    """The engine's MLX peak memory (process lifetime), from its last engine.generate.done."""
    peak = 0.0
    with open(system.home / "logs" / f"{system.engine}.log") as f:
        for line in f:
            if '"engine.generate.done"' in line:
                peak = json.loads(line).get("peak_mb") or peak
    return peak


def rss_phase(args, system: B.BenchSystem, base: dict) -> dict:
    pid = system.engine_pid()
    samples = []

    def sample(done: int) -> None:
        cache = system.service(system.engine)["info"]["cache"]
        samples.append({"requests": done, "rss_mb": round(B.rss_mb(pid), 1),
                        "cache_mb": round(cache.get("bytes", 0) / 2**20, 1),
                        "entries": cache.get("entries", 0), "peak_mb": mlx_peak_mb(system)})
        s = samples[-1]
        print(f"  after {done:3} requests: engine RSS {s['rss_mb']:7.1f} MB, prefix cache "
              f"{s['cache_mb']:6.1f} MB in {s['entries']} entries, MLX peak so far "
              f"{s['peak_mb']:6.1f} MB", flush=True)

    sample(0)
    kinds: dict[str, int] = {}
    started = time.monotonic()
    for i, (kind, body) in enumerate(mixed_requests(args, base, args.rss_requests), 1):
        B.stream_messages(system.url, body)
        kinds[kind] = kinds.get(kind, 0) + 1
        if i % 10 == 0:
            sample(i)
    if system.engine_pid() != pid:
        raise RuntimeError("the engine restarted during the RSS phase")
    return {"samples": samples, "kinds": kinds, "seconds": time.monotonic() - started}


# --- report ----------------------------------------------------------------------------------------

def cold_of(res: dict) -> float:
    return statistics.mean(r.ttft for r in res["cold"])


def warm_of(res: dict) -> float:
    return statistics.median(r.ttft for r in res["warm"])


def restart_of(res: dict) -> float:
    return statistics.median(r.ttft for r in res["restart"])


def report(args, results: dict, counters: dict, rss: dict | None, blas: dict,
           baseline_rss: float) -> None:
    print("\n| server | BLAS | prompt tokens | cold TTFT (mean of 2) | warm TTFT (+new, median) "
          "| TTFT after restart (median) | cold/warm | cold/restart |")
    print("|---|---|---|---|---|---|---|---|")
    for name, res in results.items():
        c, w, rs = cold_of(res), warm_of(res), restart_of(res)
        print(f"| {name} | {blas[name]} | {res['cold'][-1].input_total} | {c:.2f} s | {w:.3f} s "
              f"| {rs:.3f} s | {c / w:.0f}x | {c / rs:.0f}x |")
    print()
    a = results["anyclaude"]
    cold, warm, restart = cold_of(a), warm_of(a), restart_of(a)
    goals = []
    if "mlx_lm.server" in results:
        m = results["mlx_lm.server"]
        goals += [("warm within 10% of mlx_lm.server warm", warm <= 1.10 * warm_of(m),
                   f"{warm / warm_of(m):.2f}x of it"),
                  ("cold no slower than mlx_lm.server cold", cold <= cold_of(m),
                   f"{cold / cold_of(m):.2f}x of it")]
    goals.append(("after restart >= 50x faster than cold", cold / restart >= 50,
                  f"{cold / restart:.0f}x"))
    for what, ok, value in goals:
        print(f"goal: {what:42} {'MET' if ok else 'NOT MET'} ({value})")
    if rss:
        s = rss["samples"]
        values = [x["rss_mb"] for x in s]
        # RSS follows the MLX high-water mark (freed buffers stay mapped): growth that is
        # not a new peak is what would grow per request
        flat = [(b["rss_mb"] - a["rss_mb"], b["requests"] - a["requests"])
                for a, b in zip(s[1:], s[2:]) if b["peak_mb"] == a["peak_mb"]]
        grown, over = sum(d for d, _ in flat), sum(n for _, n in flat)
        print(f"\nengine RSS over {s[-1]['requests']} mixed requests ({rss['kinds']}, "
              f"{rss['seconds']:.0f} s): model loaded {baseline_rss:.0f} MB, cache budget "
              f"{args.memory_budget_mb} MB, RSS max {max(values):.0f} MB = loaded + budget "
              f"{max(values) - baseline_rss - args.memory_budget_mb:+.0f} MB; over the {over} "
              f"requests that set no new MLX peak RSS changed {grown:+.0f} MB "
              f"({grown / max(1, over):+.2f} MB/request)")
        print("| requests | " + " | ".join(str(x["requests"]) for x in s) + " |")
        print("|---|" + "---|" * len(s))
        print("| RSS MB | " + " | ".join(f"{x['rss_mb']:.0f}" for x in s) + " |")
        print("| prefix cache MB | " + " | ".join(f"{x['cache_mb']:.0f}" for x in s) + " |")
        print("| MLX peak MB | " + " | ".join(f"{x['peak_mb']:.0f}" for x in s) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16384, help="prompt tokens (cold)")
    parser.add_argument("--new", type=int, default=100, help="new tokens per warm request")
    parser.add_argument("--rounds", type=int, default=5, help="warm requests per server")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--layers", type=int, default=None, help="layers of the preset")
    parser.add_argument("--concurrency", type=int, default=0,
                        help="anyclaude's models.<id>.concurrency (0: the default)")
    parser.add_argument("--model-dir", default="")
    parser.add_argument("--memory-budget-mb", type=int, default=512)
    parser.add_argument("--step", type=int, default=256, help="prefill step, both servers")
    parser.add_argument("--block", type=int, default=64, help="cache.block_tokens")
    parser.add_argument("--restarts", type=int, default=2, help="engine restarts measured")
    parser.add_argument("--rss-requests", type=int, default=100)
    parser.add_argument("--skip-mlx-server", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temp home (logs)")
    args = parser.parse_args()
    args.restarts = max(1, args.restarts)

    model_dir = Path(args.model_dir) if args.model_dir else B.bench_model_dir(args.preset,
                                                                               args.layers)
    home = Path(tempfile.mkdtemp(prefix="bench-system-"))
    system = B.BenchSystem(home, model_dir, context_window=max(32768, args.tokens * 2),
                           memory_budget_mb=args.memory_budget_mb, prefill_step_size=args.step,
                           block_tokens=args.block, concurrency=args.concurrency)
    mlx = None if args.skip_mlx_server else MlxServer(model_dir, args, home)
    started = time.monotonic()
    try:
        system.up()
        system.say(otherwise=SAY)
        blas = {"anyclaude": system.service(system.engine)["info"]["blas"]}
        if mlx:
            mlx.start()
            blas["mlx_lm.server"] = mlx.blas()
        base = B.sized_request(1, args.tokens, lambda b: B.count_tokens(system.url, b))
        print(f"model {args.model_dir or args.preset} ({model_dir}), prompt ~{args.tokens} tokens "
              f"({len(base['tools'])} tools, {len(json.dumps(base['tools'])) // 1024} KB of tool "
              f"JSON), +{args.new} new per warm request, prefill step {args.step}, BLAS {blas}, "
              f"cache budget {args.memory_budget_mb} MB, block {args.block} tokens, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
        bias = {str(forced_token(model_dir)): 100.0}
        results, _ = ttft_phase(args, system, mlx, base, bias)
        counters = restart_phase(args, system, mlx, base, bias, results)
        if mlx:
            mlx.stop()
        rss = None
        if args.rss_requests:
            print(f"engine RSS over {args.rss_requests} mixed requests:", flush=True)
            rss = rss_phase(args, system, base)
        report(args, results, counters, rss, blas, counters["fresh_rss"])
        print(f"\ntotal {time.monotonic() - started:.0f} s, load average now "
              f"{os.getloadavg()[0]:.1f} (other processes share the CPUs)")
    finally:
        if mlx:
            mlx.stop()
        system.down()
        if args.keep:
            print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
