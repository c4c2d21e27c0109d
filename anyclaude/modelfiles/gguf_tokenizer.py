"""A GGUF file's tokenizer metadata -> tokenizer.json and tokenizer_config.json.

Only byte-level BPE vocabularies (``tokenizer.ggml.model = "gpt2"``, used by SmolLM, Llama 3,
Qwen and most current models) are rebuilt; the pre-tokenizer follows ``tokenizer.ggml.pre``
with the splitting rules llama.cpp applies to that name, so the ids match the original
Hugging Face tokenizer's.
"""

from __future__ import annotations

CONTROL = 3          # tokenizer.ggml.token_type: a special (control) token
USER_DEFINED = 4     # an added, non-special token

# llama.cpp's splits for Llama 3 and Qwen 2 vocabularies (GPT-2's is ByteLevel(use_regex=True)).
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZERS = {   # tokenizer.ggml.pre -> how text is split before BPE
    "default": "gpt2", "gpt2": "gpt2", "mpt": "gpt2", "olmo": "gpt2",
    "smollm": "digits+gpt2", "starcoder": "digits+gpt2", "refact": "digits+gpt2",
    "codeshell": "digits+gpt2",
    "llama-bpe": "llama3", "llama3": "llama3", "dbrx": "llama3", "smaug-bpe": "llama3",
    "qwen2": "qwen2", "stablelm2": "qwen2",
}


class TokenizerUnsupported(ValueError):
    """The metadata describes a tokenizer this converter cannot rebuild."""


def build_tokenizer_files(meta: dict, context_length: int) -> tuple[str, dict]:
    """(tokenizer.json text, tokenizer_config dict) from GGUF metadata."""
    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise TokenizerUnsupported(
            f"tokenizer kind {kind!r} is not supported (only byte-level BPE, 'gpt2')")
    template = meta.get("tokenizer.chat_template")
    if not isinstance(template, str) or not template.strip():
        raise TokenizerUnsupported("it has no chat template (tokenizer.chat_template)")
    tokens = list(meta.get("tokenizer.ggml.tokens") or [])
    merges = list(meta.get("tokenizer.ggml.merges") or [])
    if not tokens or not merges:
        raise TokenizerUnsupported("its tokenizer has no tokens or no merges")
    types = _ints(meta.get("tokenizer.ggml.token_type")) or [1] * len(tokens)
    pre = str(meta.get("tokenizer.ggml.pre") or "default")
    if pre not in PRE_TOKENIZERS:
        raise TokenizerUnsupported(f"pre-tokenizer {pre!r} is not supported "
                                   f"(supported: {', '.join(sorted(PRE_TOKENIZERS))})")
    special = _special_tokens(meta, tokens)
    tokenizer = _bpe(tokens, merges, types, PRE_TOKENIZERS[pre], special)
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": special.get("bos"),
        "eos_token": special.get("eos"),
        "pad_token": special.get("pad"),
        "unk_token": special.get("unk"),
        "add_bos_token": bool(special.get("bos")) and _flag(meta, "tokenizer.ggml.add_bos_token"),
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": context_length,
        "split_special_tokens": False,
        "chat_template": template,
    }
    return tokenizer.to_str(), config


def _bpe(tokens: list, merges: list, types: list, split: str, special: dict):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {token: i for i, token in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges if " " in m]
    model = models.BPE(vocab=vocab, merges=pairs, ignore_merges=(split == "llama3"))
    tok = Tokenizer(model)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split.endswith("gpt2"))
    if split == "gpt2":
        tok.pre_tokenizer = byte_level
    elif split == "digits+gpt2":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        pattern = _LLAMA3_SPLIT if split == "llama3" else _QWEN2_SPLIT
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(pattern), behavior="isolated"), byte_level])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind in zip(tokens, types) if kind == CONTROL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t, kind in zip(tokens, types) if kind == USER_DEFINED])
    bos = special.get("bos")
    if bos and special.get("add_bos"):
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def _special_tokens(meta: dict, tokens: list) -> dict:
    out = {}
    for name in ("bos", "eos", "pad", "unk"):
        value = meta.get(f"tokenizer.ggml.{name}_token_id")
        index = _int(value)
        if index is not None and 0 <= index < len(tokens):
            out[name] = tokens[index]
    out["add_bos"] = _flag(meta, "tokenizer.ggml.add_bos_token")
    return out


def _flag(meta: dict, key: str) -> bool:
    value = meta.get(key)
    return bool(value.item()) if hasattr(value, "item") else bool(value)


def _int(value) -> int | None:
    if value is None:
        return None
    return int(value.item()) if hasattr(value, "item") else int(value)


def _ints(value) -> list:
    if value is None:
        return []
    return [int(v) for v in (value.tolist() if hasattr(value, "tolist") else value)]
