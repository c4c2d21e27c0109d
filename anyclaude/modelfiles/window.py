"""A model's context window: what the model declares, capped by what memory can hold.

    effective_window(configured, model_config, weights_bytes=..., ram_bytes=..., ...) -> Window

Rule (docs/configuration.md, ``models.<id>.context_window``):
1. A configured ``context_window`` > 0 wins, as is (a warning is logged by the caller when
   it is above the memory cap).
2. Otherwise the model's own number: config.json ``max_position_embeddings`` (or the same
   key in ``text_config`` for multimodal checkpoints); a directory converted from GGUF has it
   from the file's ``<arch>.context_length``. A model that declares nothing gets 32768.
3. Capped by memory: the KV cache of one token takes
   ``2 (K and V) x layers x kv_heads x head_dim x bytes per element``; the KV budget is
   ``MEMORY_SHARE`` of the machine's RAM minus the weights and the prefix-cache budget.
   Apple silicon lets the GPU wire about three quarters of RAM, hence the share.
The result is never below ``MIN_WINDOW``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

UNDECLARED_WINDOW = 32768     # a model (or a remote kind) that declares no window
MIN_WINDOW = 2048
MEMORY_SHARE = 0.75
_ROUND = 256                  # a capped window is rounded down to this


@dataclass(frozen=True)
class Window:
    tokens: int               # the window the engine runs with
    source: str               # "configured" | "model" | "memory" | "default"
    declared: int             # what the model declares (0: nothing)
    memory_cap: int           # what memory can hold (0: unknown)

    def as_dict(self) -> dict:
        return {"context_window": self.tokens, "window_source": self.source,
                "declared_window": self.declared, "memory_cap_window": self.memory_cap}


def _text_config(config: dict) -> dict:
    inner = config.get("text_config")
    return inner if isinstance(inner, dict) else {}


def _positive_int(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def declared_window(config: dict) -> int:
    """The window a model's config.json declares (0 when it declares none)."""
    for source in (config, _text_config(config)):
        found = _positive_int(source.get("max_position_embeddings"))
        if found:
            return found
    return 0


def gguf_declared_window(metadata: dict) -> int:
    """The window in GGUF metadata: ``<general.architecture>.context_length``."""
    arch = metadata.get("general.architecture")
    value = metadata.get(f"{arch}.context_length") if isinstance(arch, str) else None
    try:
        return max(0, int(value)) if value is not None else 0
    except (TypeError, ValueError):
        return 0


def kv_bytes_per_token(config: dict) -> int:
    """Bytes of KV cache one token takes (0 when the config lacks the shape)."""
    merged = {**config, **_text_config(config)}
    layers = _positive_int(merged.get("num_hidden_layers"))
    heads = _positive_int(merged.get("num_attention_heads"))
    kv_heads = _positive_int(merged.get("num_key_value_heads")) or heads
    head_dim = _positive_int(merged.get("head_dim"))
    if not head_dim and heads:
        head_dim = _positive_int(merged.get("hidden_size")) // heads
    if not (layers and kv_heads and head_dim):
        return 0
    dtype = str(merged.get("torch_dtype") or merged.get("dtype") or "")
    element = 4 if dtype == "float32" else 2   # quantized models compute in fp16 / bf16
    return 2 * layers * kv_heads * head_dim * element


def total_ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def weights_bytes(model_dir: str | os.PathLike) -> int:
    directory = Path(model_dir)
    return sum(f.stat().st_size for pattern in ("*.safetensors", "*.gguf")
               for f in directory.glob(pattern))


def memory_cap(config: dict, *, weights: int, ram: int, reserved: int = 0) -> int:
    """Tokens whose KV cache fits in memory (0: unknown)."""
    per_token = kv_bytes_per_token(config)
    if per_token <= 0 or ram <= 0:
        return 0
    budget = int(ram * MEMORY_SHARE) - weights - reserved
    return max(MIN_WINDOW, budget // per_token // _ROUND * _ROUND)


def effective_window(configured: int, config: dict, *, weights: int, ram: int,
                     reserved: int = 0) -> Window:
    """The window to run with, by the rule in this module's docstring."""
    declared = declared_window(config)
    cap = memory_cap(config, weights=weights, ram=ram, reserved=reserved)
    if configured > 0:
        return Window(int(configured), "configured", declared, cap)
    wanted, source = (declared, "model") if declared else (UNDECLARED_WINDOW, "default")
    if cap and cap < wanted:
        return Window(cap, "memory", declared, cap)
    return Window(max(MIN_WINDOW, wanted), source, declared, cap)


def window_for_model_dir(configured: int, config: dict, model_dir: str | os.PathLike, *,
                         reserved_mb: int = 0) -> Window:
    """``effective_window`` for a loaded model directory on this machine."""
    return effective_window(configured, config, weights=weights_bytes(model_dir),
                            ram=total_ram_bytes(), reserved=reserved_mb * 2**20)


def remote_window(configured: int) -> int:
    """Remote kinds cannot be asked: the configured window, else ``UNDECLARED_WINDOW``."""
    return configured if configured > 0 else UNDECLARED_WINDOW
