"""The offline tiny model: builds once, loads with mlx-lm, tokenizes markup exactly."""

from __future__ import annotations

import json

import pytest

from anyclaude import tinymodel


def test_build_is_cached_by_content_hash(tiny_model_dir):
    weights = tiny_model_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert tinymodel.build_tiny_model(tiny_model_dir) == tiny_model_dir
    assert weights.stat().st_mtime_ns == before  # reused, not rebuilt


def test_a_different_shape_rebuilds_the_directory(tmp_path):
    out = tmp_path / "m"
    tinymodel.build_tiny_model(out, hidden=64, layers=1, heads=2, kv_heads=1, vocab_size=600)
    config = json.loads((out / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (64, 1)
    tinymodel.build_tiny_model(out, hidden=64, layers=2, heads=2, kv_heads=1, vocab_size=600)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_ensure_tiny_model_names_the_directory_by_key(tmp_path):
    a = tinymodel.ensure_tiny_model(tmp_path, hidden=64, layers=1, heads=2, kv_heads=1,
                                    vocab_size=600)
    b = tinymodel.ensure_tiny_model(tmp_path, hidden=64, layers=1, heads=2, kv_heads=1,
                                    vocab_size=600, seed=1)
    assert a != b and a.parent == b.parent == tmp_path


def test_bad_parameters_are_refused(tmp_path):
    with pytest.raises(ValueError):
        tinymodel.build_tiny_model(tmp_path / "x", hidden=100, heads=3)
    with pytest.raises(ValueError):
        tinymodel.build_tiny_model(tmp_path / "x", preset="nope")
    with pytest.raises(TypeError):
        tinymodel.model_params(width=3)


def test_loads_with_mlx_lm_as_float32_qwen3(tiny_model_dir):
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import load

    model, tokenizer, config = load(str(tiny_model_dir), return_config=True)
    assert config["model_type"] == "qwen3"
    assert {p.dtype for _, p in tree_flatten(model.parameters())} == {mx.float32}
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.eos_token_ids == {tokenizer.convert_tokens_to_ids("<|im_end|>")}
    assert len(tokenizer) <= config["vocab_size"]


def test_markup_tokens_are_single_ids_and_round_trip(tiny_model_dir):
    from mlx_lm.utils import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    for token in tinymodel.SPECIAL_TOKENS + tinymodel.MARKUP_TOKENS:
        assert len(tok.encode(token, add_special_tokens=False)) == 1, token
    text = '<think>\nhm</think> Grüße 🎉 <tool_call>\n{"name": "x", "arguments": {}}\n</tool_call>'
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_chat_template_has_tool_calling(tiny_model_dir):
    config = json.loads((tiny_model_dir / "tokenizer_config.json").read_text())
    template = config["chat_template"]
    assert "<tool_call>" in template and "<tool_response>" in template
    assert "reasoning_content" in template and "enable_thinking" in template
