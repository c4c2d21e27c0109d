"""Raw model text -> neutral engine events, incrementally.

    parser = OutputParser(family=choose_family(template, model_type, None), tools=tools,
                          thinking=True, starts_in_thinking=False, special_tokens=specials)
    for piece in pieces:            # decoded text, in pieces of any size
        send(parser.feed(piece))
    send(parser.finish())           # at the end of generation: everything held back

Events (dicts): ``{"type": "text", "text"}``, ``{"type": "thinking", "text"}``,
``{"type": "tool_start", "id": "toolu_…", "name"}``, ``{"type": "tool_args", "json"}``,
``{"type": "tool_end"}``. A tool call is sent only once it is complete and checked: its
``tool_start``, one ``tool_args`` holding the exact compact JSON object of its input, and its
``tool_end`` come together. A call that cannot be used (unknown tool, unparseable, arguments
that are not an object, or not closed when the output ended) is shown as its raw text, and a
warning ``engine.toolcall.unparsed`` is logged: nothing the model wrote is silently dropped,
except special tokens and thinking when thinking is off. Arguments are repaired against the
tool's schema (``engine.toolcall.repaired``); what still violates it is passed on with a
warning ``engine.toolcall.invalid``: the client rejects such a call with an error the model
can correct, which keeps the agent loop going where text would end the turn.

The stages: special tokens are removed from the text (``_SpecialStripper``), then the content
scanner (toolcall_scan.py) splits thinking, text and calls; the call readers live in
toolcall_json.py, toolcall_xml.py and toolcall_mistral.py, and (mlx-lm's parsers, DeepSeek) toolcall_families.py;
the schema check in schema_repair.py.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Callable, Container, Iterable

import structlog

from anyclaude.services.engine.parsing.schema_repair import repair_call, resolve_tool
from anyclaude.services.engine.parsing.thinking import THINK_MARKERS
from anyclaude.services.engine.parsing.toolcall_base import Candidate
from anyclaude.services.engine.parsing.toolcall_families import ALIASES, MARKERS
from anyclaude.services.engine.parsing.toolcall_scan import FAMILIES, KNOWN_FAMILIES, ContentScanner
from anyclaude.services.engine.parsing.toolcall_xml import parse_function, type_params

__all__ = ["FAMILIES", "OutputParser", "choose_family", "declared_family", "new_tool_id"]

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# Markers the parser reads itself: never stripped, even when listed as special tokens.
STRUCTURAL = frozenset({"<tool_call>", "</tool_call>", "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]",
                        "<|python_tag|>", "<|channel>", "<channel|>"}) | THINK_MARKERS | MARKERS
_STRUCTURAL_PREFIXES = ("<function", "</function", "<parameter", "</parameter")

_MISTRAL_TYPES = {"mistral", "mistral3", "mixtral", "ministral", "pixtral"}


def new_tool_id() -> str:
    """``toolu_`` and 24 random base62 characters."""
    return "toolu_" + "".join(secrets.choice(_BASE62) for _ in range(24))


# Chat-template markers -> family, in mlx-lm's order (tokenizer_utils._infer_tool_parser),
# then ours. The first whose markers are all in the template wins.
_TEMPLATE_MARKERS = (
    (("<minimax:tool_call>",), "minimax_m2"),
    (("<|tool_call>", "<tool_call|>"), "gemma4"),
    (("<start_function_call>",), "function_gemma"),
    (("<longcat_tool_call>",), "longcat"),
    (("<arg_key>",), "glm47"),
    (("<|tool_list_start|>",), "pythonic"),
    (("<|tool_call_start|>",), "pythonic"),
    (("<|tool_calls_section_begin|>",), "kimi_k2"),
    (("<|open|>tools<|sep|>",), "kimi_k3"),
    (('<function name="', '<param name="'), "minicpm5"),
    (("<atem:function_calls>",), "muse_spark"),
    (("tool▁calls▁begin",), "deepseek"),
)


def _family_of(name: str) -> str:
    family = str(name).strip().lower()
    if family not in KNOWN_FAMILIES:
        raise ValueError(f"unknown tool-call family {name!r}; allowed: auto, "
                         + ", ".join(KNOWN_FAMILIES))
    return ALIASES.get(family, family)


def declared_family(model_dir) -> dict:
    """The model's tokenizer_config.json (for its ``tool_parser_type``), or {}."""
    try:
        config = json.loads((Path(model_dir) / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return {}
    return config if isinstance(config, dict) else {}


def choose_family(chat_template: str | None, model_type: str | None, override: str | None,
                  tokenizer_config: dict | None = None, vocab: Container[str] = ()) -> str:
    """The tool-call format to parse: from ``override`` unless it is None or "auto", else
    the tokenizer config's ``tool_parser_type`` (as mlx-lm reads it), else from the markers
    the chat template renders, else from the tokens the vocabulary has (LFM2.5 conversions
    carry the call tokens without naming them in the template), else from the model type,
    else "none"."""
    if override is not None and str(override).strip().lower() not in ("", "auto"):
        return _family_of(override)
    declared = (tokenizer_config or {}).get("tool_parser_type")
    if isinstance(declared, str) and declared.strip():
        return _family_of(declared)
    if isinstance(chat_template, dict):
        chat_template = "\n".join(str(v) for v in chat_template.values())
    elif isinstance(chat_template, list):
        chat_template = "\n".join(str(t.get("template", "")) if isinstance(t, dict) else str(t)
                                  for t in chat_template)
    template = chat_template or ""
    for markers, family in _TEMPLATE_MARKERS:
        if all(m in template for m in markers):
            return family
    if "<tool_call>" in template and ("<function=" in template or "<parameter=" in template):
        return "qwen3_coder"
    if "[TOOL_CALLS]" in template:
        return "mistral"
    if "<tool_call>" in template:
        return "hermes"
    if "<|python_tag|>" in template or ("<|start_header_id|>" in template and '"parameters"' in template):
        return "llama3"
    if all(t in vocab for t in ("<|open|>", "<|close|>", "<|sep|>", "<|end_of_msg|>")):
        return "kimi_k3"
    if "<|tool_call_start|>" in vocab and "<|tool_call_end|>" in vocab:
        return "pythonic"
    kind = (model_type or "").strip().lower()
    if kind.startswith("qwen"):
        return "hermes"
    if kind in _MISTRAL_TYPES:
        return "mistral"
    if kind == "llama":
        return "llama3"
    if kind.startswith("llama4"):
        return "pythonic"
    if kind.startswith("deepseek"):
        return "deepseek"
    return "none"


class _SpecialStripper:
    """Removes special tokens from streamed text, holding back a possible partial one."""

    def __init__(self, tokens: Iterable[str]):
        kept = {t for t in tokens if isinstance(t, str) and t and t not in STRUCTURAL
                and not t.startswith(_STRUCTURAL_PREFIXES)}
        ordered = sorted(kept, key=len, reverse=True)
        self._re = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self._prefixes = {t[:k] for t in kept for k in range(1, len(t))}
        self._longest = max((len(t) for t in kept), default=0)
        self._buf = ""

    def feed(self, text: str) -> str:
        if self._re is None:
            return text
        text = self._re.sub("", self._buf + text)
        keep = 0
        for k in range(min(self._longest - 1, len(text)), 0, -1):
            if text[-k:] in self._prefixes:
                keep = k
                break
        self._buf = text[len(text) - keep:]
        return text[:len(text) - keep]

    def finish(self) -> str:
        out, self._buf = self._buf, ""
        return out


def _merge(events: list[dict]) -> list[dict]:
    out: list[dict] = []
    for event in events:
        kind = event["type"]
        if out and kind in ("text", "thinking") and out[-1]["type"] == kind:
            out[-1] = {"type": kind, "text": out[-1]["text"] + event["text"]}
        else:
            out.append(event)
    return out


class OutputParser:
    """One generation's output. ``feed`` pieces as they are decoded, then ``finish`` once.

    family: one of FAMILIES (see ``choose_family``). tools: the request's custom tools
    ``{name, description, input_schema}``. thinking: emit thinking events (False drops the
    thought). starts_in_thinking: the prompt ends inside an opened ``<think>``.
    special_tokens: template tokens that must never reach the text. new_id: id factory
    (tests pass a deterministic one).
    """

    def __init__(self, *, family: str, tools: list[dict], thinking: bool,
                 starts_in_thinking: bool = False, special_tokens: Iterable[str] = (),
                 new_id: Callable[[], str] | None = None):
        self.family = ALIASES.get(family, family)
        self._tools = [t for t in tools or [] if isinstance(t, dict) and isinstance(t.get("name"), str)]
        self._new_id = new_id or new_tool_id
        self._strip = _SpecialStripper(special_tokens)
        self._scan = ContentScanner(family, emit_thinking=thinking,
                                    starts_in_thinking=starts_in_thinking,
                                    is_known=lambda name: resolve_tool(name, self._tools) is not None,
                                    finalize=self._finalize, tools=self._tools)
        self._finished = False
        self.tool_calls = 0

    def feed(self, text: str) -> list[dict]:
        if self._finished:
            raise RuntimeError("OutputParser.feed() after finish()")
        if not text:
            return []
        return _merge(self._scan.feed(self._strip.feed(text)))

    def finish(self) -> list[dict]:
        if self._finished:
            return []
        self._finished = True
        return _merge(self._scan.feed(self._strip.finish()) + self._scan.finish())

    def _finalize(self, item: Candidate) -> list[dict] | None:
        """A read call -> its three events, or None (logged) when it is not usable."""
        if item.incomplete:
            return self._unparsed(item, "the call was not closed when the output ended "
                                        "(max_tokens or a stop sequence): not executed")
        if item.error is not None:
            return self._unparsed(item, item.error)
        tool = resolve_tool(item.name, self._tools)
        if tool is None:
            return self._unparsed(item, f"unknown tool {item.name!r}")
        schema = tool.get("input_schema") if isinstance(tool.get("input_schema"), dict) else {}
        args = item.args
        if item.xml:
            props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
            again = parse_function(item.body, known=set(props)) if item.body and props else None
            args = type_params(again[1] if isinstance(again, tuple) else args, schema)
        fixed, violations = repair_call(args, schema)
        try:
            text = json.dumps(fixed, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except ValueError:
            return self._unparsed(item, "arguments hold a number JSON cannot carry (NaN, Infinity)")
        log = structlog.get_logger()
        if tool["name"] != item.name or fixed != args:
            changed = sorted({k for k in fixed if k not in args or fixed[k] != args[k]}
                             | {k for k in args if k not in fixed})
            log.info("engine.toolcall.repaired", tool=tool["name"], called=item.name,
                     family=self.family, fields=changed)
        if violations:
            log.warning("engine.toolcall.invalid", tool=tool["name"], family=self.family,
                        violations=violations[:10], note="passed on for the client to reject")
        self.tool_calls += 1
        return [{"type": "tool_start", "id": self._new_id(), "name": tool["name"]},
                {"type": "tool_args", "json": text},
                {"type": "tool_end"}]

    def _unparsed(self, item: Candidate, reason: str) -> None:
        structlog.get_logger().warning("engine.toolcall.unparsed", reason=reason,
                                       family=self.family, tool=item.name,
                                       raw=item.raw[:500])
        return None
