"""GGUF tokenizer metadata -> a `tokenizers` tokenizer: each supported pre-tokenizer kind,
and a clear refusal of what cannot be rebuilt."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from anyclaude.modelfiles.gguf_tokenizer import (PRE_TOKENIZERS, TokenizerUnsupported,
                                                 build_tokenizer_files)
from gguf_builder import CHAT_TEMPLATE, _vocab


def _meta(**overrides) -> dict:
    tokens, merges, types = _vocab()
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "smollm",
            "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.merges": merges,
            "tokenizer.ggml.token_type": types, "tokenizer.ggml.bos_token_id": 1,
            "tokenizer.ggml.eos_token_id": 2, "tokenizer.chat_template": CHAT_TEMPLATE}
    meta.update(overrides)
    return {k: v for k, v in meta.items() if v is not None}


@pytest.mark.parametrize("pre", sorted(PRE_TOKENIZERS))
def test_every_supported_pre_tokenizer_builds_a_round_tripping_tokenizer(pre):
    text, config = build_tokenizer_files(_meta(**{"tokenizer.ggml.pre": pre}), 4096)
    tok = Tokenizer.from_str(text)
    sample = "Hello world 2024, it's <|im_end|>"
    ids = tok.encode(sample, add_special_tokens=False).ids
    assert tok.decode(ids, skip_special_tokens=False) == sample
    assert tok.token_to_id("<|im_end|>") in ids           # a control token stays one id
    assert config["eos_token"] == "<|im_end|>" and config["chat_template"] == CHAT_TEMPLATE


def test_smollm_splits_digits_one_by_one():
    tok = Tokenizer.from_str(build_tokenizer_files(_meta(), 4096)[0])
    pieces = tok.encode("2024", add_special_tokens=False).tokens
    assert pieces == ["2", "0", "2", "4"]


def test_add_bos_token_puts_bos_in_front():
    text, config = build_tokenizer_files(_meta(**{"tokenizer.ggml.add_bos_token": True}), 4096)
    assert config["add_bos_token"] is True
    assert Tokenizer.from_str(text).encode("Hello").ids[0] == 1


@pytest.mark.parametrize("overrides, said", [
    ({"tokenizer.ggml.model": "llama"}, "tokenizer kind 'llama' is not supported"),
    ({"tokenizer.ggml.pre": "chatglm-bpe"}, "pre-tokenizer 'chatglm-bpe' is not supported"),
    ({"tokenizer.chat_template": None}, "no chat template"),
    ({"tokenizer.ggml.merges": None}, "no tokens or no merges"),
])
def test_what_cannot_be_rebuilt_is_refused_with_the_reason(overrides, said):
    with pytest.raises(TokenizerUnsupported, match=said):
        build_tokenizer_files(_meta(**overrides), 4096)
