"""Prefix-cache benchmark, direct (no HTTP): time to first token for a long prompt

    cold    nothing cached: prefill all N tokens
    warm    the same N-token prefix + NEW tokens, prefix from the engine's memory cache
    disk    the same, in a fresh process whose memory cache is empty: prefix from the
            kvstore (a real kvstore process), loaded and checked, then NEW tokens prefilled

    .venv/bin/python scripts/bench_cache.py [--tokens 16384] [--new 100] [--preset tiny]

The engine's BLAS is used (OpenBLAS through LD_PRELOAD when the system has it: the script
re-executes itself with the engine's environment). Token ids are random; no tokenizer.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "kvstore"))


def ttft(model, ids, cache, reused, step) -> tuple[float, int]:
    """Seconds until the first generated token (prefill of ids[reused:] + one step)."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step
    started = time.perf_counter()
    gen = generate_step(mx.array(ids[reused:]), model, prompt_cache=cache, max_tokens=1,
                        prefill_step_size=step)
    token, _ = next(gen)
    elapsed = time.perf_counter() - started
    gen.close()
    return elapsed, token


def load(args):
    import mlx.core as mx
    from anyclaude import logs
    logs.configure("bench", console_level="warning")
    from mlx_lm import load as mlx_load
    from anyclaude.services.engine.mlx.model import fingerprint
    from anyclaude.tinymodel import ensure_tiny_model
    path = Path(args.model_dir) if args.model_dir else ensure_tiny_model(preset=args.preset)
    model, _ = mlx_load(str(path))
    mx.eval(model.parameters())
    from mlx_lm.models.cache import make_prompt_cache
    ttft(model, list(range(300)), make_prompt_cache(model), 0, 256)   # warm up the kernels
    return model, fingerprint(path)


def prompt(args) -> tuple[list[int], list[int]]:
    import numpy as np
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 4000, args.tokens).tolist()
    return ids, ids + rng.integers(0, 4000, args.new).tolist()


def child_disk(args) -> None:
    """The fresh process: an empty memory cache, the kvstore behind it."""
    import mlx.core as mx
    from anyclaude.services.engine.prefix.prefix_cache import PrefixCache
    from anyclaude.kvstore_client import KVStoreClient
    model, fp = load(args)
    _, ext = prompt(args)
    client = KVStoreClient(args.kv_dir, timeout=5.0)
    pc = PrefixCache(model, memory_budget_bytes=8 * 2**30, fingerprint=fp,
                     block_tokens=args.block, store=client)
    runs = []
    for _ in range(2):               # 1st: a freshly started process; 2nd: the same, warmed up
        pc.clear()
        mx.reset_peak_memory()
        started = time.perf_counter()
        cache, reused, source = pc.fetch(ext)
        fetched = time.perf_counter() - started
        seconds, token = ttft(model, ext, cache, reused, args.step)
        runs.append({"source": source, "reused": reused, "fetch_s": fetched,
                     "ttft_s": fetched + seconds, "token": token,
                     "peak_mb": mx.get_peak_memory() / 2**20})
        del cache
    client.close()
    print(json.dumps(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--new", type=int, default=100)
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--step", type=int, default=256, help="prefill step size")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--model-dir", default="")
    parser.add_argument("--child-disk", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kv-dir", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_disk:
        return child_disk(args)

    from anyclaude.blas import active_blas, engine_env
    if os.environ.get("ANYCLAUDE_BENCH_ENV") != "1":
        env = {**engine_env(), "ANYCLAUDE_BENCH_ENV": "1"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)

    import mlx.core as mx
    from anyclaude.services.engine.prefix.prefix_cache import PrefixCache
    from anyclaude.kvstore_client import KVStoreClient
    from mlx_lm.models.cache import make_prompt_cache
    from kvstore_proc import KVStoreProc

    model, fp = load(args)
    ids, ext = prompt(args)
    store = KVStoreProc(budget_mb=16384)
    client = KVStoreClient(store.kv_dir, timeout=5.0)
    try:
        pc = PrefixCache(model, memory_budget_bytes=8 * 2**30, fingerprint=fp,
                         block_tokens=args.block, store=client)
        print(f"model {args.model_dir or args.preset}, blas {active_blas()}, prompt {len(ids)} "
              f"tokens + {args.new} new, block {args.block}, prefill step {args.step}", flush=True)

        mx.reset_peak_memory()
        cache, reused, _ = pc.fetch(ids)
        cold_s, token = ttft(model, ids, cache, reused, args.step)
        cold_peak = mx.get_peak_memory() / 2**20
        started = time.perf_counter()
        pc.store(ids + [token], cache)         # queues the disk write (background thread)
        store_call_s = time.perf_counter() - started
        client.flush(600)
        write_s = time.perf_counter() - started
        print(f"cold   {cold_s:8.2f} s  ({len(ids) / cold_s:.0f} tok/s, peak {cold_peak:.0f} MB)",
              flush=True)

        warm = []
        for _ in range(3):
            mx.reset_peak_memory()
            cache, reused, source = pc.fetch(ext)
            seconds, warm_token = ttft(model, ext, cache, reused, args.step)
            assert source == "memory" and reused == len(ids), (source, reused)
            warm.append(seconds)
            del cache
        warm_s = min(warm)
        print(f"warm   {warm_s:8.3f} s  (best of 3: {', '.join(f'{w:.3f}' for w in warm)}; "
              f"reused {reused}, peak {mx.get_peak_memory() / 2**20:.0f} MB)", flush=True)

        ext_cold_s, ext_token = ttft(model, ext, make_prompt_cache(model), 0, args.step)
        files = store.command("ls").data["entries"]
        size = sum(e["bytes"] for e in files)
        child = subprocess.run([sys.executable, __file__, "--child-disk", "--kv-dir",
                                str(store.kv_dir), "--tokens", str(args.tokens), "--new",
                                str(args.new), "--block", str(args.block), "--step",
                                str(args.step), "--preset", args.preset, "--model-dir",
                                args.model_dir], capture_output=True, text=True,
                               env={**os.environ})
        if child.returncode != 0:
            raise SystemExit(f"disk run failed:\n{child.stderr}")
        first, disk = json.loads(child.stdout.strip().splitlines()[-1])
        for name, run in (("disk", disk), ("disk*", first)):
            print(f"{name:6} {run['ttft_s']:8.3f} s  (lookup+check+load {run['fetch_s']:.3f} s of "
                  f"it, reused {run['reused']} from {run['source']}, peak {run['peak_mb']:.0f} MB)")
        print("       (* the first request of a freshly started process)")
        print(f"file   {size / 2**20:.1f} MB fp16, {len(files)} file(s); store() returned in "
              f"{store_call_s * 1000:.1f} ms, the background write took {write_s:.2f} s")
        print(f"cold N+{args.new} for reference: {ext_cold_s:.2f} s; first tokens equal: "
              f"warm {warm_token == ext_token}, disk {disk['token'] == ext_token}")
        print(f"ratios: cold/warm {cold_s / warm_s:.0f}x, cold/disk {cold_s / disk['ttft_s']:.0f}x,"
              f" cold(N+{args.new})/warm {ext_cold_s / warm_s:.0f}x")
    finally:
        client.close()
        store.close()


if __name__ == "__main__":
    main()
