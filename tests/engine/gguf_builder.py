"""Small llama-architecture GGUF files written with the `gguf` package (llama.cpp's writer),
for converter tests: random weights, a byte-level BPE vocabulary, a ChatML template."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
HIDDEN, HEADS, KV_HEADS, FFN, LAYERS = 64, 2, 1, 128, 2


def _vocab() -> tuple[list[str], list[str], list[int]]:
    from tokenizers import pre_tokenizers
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = ["H e", "l l", "He ll", "Hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"]
    merged = [m.replace(" ", "") for m in merges]
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = special + alphabet + merged
    types = [3] * len(special) + [1] * (len(alphabet) + len(merged))
    return tokens, merges, types


def write_gguf(path: Path, *, arch: str = "llama", chat_template: str | None = CHAT_TEMPLATE,
               weight_type: str = "Q4_1", embed_type: str = "Q8_0", seed: int = 0,
               context_length: int = 2048) -> Path:
    """A complete small model; ``weight_type`` / ``embed_type`` pick the GGML tensor types
    (F32, F16, Q4_0, Q4_1, Q8_0, BF16)."""
    import gguf

    tokens, merges, types = _vocab()
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(LAYERS)
    writer.add_context_length(context_length)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(3)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    def tensor(name: str, shape: tuple, kind: str, scale: float = 0.05, base: float = 0.0) -> None:
        data = (base + rng.standard_normal(shape) * scale).astype(np.float32)
        if kind == "F32":
            writer.add_tensor(name, data)
        elif kind == "F16":
            writer.add_tensor(name, data.astype(np.float16))
        else:
            qtype = getattr(gguf.GGMLQuantizationType, kind)
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    tensor("token_embd.weight", (len(tokens), HIDDEN), embed_type, 0.5)
    tensor("output_norm.weight", (HIDDEN,), "F32", 0.1, 1.0)
    head_dim = HIDDEN // HEADS
    for i in range(LAYERS):
        tensor(f"blk.{i}.attn_norm.weight", (HIDDEN,), "F32", 0.1, 1.0)
        tensor(f"blk.{i}.ffn_norm.weight", (HIDDEN,), "F32", 0.1, 1.0)
        tensor(f"blk.{i}.attn_q.weight", (HIDDEN, HIDDEN), weight_type)
        tensor(f"blk.{i}.attn_k.weight", (KV_HEADS * head_dim, HIDDEN), weight_type)
        tensor(f"blk.{i}.attn_v.weight", (KV_HEADS * head_dim, HIDDEN), weight_type)
        tensor(f"blk.{i}.attn_output.weight", (HIDDEN, HIDDEN), weight_type)
        tensor(f"blk.{i}.ffn_gate.weight", (FFN, HIDDEN), weight_type)
        tensor(f"blk.{i}.ffn_up.weight", (FFN, HIDDEN), weight_type)
        tensor(f"blk.{i}.ffn_down.weight", (HIDDEN, FFN), weight_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
