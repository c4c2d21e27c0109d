"""Model resolution and loading errors, and the fingerprint."""

from __future__ import annotations

import shutil

import huggingface_hub.constants
import pytest

from anyclaude.services.engine.mlx.model import ModelLoadError, fingerprint, load_model


def test_hub_id_without_network_names_the_model_and_the_fix(monkeypatch, tmp_path):
    # No network: huggingface_hub's offline mode fails the same way an unreachable hub does.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError) as info:
        load_model("mlx-community/Qwen3-NotCached-4bit", model_id="coder")
    message = str(info.value)
    assert message.startswith("could not download mlx-community/Qwen3-NotCached-4bit: "
                              "no network access to the Hugging Face hub")
    assert "huggingface-cli download mlx-community/Qwen3-NotCached-4bit" in message
    assert "models.coder.path" in message


def test_missing_local_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="models.m.path"):
        load_model(str(tmp_path / "nope"), model_id="m")


def test_incomplete_directory_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "qwen3"}')
    with pytest.raises(ModelLoadError, match="not a complete MLX model directory|cannot load"):
        load_model(str(tmp_path), model_id="m")


def test_loaded_model_carries_fingerprint_and_template(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir), model_id="tiny")
    assert loaded.fingerprint == fingerprint(tiny_model_dir)
    assert loaded.model_type == "qwen3"
    assert "<tool_call>" in loaded.chat_template
    assert loaded.generation_defaults == {}


def test_fingerprint_survives_a_copy_and_changes_with_the_weights(tiny_model_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert fingerprint(copy) == fingerprint(tiny_model_dir)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF      # same size, same header, different weights
    weights.write_bytes(bytes(data))
    assert fingerprint(copy) != fingerprint(tiny_model_dir)


def test_generation_config_supplies_sampling_defaults(tiny_model_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    (copy / "generation_config.json").write_text('{"temperature": 0.7, "top_p": 0.8, "top_k": 20}')
    loaded = load_model(str(copy), model_id="m")
    assert loaded.generation_defaults == {"temperature": 0.7, "top_p": 0.8, "top_k": 20}
