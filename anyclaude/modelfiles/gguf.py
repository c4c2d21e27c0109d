"""A ``.gguf`` file -> an MLX model directory that mlx-lm loads like any other, made once.

The directory lives under ``<cache dir>/models/gguf-<sha256 of the file, 16 hex>-<f32|q>/``.
It is written into a temporary directory beside it and renamed into place, with a marker
file written last, so a half-written directory is never trusted.

Weights: on a CPU-only MLX (no Metal, no CUDA) quantized tensors are dequantized to float32,
because MLX's CPU quantized matmul does not use BLAS (about 20x slower prefill than float32
on OpenBLAS). With a GPU they stay MLX affine-quantized (group size 32, the bit width of each
tensor read from its shape). Only the llama architecture is converted; anything else is a
one-line error naming the file, the problem and what to use instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from anyclaude.errors import ModelLoadError
from anyclaude.logs import get_logger
from anyclaude.modelfiles.gguf_header import READABLE_TYPES, unreadable_tensor
from anyclaude.modelfiles.gguf_tokenizer import TokenizerUnsupported, build_tokenizer_files

log = get_logger()

MARKER = "anyclaude-gguf.json"     # written last: its presence means the directory is complete
GROUP_SIZE = 32                    # MLX's affine layout of GGUF Q4_0 / Q4_1 / Q8_0 blocks
ARCHITECTURES = ("llama",)
FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
              10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S",
              15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}
_INSTEAD = ("use an MLX model directory instead (a Hugging Face MLX repo, or convert the "
            "original weights with `mlx_lm.convert`)")
_LAYER = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
          "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
          "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
          "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
_GLOBAL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_NAME = re.compile(r"^(?:blk\.(\d+)\.)?(\w+)\.(weight|scales|biases)$")


class Unsupported(ValueError):
    """What the file holds is outside what this converter handles."""


@dataclass(frozen=True)
class GGUFModel:
    path: Path          # the converted MLX model directory
    weights: str        # e.g. "float32 (dequantized from Q4_1 GGUF)"
    source: str         # the .gguf file


def weights_mode() -> str:
    """"float32" on a CPU-only MLX, "quantized" where MLX has a GPU (Metal or CUDA)."""
    import mlx.core as mx
    return "quantized" if mx.default_device() == mx.gpu else "float32"


def gguf_model_dir(gguf: str | os.PathLike, cache_dir: str | os.PathLike, *, model_id: str,
                   mode: str | None = None) -> GGUFModel:
    """The converted directory for ``gguf``: reused if complete, else converted now."""
    source = Path(gguf).expanduser()
    mode = mode or weights_mode()
    if not source.is_file():
        raise ModelLoadError(f"model {model_id}: {source} does not exist (models.{model_id}.path "
                             "names a .gguf file that is not there)")
    root = Path(cache_dir) / "models"
    try:
        digest = _known_sha256(source, root) or _sha256(source)
    except OSError as exc:
        raise ModelLoadError(f"model {model_id}: cannot read {source}: {exc.strerror}") from None
    out = root / f"gguf-{digest[:16]}-{'f32' if mode == 'float32' else 'q'}"
    marker = _read_marker(out)
    if marker is not None:
        _remember_sha256(source, root, digest)
        log.info("engine.model.gguf_cached", model=model_id, source=str(source), path=str(out),
                 weights=marker["weights"])
        return GGUFModel(out, marker["weights"], str(source))
    converted = _convert_into(source, out, digest, mode, model_id)
    _remember_sha256(source, root, digest)
    return converted


# -- conversion -----------------------------------------------------------------------------

def _convert_into(source: Path, out: Path, digest: str, mode: str, model_id: str) -> GGUFModel:
    started = time.monotonic()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise ModelLoadError(f"model {model_id}: cannot convert {source}: cannot write under "
                             f"{out.parent} ({exc.strerror}); set cache.dir to a writable "
                             "directory") from None
    try:
        weights = _write_model(source, tmp, digest, mode, model_id)
        seconds = round(time.monotonic() - started, 2)
        marker = {"source": str(source), "sha256": digest, "weights": weights, "seconds": seconds}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2))
        os.chmod(tmp, 0o755)
        if out.exists() and _read_marker(out) is None:   # left by an interrupted attempt
            shutil.rmtree(out, ignore_errors=True)
        try:
            os.replace(tmp, out)
        except OSError:
            if _read_marker(out) is None:   # not another engine finishing the same work first
                raise
    except OSError as exc:
        raise ModelLoadError(f"model {model_id}: cannot convert {source}: writing under "
                             f"{out.parent} failed ({exc.strerror or exc}); free disk space or "
                             "set cache.dir to a writable directory") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("engine.model.gguf_converted", model=model_id, source=str(source), path=str(out),
             dtype=mode, weights=weights, seconds=seconds)
    return GGUFModel(out, weights, str(source))


def _write_model(source: Path, into: Path, digest: str, mode: str, model_id: str) -> str:
    """Write config.json, model.safetensors and the tokenizer files; return the weights note."""
    import mlx.core as mx

    tensors, meta = _load(source, model_id)
    try:
        arch = meta.get("general.architecture")
        if arch not in ARCHITECTURES:
            raise Unsupported(f"architecture {arch!r} is not supported (only "
                              f"{', '.join(ARCHITECTURES)}); {_INSTEAD}")
        config = _model_config(meta, arch, tensors, digest, source.name)
        tokenizer_json, tokenizer_config = build_tokenizer_files(
            meta, config["max_position_embeddings"])
        weights, bits = _mlx_weights(tensors, mode)
    except TokenizerUnsupported as exc:
        raise ModelLoadError(f"model {model_id}: cannot use {source}: {exc}; {_INSTEAD}") from None
    except Unsupported as exc:
        raise ModelLoadError(f"model {model_id}: cannot use {source}: {exc}") from None
    file_type = FILE_TYPES.get(_int(meta.get("general.file_type"), -1), "mixed")
    if mode == "float32":
        note = f"float32 (dequantized from {file_type} GGUF)"
    elif bits:
        config["quantization"] = _quantization_config(bits)
        note = f"quantized {'/'.join(str(b) for b in sorted(set(bits.values())))}-bit (from {file_type} GGUF)"
    else:
        note = f"{file_type} (GGUF, not quantized)"
    config["anyclaude_gguf"]["weights"] = note
    try:
        mx.save_safetensors(str(into / "model.safetensors"), weights, metadata={"format": "mlx"})
    except RuntimeError as exc:   # MLX reports a failed write (disk full) as RuntimeError
        raise OSError(str(exc)) from None
    (into / "config.json").write_text(json.dumps(config, indent=2))
    (into / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    (into / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    return note


def _load(source: Path, model_id: str):
    import mlx.core as mx
    try:
        return mx.load(str(source), return_metadata=True)
    except Exception as exc:  # mlx raises RuntimeError / ValueError with "[load_gguf] ..."
        reason = str(exc).replace("[load_gguf] ", "").splitlines()[0] if str(exc) else type(exc).__name__
        unreadable = unreadable_tensor(source)
        if unreadable:
            name, kind = unreadable
            reason = (f"tensor {name} has type {kind}, which MLX cannot read from GGUF "
                      f"(readable: {', '.join(READABLE_TYPES)}); use a Q4_0, Q4_1, Q8_0, F16, BF16 "
                      f"or F32 file, or {_INSTEAD[4:]}")
        elif "gguf_init failed" in reason:
            reason = "not a readable GGUF file (bad header, truncated or not GGUF at all)"
        raise ModelLoadError(f"model {model_id}: cannot use {source}: {reason}") from None


def _model_config(meta: dict, arch: str, tensors: dict, digest: str, file_name: str) -> dict:
    def number(key: str, default=None, kind=int):
        value = meta.get(f"{arch}.{key}")
        return default if value is None else kind(value.item() if hasattr(value, "item") else value)

    hidden = number("embedding_length")
    heads = number("attention.head_count")
    if not hidden or not heads or not number("block_count"):
        raise Unsupported(f"its metadata lacks {arch}.embedding_length, block_count or "
                          "attention.head_count (a damaged file?)")
    vocab = tensors["token_embd.weight"].shape[0] if "token_embd.weight" in tensors else 0
    scaling = meta.get(f"{arch}.rope.scaling.type")
    if scaling not in (None, "none"):
        raise Unsupported(f"rope scaling {scaling!r} is not supported; {_INSTEAD}")
    config = {
        "model_type": arch, "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden, "num_hidden_layers": number("block_count"),
        "intermediate_size": number("feed_forward_length"),
        "num_attention_heads": heads,
        "num_key_value_heads": number("attention.head_count_kv", heads),
        "head_dim": number("attention.key_length", hidden // heads),
        "rms_norm_eps": number("attention.layer_norm_rms_epsilon", 1e-5, float),
        "rope_theta": number("rope.freq_base", 10000.0, float),
        # GGUF stores Q and K rows permuted for the interleaved rotary layout
        "rope_traditional": True,
        "max_position_embeddings": number("context_length", 4096),
        "vocab_size": number("vocab_size", vocab) or vocab,
        "tie_word_embeddings": "output.weight" not in tensors,
        "hidden_act": "silu",
        "anyclaude_gguf": {"source": file_name, "sha256": digest},
    }
    for name in ("bos", "eos", "pad"):
        value = meta.get(f"tokenizer.ggml.{name}_token_id")
        if value is not None:
            config[f"{name}_token_id"] = _int(value)
    return config


def _mlx_weights(tensors: dict, mode: str) -> tuple[dict, dict]:
    """(weights under Hugging Face llama names, {module: bits} of the quantized ones)."""
    import mlx.core as mx

    weights, bits = {}, {}
    for name in sorted(tensors):
        match = _NAME.match(name)
        module = _module_name(match) if match else None
        if module is None:
            raise Unsupported(f"tensor {name} has no llama equivalent (an unsupported "
                              f"variant); {_INSTEAD}")
        kind = match.group(3)
        stem = name[: -len(kind) - 1]
        if kind == "weight" and f"{stem}.scales" in tensors:
            scales, biases = tensors[f"{stem}.scales"], tensors[f"{stem}.biases"]
            width = tensors[name].shape[-1] * 32 // (scales.shape[-1] * GROUP_SIZE)
            if mode == "float32":   # in float32 throughout, as llama.cpp dequantizes
                weights[f"{module}.weight"] = mx.dequantize(
                    tensors[name], scales.astype(mx.float32), biases.astype(mx.float32),
                    group_size=GROUP_SIZE, bits=width)
                continue
            bits[module] = width
        elif kind in ("scales", "biases") and mode == "float32":
            continue
        value = tensors[name]
        if mode == "float32" and value.dtype in (mx.float16, mx.bfloat16):
            value = value.astype(mx.float32)
        weights[f"{module}.{kind}"] = value
    return weights, bits


def _module_name(match: re.Match) -> str | None:
    layer, base = match.group(1), match.group(2)
    if layer is None:
        return _GLOBAL.get(base)
    part = _LAYER.get(base)
    return f"model.layers.{layer}.{part}" if part else None


def _quantization_config(bits: dict) -> dict:
    """mlx-lm's per-module quantization: a default and the modules that differ from it."""
    counts: dict[int, int] = {}
    for width in bits.values():
        counts[width] = counts.get(width, 0) + 1
    common = max(counts, key=counts.get)
    config = {"group_size": GROUP_SIZE, "bits": common}
    for module, width in bits.items():
        if width != common:
            config[module] = {"group_size": GROUP_SIZE, "bits": width}
    return config


def _read_marker(out: Path) -> dict | None:
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and "weights" in marker else None


_HASHES = "gguf-hashes.json"   # path -> size, mtime and sha256: a multi-GB file is hashed once


def _known_sha256(source: Path, root: Path) -> str | None:
    try:
        known = json.loads((root / _HASHES).read_text()).get(str(source.resolve()))
        stat = source.stat()
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(known, dict) and known.get("size") == stat.st_size \
            and known.get("mtime_ns") == stat.st_mtime_ns:
        return known.get("sha256")
    return None


def _remember_sha256(source: Path, root: Path, digest: str) -> None:
    """Best effort: a failure here only means hashing the file again on the next start."""
    try:
        try:
            table = json.loads((root / _HASHES).read_text())
        except (OSError, ValueError):
            table = {}
        stat = source.stat()
        table[str(source.resolve())] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                                        "sha256": digest}
        tmp = root / f".{_HASHES}.{os.getpid()}"
        tmp.write_text(json.dumps(table, indent=1))
        os.replace(tmp, root / _HASHES)
    except (OSError, AttributeError):
        pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _int(value, default: int | None = None) -> int | None:
    if value is None:
        return default
    return int(value.item()) if hasattr(value, "item") else int(value)
