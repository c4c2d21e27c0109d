"""GGUF -> MLX directory: real files written by the `gguf` package, converted and loaded with
mlx-lm; both weight modes agree; the result is reused, keyed by the file's content."""

from __future__ import annotations

import json
import os

import mlx.core as mx
import pytest

from anyclaude.modelfiles.gguf import MARKER, gguf_model_dir
from anyclaude.modelfiles.resolve import resolve_model
from anyclaude.services.engine.mlx.model import fingerprint, load_model
from gguf_builder import CHAT_TEMPLATE, write_gguf


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory):
    return write_gguf(tmp_path_factory.mktemp("gguf") / "small.Q4_1.gguf")


def _last_logits(model_dir, ids):
    from mlx_lm import load
    model, _ = load(str(model_dir))
    return model(mx.array([ids]))[0, -1]


def test_converted_directory_loads_with_mlx_lm_and_declares_its_window(small_gguf, tmp_path):
    converted = gguf_model_dir(small_gguf, tmp_path, model_id="small", mode="float32")
    assert converted.path.parent == tmp_path / "models"
    assert converted.path.name.startswith("gguf-") and converted.path.name.endswith("-f32")
    assert converted.weights == "float32 (dequantized from Q4_1 GGUF)"
    config = json.loads((converted.path / "config.json").read_text())
    assert config["max_position_embeddings"] == 2048          # llama.context_length
    assert config["rope_traditional"] is True and config["tie_word_embeddings"] is True
    loaded = load_model(str(converted.path), model_id="small")
    assert loaded.chat_template == CHAT_TEMPLATE
    ids = loaded.tokenizer.apply_chat_template([{"role": "user", "content": "Hello world"}],
                                               add_generation_prompt=True)
    # the special tokens are single ids; the BPE merges apply ("Hello", " world")
    vocab = loaded.tokenizer.get_vocab()
    assert ids.count(vocab["<|im_start|>"]) == 2 and vocab["<|im_end|>"] in ids
    assert vocab["Hello"] in ids and vocab["Ġworld"] in ids
    assert loaded.tokenizer.decode(ids) == ("<|im_start|>user\nHello world<|im_end|>\n"
                                            "<|im_start|>assistant\n")
    assert loaded.tokenizer.eos_token_id == vocab["<|im_end|>"]
    weights = mx.load(str(converted.path / "model.safetensors"))
    assert all(w.dtype == mx.float32 for w in weights.values())


def test_quantized_and_float32_conversions_compute_the_same_logits(small_gguf, tmp_path):
    f32 = gguf_model_dir(small_gguf, tmp_path, model_id="small", mode="float32")
    quant = gguf_model_dir(small_gguf, tmp_path, model_id="small", mode="quantized")
    assert quant.path != f32.path and quant.path.name.endswith("-q")
    assert quant.weights == "quantized 4/8-bit (from Q4_1 GGUF)"
    config = json.loads((quant.path / "config.json").read_text())
    # attention/MLP weights are 4-bit, the Q8_0 embedding 8-bit: inferred from the shapes
    assert config["quantization"]["bits"] == 4
    assert config["quantization"]["model.embed_tokens"] == {"group_size": 32, "bits": 8}
    ids = [1, 87, 85, 71, 84, 201, 262, 267, 2]
    a, b = _last_logits(f32.path, ids), _last_logits(quant.path, ids)
    assert mx.allclose(a, b, atol=1e-2).item(), (a[:5], b[:5])


def test_conversion_is_reused_and_keyed_by_the_file_content(small_gguf, tmp_path):
    first = gguf_model_dir(small_gguf, tmp_path, model_id="small", mode="float32")
    stamp = (first.path / MARKER).stat().st_mtime_ns
    again = gguf_model_dir(small_gguf, tmp_path, model_id="small", mode="float32")
    assert again.path == first.path and (again.path / MARKER).stat().st_mtime_ns == stamp
    other = write_gguf(tmp_path / "other.gguf", seed=1)     # same shapes, other weights
    converted = gguf_model_dir(other, tmp_path, model_id="small", mode="float32")
    assert converted.path != first.path
    assert fingerprint(converted.path) != fingerprint(first.path)
    # a copy of the same file elsewhere is the same model: same directory, same fingerprint
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(small_gguf.read_bytes())
    assert gguf_model_dir(copy, tmp_path, model_id="small", mode="float32").path == first.path


def test_bf16_and_f16_weights_convert(tmp_path):
    for kind in ("BF16", "F16"):
        source = write_gguf(tmp_path / f"small.{kind}.gguf", weight_type=kind, embed_type="F32")
        converted = gguf_model_dir(source, tmp_path, model_id="small", mode="float32")
        assert load_model(str(converted.path), model_id="small").model_type == "llama"


def test_a_gguf_path_in_the_config_resolves_to_the_converted_directory(small_gguf, tmp_path):
    resolved = resolve_model(str(small_gguf), model_id="small", cache_dir=tmp_path)
    assert (resolved.path / MARKER).is_file()
    assert resolved.note == "small.Q4_1.gguf (GGUF)" and resolved.weights.startswith(
        ("float32", "quantized"))


def test_a_file_changed_in_place_is_hashed_again(tmp_path):
    source = write_gguf(tmp_path / "model.gguf", seed=0)
    first = gguf_model_dir(source, tmp_path, model_id="m", mode="float32")
    assert (tmp_path / "models" / "gguf-hashes.json").is_file()   # later starts skip hashing
    write_gguf(source, seed=2)                                    # a new download, same name
    os.utime(source, ns=(1, 1))                                   # whatever its mtime says
    second = gguf_model_dir(source, tmp_path, model_id="m", mode="float32")
    assert second.path != first.path
