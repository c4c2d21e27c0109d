"""The context-window rule (anyclaude/modelfiles/window.py): the model's declared window,
capped by what memory holds for the KV cache, a configured value winning."""

from __future__ import annotations

import json

from anyclaude.modelfiles import window as W

GIB = 2**30
# Qwen2.5-7B's shape: 28 layers, 4 KV heads, head_dim 128, bf16 -> 57,344 bytes a token.
QWEN_7B = {"model_type": "qwen2", "num_hidden_layers": 28, "num_attention_heads": 28,
           "num_key_value_heads": 4, "hidden_size": 3584, "max_position_embeddings": 32768,
           "torch_dtype": "bfloat16"}


def test_kv_bytes_per_token_from_the_shape():
    assert W.kv_bytes_per_token(QWEN_7B) == 2 * 28 * 4 * 128 * 2
    f32 = {**QWEN_7B, "torch_dtype": "float32", "head_dim": 64}
    assert W.kv_bytes_per_token(f32) == 2 * 28 * 4 * 64 * 4
    no_kv_heads = {k: v for k, v in QWEN_7B.items() if k != "num_key_value_heads"}
    assert W.kv_bytes_per_token(no_kv_heads) == 2 * 28 * 28 * 128 * 2   # MHA: kv = heads
    assert W.kv_bytes_per_token({"model_type": "x"}) == 0


def test_the_model_declares_its_window():
    win = W.effective_window(0, QWEN_7B, weights=4 * GIB, ram=64 * GIB)
    assert (win.tokens, win.source, win.declared) == (32768, "model", 32768)


def test_a_multimodal_config_declares_it_in_text_config():
    config = {"model_type": "gemma3", "text_config": {**QWEN_7B, "max_position_embeddings": 131072}}
    assert W.declared_window(config) == 131072
    win = W.effective_window(0, config, weights=4 * GIB, ram=512 * GIB)
    assert (win.tokens, win.source) == (131072, "model")


def test_a_gguf_converted_directory_and_gguf_metadata(tmp_path):
    # A directory converted from GGUF carries context_length as max_position_embeddings
    # (SmolLM2-135M: 30 layers, 3 KV heads, head_dim 64, 8192 positions).
    smol = {"model_type": "llama", "num_hidden_layers": 30, "num_attention_heads": 9,
            "num_key_value_heads": 3, "hidden_size": 576, "max_position_embeddings": 8192}
    (tmp_path / "config.json").write_text(json.dumps(smol))
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 1000)
    win = W.window_for_model_dir(0, smol, tmp_path)
    assert (win.tokens, win.source) == (8192, "model")
    assert W.gguf_declared_window({"general.architecture": "llama",
                                   "llama.context_length": 8192}) == 8192
    assert W.gguf_declared_window({"general.architecture": "llama"}) == 0


def test_memory_caps_the_window():
    # 8 GiB of RAM: 6 GiB usable, minus 4 GiB of weights and 1 GiB of prefix cache = 1 GiB
    # for the KV cache: 1 GiB / 57,344 bytes = 18,724 tokens -> 18,688 (a multiple of 256).
    win = W.effective_window(0, QWEN_7B, weights=4 * GIB, ram=8 * GIB, reserved=1 * GIB)
    assert (win.tokens, win.source, win.declared) == (18688, "memory", 32768)
    assert win.memory_cap == 18688
    starved = W.effective_window(0, QWEN_7B, weights=7 * GIB, ram=8 * GIB)
    assert starved.tokens == W.MIN_WINDOW


def test_a_configured_window_wins():
    win = W.effective_window(16384, QWEN_7B, weights=4 * GIB, ram=64 * GIB)
    assert (win.tokens, win.source) == (16384, "configured")
    above_cap = W.effective_window(65536, QWEN_7B, weights=4 * GIB, ram=8 * GIB)
    assert (above_cap.tokens, above_cap.source) == (65536, "configured")
    assert above_cap.memory_cap < 65536      # the engine warns about it


def test_a_model_that_declares_nothing_gets_the_default():
    shape_only = {k: v for k, v in QWEN_7B.items() if k != "max_position_embeddings"}
    win = W.effective_window(0, shape_only, weights=GIB, ram=64 * GIB)
    assert (win.tokens, win.source) == (W.UNDECLARED_WINDOW, "default")
    assert W.remote_window(0) == W.UNDECLARED_WINDOW and W.remote_window(4096) == 4096


def test_the_demo_model_follows_the_rule(tmp_path):
    from anyclaude.tinymodel import DEMO_MAX_POSITION, ensure_demo_model
    path = ensure_demo_model(tmp_path)
    config = json.loads((path / "config.json").read_text())
    win = W.window_for_model_dir(0, config, path)
    assert (win.tokens, win.source) == (DEMO_MAX_POSITION, "model")
