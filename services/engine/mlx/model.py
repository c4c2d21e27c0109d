"""Load a model with mlx-lm from a local directory or a Hugging Face id, and fingerprint it.

What ``path`` may name (a directory, a .gguf file, a hub id, the built-in models) is
resolved by :mod:`anyclaude.modelfiles.resolve`; the engine service resolves it with the
configured cache dir first and passes the directory here.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anyclaude.blas import active_blas
from anyclaude.errors import ModelLoadError
from anyclaude.logs import get_logger
from anyclaude.modelfiles.resolve import resolve_model_path

log = get_logger()

_SAMPLES = 16          # chunks of each weights file read for the fingerprint
_SAMPLE_BYTES = 4096


@dataclass
class LoadedModel:
    model: Any                      # mlx.nn.Module
    tokenizer: Any                  # mlx_lm TokenizerWrapper
    path: Path
    model_id: str
    config: dict
    fingerprint: str
    generation_defaults: dict = field(default_factory=dict)  # generation_config.json sampling

    @property
    def model_type(self) -> str | None:
        return self.config.get("model_type")

    @property
    def chat_template(self) -> str | None:
        template = getattr(self.tokenizer, "chat_template", None)
        return template if isinstance(template, str) else None


def load_model(path_or_id: str, *, model_id: str = "") -> LoadedModel:
    """Resolve, load and fingerprint a model; log progress as ``engine.model.*`` lines."""
    model_id = model_id or path_or_id or "smollm2"
    started = time.monotonic()
    path = resolve_model_path(path_or_id, model_id=model_id)
    log.info("engine.model.loading", model=model_id, path=str(path))
    try:
        from mlx_lm import load
        model, tokenizer, config = load(str(path), return_config=True)
    except FileNotFoundError as exc:
        raise ModelLoadError(f"model {model_id}: {path} is not a complete MLX model directory "
                             f"({exc}); it needs config.json, model*.safetensors, "
                             "tokenizer.json and tokenizer_config.json") from None
    except ValueError as exc:
        raise ModelLoadError(f"model {model_id}: mlx-lm cannot load {path}: {exc}") from None
    loaded = time.monotonic()
    fp = fingerprint(path)
    import mlx.core as mx
    log.info("engine.model.ready", model=model_id, path=str(path), fingerprint=fp,
             model_type=config.get("model_type"), blas=active_blas(),
             load_s=round(loaded - started, 2), fingerprint_s=round(time.monotonic() - loaded, 2),
             active_mb=round(mx.get_active_memory() / 2**20, 1))
    return LoadedModel(model=model, tokenizer=tokenizer, path=path, model_id=model_id,
                       config=config, fingerprint=fp,
                       generation_defaults=_generation_defaults(path))


def fingerprint(path: str | os.PathLike) -> str:
    """A stable id of the model's weights and tokenizer for cache keys.

    Hashes config.json, the tokenizer files and chat template in full, and for each weights
    file its name, size, safetensors header and evenly spaced samples of its bytes - so a
    copy of the directory has the same fingerprint, and a different checkpoint of the same
    shape a different one, without reading gigabytes.
    """
    path = Path(path)
    h = hashlib.sha256()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                 "tokenizer.model"):
        f = path / name
        if f.is_file():
            h.update(name.encode() + b"\0" + f.read_bytes() + b"\0")
    for f in sorted(path.glob("*.safetensors")):
        size = f.stat().st_size
        h.update(f"{f.name}\0{size}\0".encode())
        with open(f, "rb") as fh:
            head = fh.read(8)
            h.update(head)
            if len(head) == 8:
                h.update(fh.read(min(int.from_bytes(head, "little"), 100_000_000)))
            for i in range(_SAMPLES):
                fh.seek(size * i // _SAMPLES)
                h.update(fh.read(_SAMPLE_BYTES))
    return h.hexdigest()[:32]


def _generation_defaults(path: Path) -> dict:
    """temperature / top_p / top_k from generation_config.json, for requests without them."""
    try:
        cfg = json.loads((path / "generation_config.json").read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    for key, kind in (("temperature", float), ("top_p", float), ("top_k", int)):
        value = cfg.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = kind(value)
    if cfg.get("do_sample") is False:
        out["temperature"] = 0.0
    return out
