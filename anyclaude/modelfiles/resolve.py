"""``models.<id>.path`` -> a local MLX model directory.

"" (the config default) is the built-in offline demo model
(:func:`anyclaude.tinymodel.ensure_tiny_model`); an existing directory is used as is; a
Hugging Face id is looked up in the local Hugging Face cache, then downloaded (hub.py).
"""

from __future__ import annotations

import re
from pathlib import Path

from anyclaude.errors import ModelLoadError
from anyclaude.logs import get_logger
from anyclaude.modelfiles.hub import from_hub

log = get_logger()

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_model_path(path_or_id: str, *, model_id: str = "") -> Path:
    """A local directory for ``path_or_id``: the demo model for "", an existing directory as
    is, a hub id from the local cache or downloaded. Raises ModelLoadError with advice."""
    model_id = model_id or path_or_id or "demo"
    if not path_or_id:
        from anyclaude.tinymodel import ensure_demo_model
        log.info("engine.model.demo", model=model_id)
        return ensure_demo_model()
    local = Path(path_or_id).expanduser()
    if local.is_dir():
        return local
    if local.exists() or path_or_id.startswith(("/", ".", "~")) or not _HUB_ID.match(path_or_id):
        raise ModelLoadError(f"model {model_id}: {path_or_id} is not a model directory; set "
                             f"models.{model_id}.path to a local MLX model directory or a "
                             "Hugging Face id such as mlx-community/Qwen3-4B-4bit")
    return from_hub(path_or_id, model_id)
