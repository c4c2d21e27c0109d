#!/usr/bin/env python3
"""Build the offline tiny model (random float32 weights, locally trained tokenizer, Qwen3-style
chat template) into a directory; a second run with the same parameters reuses it.

    .venv/bin/python scripts/build_tiny_model.py OUT_DIR [--preset tiny|qwen2.5-0.5b] [--layers N] ...
"""

from __future__ import annotations

import argparse
import time

from anyclaude.tinymodel import PRESETS, build_tiny_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    for name in ("hidden", "layers", "heads", "kv_heads", "intermediate"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-position", type=int, default=32768)
    args = parser.parse_args()
    started = time.monotonic()
    path = build_tiny_model(args.out_dir, preset=args.preset, hidden=args.hidden,
                            layers=args.layers, heads=args.heads, kv_heads=args.kv_heads,
                            intermediate=args.intermediate, vocab_size=args.vocab_size,
                            seed=args.seed, max_position=args.max_position)
    print(f"{path} ({time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
