#!/usr/bin/env python3
"""Prefill and decode speed and peak memory of generated models, with and without OpenBLAS.

Each (model, BLAS) configuration runs in its own subprocess, because LD_PRELOAD only takes
effect at process start (the engine gets it from services.engine.blas.engine_env).
Models: the tiny test model and a model with Qwen2.5-0.5B's layer shape (fewer layers),
both float32 with random weights, built offline.

    .venv/bin/python scripts/bench_engine.py [--large-layers 8] [--tiny-prompt 2048] ...

Timings are mlx-lm's generate_step (the engine's own loop) after a warm-up: prefill = time
to the first token for a prompt of random ids; decode = the following tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worker(args) -> None:
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.generate import generate_step
    from mlx_lm.models.cache import make_prompt_cache

    from anyclaude.blas import active_blas

    model, tokenizer = load(args.model)
    rng = __import__("random").Random(0)
    special = set(tokenizer.all_special_ids) | set(tokenizer.eos_token_ids)
    vocab = [i for i in range(len(tokenizer)) if i not in special]
    prompt = [rng.choice(vocab) for _ in range(args.prompt)]

    def run(ids, n_gen):
        cache = make_prompt_cache(model)
        started = time.perf_counter()
        first = None
        count = 0
        for _token, _ in generate_step(mx.array(ids), model, max_tokens=n_gen,
                                       prompt_cache=cache, prefill_step_size=args.step):
            count += 1
            if first is None:
                first = time.perf_counter()
        end = time.perf_counter()
        return first - started, end - first, count

    run(prompt[:32], 4)  # warm-up: kernels, compiled sampler
    mx.reset_peak_memory()
    prefill_s, decode_s, count = run(prompt, args.gen + 1)
    print(json.dumps({
        "blas": active_blas(),
        "prefill_tps": len(prompt) / prefill_s,
        "decode_tps": (count - 1) / decode_s if decode_s > 0 else 0.0,
        "ttft_s": prefill_s,
        "peak_mb": mx.get_peak_memory() / 2**20,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


def run_config(model_dir: Path, blas: str, prompt: int, gen: int, step: int) -> dict:
    from anyclaude.blas import engine_env

    base = dict(os.environ)
    base["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), base.get("PYTHONPATH")) if p)
    if blas == "reference":
        base["ANYCLAUDE_BLAS"] = "reference"
        base.pop("LD_PRELOAD", None)
    else:
        base.pop("ANYCLAUDE_BLAS", None)
    env = engine_env(base)
    cmd = [sys.executable, __file__, "--worker", "--model", str(model_dir),
           "--prompt", str(prompt), "--gen", str(gen), "--step", str(step)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"worker failed ({blas}, {model_dir}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description="engine benchmark")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--prompt", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--gen", type=int, default=64, help="tokens to decode (default 64)")
    parser.add_argument("--step", type=int, default=256, help="prefill step size (default 256)")
    parser.add_argument("--tiny-prompt", type=int, default=2048)
    parser.add_argument("--large-prompt", type=int, default=512)
    parser.add_argument("--large-layers", type=int, default=8)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--cache-dir", default=None, help="where generated models are kept")
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    from anyclaude.blas import find_openblas
    from anyclaude.tinymodel import ensure_tiny_model

    openblas = find_openblas()
    if openblas is None:
        print("no system OpenBLAS found (apt-get install libopenblas0-pthread): reference only")
    models = [("tiny (h256, 4 layers)", dict(preset="tiny"), args.tiny_prompt)]
    if not args.skip_large:
        models.append((f"0.5B shape (h896, {args.large_layers} layers)",
                       dict(preset="qwen2.5-0.5b", layers=args.large_layers), args.large_prompt))
    print(f"cpu cores: {os.cpu_count()}; decode {args.gen} tokens; prefill step {args.step}")
    print(f"{'model':<28} {'blas':<9} {'prompt':>6} {'prefill tok/s':>13} {'decode tok/s':>12} "
          f"{'TTFT s':>7} {'peak MB':>8} {'RSS MB':>7}")
    for label, build, prompt in models:
        started = time.monotonic()
        model_dir = ensure_tiny_model(args.cache_dir, **build)
        built = time.monotonic() - started
        results = {}
        for blas in (["openblas"] if openblas else []) + ["reference"]:
            r = results[blas] = run_config(model_dir, blas, prompt, args.gen, args.step)
            print(f"{label:<28} {r['blas']:<9} {prompt:>6} {r['prefill_tps']:>13.1f} "
                  f"{r['decode_tps']:>12.1f} {r['ttft_s']:>7.2f} {r['peak_mb']:>8.0f} "
                  f"{r['max_rss_mb']:>7.0f}", flush=True)
        if len(results) == 2:
            o, ref = results["openblas"], results["reference"]
            print(f"{'':<28} {'ratio':<9} {'':>6} {o['prefill_tps'] / ref['prefill_tps']:>12.1f}x "
                  f"{o['decode_tps'] / ref['decode_tps']:>11.1f}x   (openblas / reference; "
                  f"model built/reused in {built:.1f} s)")


if __name__ == "__main__":
    main()
