"""A tiny Qwen3-style model built offline: random float32 weights, a byte-level BPE tokenizer
trained here, and a real chat template with tool calling and thinking.

The model says nothing sensible (its weights are random), but it loads with ``mlx_lm.load``,
runs the same code path as a real checkpoint, and - with the engine's forcing hook - says
any exact text a test asks for. It is also the offline ``demo`` model.

Everything is generated at run time, nothing is downloaded. A build is keyed by a hash of
its parameters, of this module's source and of the Python version (the tokenizer is trained
on the standard library), and a second call with the same key reuses the directory.

Float32 on purpose: on Linux CPU, bf16/fp16 matmuls bypass BLAS and run ~20x slower.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Added but not "special" (like Qwen's): they survive decode(skip_special_tokens=True).
MARKUP_TOKENS = ("<tool_call>", "</tool_call>", "<think>", "</think>",
                 "<tool_response>", "</tool_response>")
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"

# Layer shapes. "tiny" is the test/demo model; "qwen2.5-0.5b" has the layer shape of
# Qwen2.5-0.5B (hidden 896, 14 heads, 2 KV heads, MLP 4864) with fewer layers, for benchmarks.
PRESETS: dict[str, dict] = {
    "tiny": dict(hidden=256, layers=4, heads=4, kv_heads=2, intermediate=None),
    "qwen2.5-0.5b": dict(hidden=896, layers=8, heads=14, kv_heads=2, intermediate=4864),
}

_BUILD_VERSION = 1
_STAMP = "anyclaude-tiny.json"
_CORPUS_BYTES = 3_000_000

# Qwen2's pre-tokenizer split (GPT-4 style): contractions, words, single digits, punctuation, spaces.
_SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# Qwen3's template, trimmed of nothing that matters: tools as JSON in the system turn, tool
# calls as <tool_call>{"name", "arguments"}</tool_call>, tool results as <tool_response> in
# a user turn, reasoning kept only for assistant turns after the last real user query,
# enable_thinking=false closes an empty think block in the generation prompt.
CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"""


def build_tiny_model(out_dir: str | os.PathLike, *, preset: str = "tiny", hidden: int | None = None,
                     layers: int | None = None, heads: int | None = None,
                     kv_heads: int | None = None, intermediate: int | None = None,
                     vocab_size: int = 4096, seed: int = 0, max_position: int = 32768) -> Path:
    """Build (or reuse) a Qwen3-style random-weight model in ``out_dir``; return its path.

    ``preset`` picks the layer shape ("tiny": hidden 256, 4 layers, 4 heads, 2 KV heads;
    "qwen2.5-0.5b"); explicit arguments override it. The directory holds config.json,
    model.safetensors, tokenizer.json and tokenizer_config.json (with the chat template)
    and loads with ``mlx_lm.load``.
    """
    params = model_params(preset=preset, hidden=hidden, layers=layers, heads=heads,
                          kv_heads=kv_heads, intermediate=intermediate, vocab_size=vocab_size,
                          seed=seed, max_position=max_position)
    key = _build_key(params)
    out = Path(out_dir)
    if _is_built(out, key):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o755)
    try:
        tokenizer_json, special_ids = _train_tokenizer(params["vocab_size"])
        (tmp / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
        (tmp / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(params), indent=2))
        config = _model_config(params, special_ids)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        _write_weights(tmp / "model.safetensors", config, params["seed"])
        (tmp / _STAMP).write_text(json.dumps({"key": key, "params": params}, indent=2))
        if out.exists():  # a stale or partial build
            shutil.rmtree(out)
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished the same build first
            if not _is_built(out, key):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# The demo model declares a window that takes Claude Code's whole interactive first request
# (~33K tokens on this 4096-token vocabulary) with a full 8192-token output reserve; its KV
# cache is 4 KB a token (256 MB at 64K), far under any memory cap.
DEMO_MAX_POSITION = 65536


def ensure_demo_model(cache_root: str | os.PathLike | None = None) -> Path:
    """The offline ``demo`` model (the tiny preset, declaring DEMO_MAX_POSITION)."""
    return ensure_tiny_model(cache_root, max_position=DEMO_MAX_POSITION)


def ensure_tiny_model(cache_root: str | os.PathLike | None = None, **kwargs) -> Path:
    """Build (or reuse) a model under ``cache_root`` (default: ~/.cache/anyclaude/models, or
    $XDG_CACHE_HOME) in a directory named after its build key, so that different shapes
    never overwrite each other. ``kwargs`` are those of :func:`build_tiny_model`."""
    root = Path(cache_root) if cache_root else _default_cache_root()
    key = _build_key(model_params(**kwargs))
    return build_tiny_model(root / f"{kwargs.get('preset', 'tiny')}-{key[:12]}", **kwargs)


def _default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "anyclaude" / "models"


def model_params(*, preset: str = "tiny", vocab_size: int = 4096, seed: int = 0,
                 max_position: int = 32768, **shape) -> dict:
    """The full parameter set of a build: the preset's shape, overridden by ``shape``
    (hidden, layers, heads, kv_heads, intermediate; None keeps the preset's value)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    unknown = set(shape) - set(PRESETS[preset])
    if unknown:
        raise TypeError(f"unknown model parameter(s): {', '.join(sorted(unknown))}")
    p = dict(PRESETS[preset])
    p.update({k: v for k, v in shape.items() if v is not None})
    if p["intermediate"] is None:
        p["intermediate"] = p["hidden"] * 3
    if p["hidden"] % p["heads"] or p["heads"] % p["kv_heads"]:
        raise ValueError("hidden must be a multiple of heads, heads a multiple of kv_heads")
    if vocab_size < 512:
        raise ValueError("vocab_size must be at least 512 (256 bytes + merges + specials)")
    p.update(vocab_size=int(vocab_size), seed=int(seed), max_position=int(max_position))
    return p


def _build_key(params: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(params, sort_keys=True).encode())
    h.update(f"v{_BUILD_VERSION} py{sys.version_info[0]}.{sys.version_info[1]}".encode())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()


def _is_built(out: Path, key: str) -> bool:
    try:
        stamp = json.loads((out / _STAMP).read_text())
    except (OSError, ValueError):
        return False
    files = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    return stamp.get("key") == key and all((out / f).is_file() for f in files)


# --- tokenizer ----------------------------------------------------------------------------

def _corpus() -> list[str]:
    """Text available offline: the template and tool strings, then stdlib sources (which
    hold plenty of English in docstrings), in a fixed order, up to a byte budget."""
    sample_tool = {"type": "function", "function": {
        "name": "Bash", "description": "Run a shell command and return its output.",
        "parameters": {"type": "object", "properties": {"command": {"type": "string"}},
                       "required": ["command"], "additionalProperties": False}}}
    texts = [CHAT_TEMPLATE, json.dumps(sample_tool), json.dumps(sample_tool, indent=2),
             '<tool_call>\n{"name": "Read", "arguments": {"file_path": "/tmp/a.py"}}\n</tool_call>']
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    budget = _CORPUS_BYTES
    preferred = [stdlib / "pydoc_data" / "topics.py"]
    others = sorted(p for p in stdlib.glob("*.py"))
    for path in preferred + others:
        if budget <= 0:
            break
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        text = text[:budget]
        texts.append(text)
        budget -= len(text)
    return texts


def _train_tokenizer(vocab_size: int) -> tuple[str, dict]:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    n_added = len(SPECIAL_TOKENS) + len(MARKUP_TOKENS)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - n_added, min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(_corpus(), trainer)
    # Added tokens go at the end of the vocabulary, as in Qwen.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKUP_TOKENS])
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS + MARKUP_TOKENS}
    return tok.to_str(), ids


def _tokenizer_config(params: dict) -> dict:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": params["max_position"],
        "split_special_tokens": False,
        "chat_template": CHAT_TEMPLATE,
    }


# --- weights ------------------------------------------------------------------------------

def _model_config(params: dict, special_ids: dict) -> dict:
    head_dim = params["hidden"] // params["heads"]
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "hidden_size": params["hidden"],
        "intermediate_size": params["intermediate"],
        "num_hidden_layers": params["layers"],
        "num_attention_heads": params["heads"],
        "num_key_value_heads": params["kv_heads"],
        "head_dim": head_dim,
        "vocab_size": params["vocab_size"],
        "max_position_embeddings": params["max_position"],
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "hidden_act": "silu",
        "torch_dtype": "float32",
        "bos_token_id": None,
        "eos_token_id": special_ids[EOS_TOKEN],
        "pad_token_id": special_ids[PAD_TOKEN],
        "anyclaude_tiny": {k: params[k] for k in sorted(params)},
    }


def _write_weights(path: Path, config: dict, seed: int) -> None:
    """Random weights for exactly the parameters mlx-lm's qwen3 module declares."""
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten
    from mlx_lm.models import qwen3

    args = qwen3.ModelArgs.from_dict(config)
    shapes = {name: tuple(p.shape) for name, p in tree_flatten(qwen3.Model(args).parameters())}
    rng = np.random.default_rng(seed)
    weights = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if name.endswith("norm.weight"):
            value = np.ones(shape, dtype=np.float32)
        else:
            value = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
        weights[name] = mx.array(value)
    mx.save_safetensors(str(path), weights, metadata={"format": "mlx"})
