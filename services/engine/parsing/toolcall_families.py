"""Tool-call families read with mlx-lm's own parsers (mlx_lm/tool_parsers), plus DeepSeek.

Each of these formats has an opening and a closing marker (``FamilySpec.start`` / ``end``).
The content scanner finds the opening marker in the stream; ``DelimitedReader`` waits for the
closing one and hands the text between them to the family's parser, as mlx-lm's server does.
What the project adds around mlx-lm's parsers (mlx-lm has none of it):

- a call whose closing marker never came (max_tokens, a stop sequence) is marked incomplete
  and shown as text, never executed; mlx-lm's server would parse what it has;
- a section whose parser fails, or reads fewer calls than the section opens (mlx-lm's
  kimi_k3 and minimax_m2 skip a call they cannot read), is shown whole as text: no call is
  silently dropped;
- arguments then go through the same schema repair as every family (output.py).

DeepSeek V3 / R1 / V3.1 has no parser in mlx-lm 0.32; ``parse_deepseek`` is ours.
The pythonic family also reads a bare ``[name(arg=…)]`` at a line start (Llama 4 writes its
calls without markers); the bracket ends that call.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass
from typing import Callable

from anyclaude.prompt.blocks import function_tool
from anyclaude.services.engine.parsing.toolcall_base import Candidate, Reader
from anyclaude.services.engine.parsing.toolcall_json import call_from_obj, load_json


@dataclass(frozen=True)
class FamilySpec:
    name: str
    start: str
    end: str
    module: str | None          # mlx_lm.tool_parsers.<module>, None: ours
    call_marker: str | None     # counted in a section: how many calls it opens
    tokens: tuple[str, ...] = ()  # other special tokens the parser must see (never stripped)
    keep_start: bool = False    # the opening marker is part of the call (minicpm5)


_DS = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"

SPECS = {spec.name: spec for spec in (
    FamilySpec("pythonic", "<|tool_call_start|>", "<|tool_call_end|>", "pythonic", None),
    FamilySpec("glm47", "<tool_call>", "</tool_call>", "glm47", None,
               ("<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>")),
    FamilySpec("kimi_k2", "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", "kimi_k2",
               "<|tool_call_begin|>", ("<|tool_call_begin|>", "<|tool_call_end|>",
                                       "<|tool_call_argument_begin|>")),
    FamilySpec("kimi_k3", "<|open|>tools<|sep|>", "<|close|>tools<|sep|>", "kimi_k3",
               "<|open|>call", ("<|open|>", "<|close|>", "<|sep|>")),
    FamilySpec("minimax_m2", "<minimax:tool_call>", "</minimax:tool_call>", "minimax_m2",
               "<invoke name="),
    FamilySpec("gemma4", "<|tool_call>", "<tool_call|>", "gemma4", "call:", ('<|"|>',)),
    FamilySpec("function_gemma", "<start_function_call>", "<end_function_call>",
               "function_gemma", "call:", ("<escape>",)),   # mlx-lm reads the first call only
    FamilySpec("longcat", "<longcat_tool_call>", "</longcat_tool_call>", "longcat", None,
               ("<longcat_arg_key>", "</longcat_arg_key>", "<longcat_arg_value>",
                "</longcat_arg_value>")),
    FamilySpec("minicpm5", '<function name=', "</function>", "minicpm5", None, keep_start=True),
    FamilySpec("muse_spark", "<atem:function_calls>", "</atem:function_calls>", "muse_spark",
               "<atem:invoke"),
    FamilySpec("deepseek", _DS[0], _DS[1], None, _DS[2], _DS[2:]),
)}
# mlx-lm's names for families the project reads with a reader of its own.
ALIASES = {"json_tools": "hermes", "laguna": "glm47"}
MARKERS = frozenset(m for spec in SPECS.values() for m in (spec.start, spec.end) + spec.tokens)


def openai_tools(tools: list[dict]) -> list[dict]:
    """The request's tools in the OpenAI shape mlx-lm's parsers read parameter types from
    (only ``function.name`` and ``function.parameters.properties`` matter to them)."""
    return [function_tool(t) for t in tools
            if isinstance(t, dict) and isinstance(t.get("name"), str)]


_DS_CALL = re.compile(re.escape(_DS[2]) + r"(.*?)" + re.escape(_DS[3]), re.DOTALL)
_FENCED = re.compile(r"\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def parse_deepseek(text: str, tools=None) -> list[dict]:
    """``<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n```json\\n{…}\\n```<｜tool▁call▁end｜>``
    (V3 / R1) and ``<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{…}<｜tool▁call▁end｜>`` (V3.1)."""
    calls = []
    for body in _DS_CALL.findall(text):
        head, sep, rest = body.partition(_DS[4])
        if not sep:
            raise ValueError("tool call without <｜tool▁sep｜>")
        if head.strip() == "function":
            name, _, rest = rest.partition("\n")
        else:
            name = head
        fenced = _FENCED.match(rest)
        args, error = load_json(fenced.group(1) if fenced else rest)
        if error is not None:
            raise ValueError(error)
        calls.append({"name": name.strip(), "arguments": args})
    if not calls:
        raise ValueError("no <｜tool▁call▁begin｜> in the tool calls")
    return calls


_CALL_HEAD = re.compile(r"[A-Za-z_][\w.]*\s*\(")


def _pythonic_calls(text: str) -> int:
    """How many calls the list opens at its top level (quote-aware)."""
    depth, quote, count, i = 0, "", 0, 0
    while i < len(text):
        c = text[i]
        if quote:
            i += 2 if c == "\\" else 1
            quote = "" if c == quote else quote
            continue
        if c in "'\"":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 1 and (m := _CALL_HEAD.match(text, i)) and (i == 0 or not text[i - 1].isalnum()):
            count += 1
            i = m.end() - 1
            continue
        i += 1
    return count


def parse_pythonic(text: str, tools=None):
    """mlx-lm's pythonic parser; its regex fallback (for text that is not valid Python) reads
    only the first call, so a list of several calls that is not valid Python is refused
    rather than read as one call with the rest merged into its arguments."""
    from mlx_lm.tool_parsers import pythonic
    parsed = pythonic.parse_tool_call(text, tools)
    calls = parsed if isinstance(parsed, list) else [parsed]
    if len(calls) < _pythonic_calls(text[text.find("["):]):
        raise ValueError("several calls that are not valid Python")
    return parsed


def parser_of(spec: FamilySpec) -> Callable:
    if spec.module is None:
        return parse_deepseek
    if spec.name == "pythonic":
        return parse_pythonic
    try:
        return importlib.import_module(f"mlx_lm.tool_parsers.{spec.module}").parse_tool_call
    except ImportError as exc:
        raise ValueError(f"the tool-call family {spec.name!r} needs mlx-lm's "
                         f"tool_parsers.{spec.module} (mlx-lm 0.32 or newer): {exc}") from None


def read_section(spec: FamilySpec, body: str, raw: str, tools: list[dict]) -> list[Candidate]:
    """The calls in one closed section; the whole section as one unusable candidate when
    its parser fails or reads fewer calls than the section opens."""
    try:
        parsed = parser_of(spec)(body, openai_tools(tools))
    except Exception as exc:  # noqa: BLE001 - mlx-lm's parsers raise anything on bad input
        return [Candidate(raw=raw, error=f"{spec.name} parser: {type(exc).__name__}: {exc}")]
    calls = parsed if isinstance(parsed, list) else [parsed]
    opened = body.count(spec.call_marker) if spec.call_marker else len(calls)
    if not calls or len(calls) < opened:
        return [Candidate(raw=raw, error=f"read {len(calls)} of the {opened} calls in the section")]
    # The first call carries the section's text; the others a JSON rendering of themselves,
    # so a later call that turns out unusable (an unknown tool) is still shown.
    out = [call_from_obj(call, raw if k == 0 else json.dumps(call, ensure_ascii=False, default=str))
           for k, call in enumerate(calls)]
    if len(out) > 1 and any(c.error for c in out):
        return [Candidate(raw=raw, error="; ".join(c.error for c in out if c.error))]
    return out


@dataclass
class DelimitedReader(Reader):
    """From a family's opening marker (at ``start``) to its closing marker."""

    spec: FamilySpec | None = None
    tools: tuple = ()
    pos: int = 0

    def step(self, final: bool) -> bool:
        spec, raw = self.spec, self.raw
        body = self.start + len(spec.start)
        at = raw.find(spec.end, max(body, self.pos))
        if at < 0:
            self.pos = max(body, len(raw) - len(spec.end) + 1)
            if final:
                return self.fail(f"{spec.name} call not closed by {spec.end}", incomplete=True)
            return False
        self.end = at + len(spec.end)
        text = raw[self.start if spec.keep_start else body:self.end if spec.keep_start else at]
        self.items = read_section(spec, text, raw[:self.end], list(self.tools))
        return True


_BARE = re.compile(r"\[\s*([A-Za-z_][\w.\-]{0,127})\s*\(")
BARE_PREFIX = re.compile(r"\[\s*[A-Za-z_][\w.\-]{0,127}")


def bare_pythonic_head(text: str, i: int) -> str | None:
    m = _BARE.match(text, i)
    return m.group(1) if m else None


class PythonBrackets:
    """Where a Python list that starts at ``pos`` ends, across pieces of text: brackets
    outside ``'…'`` / ``"…"`` strings (JsonScanner knows only double quotes)."""

    def __init__(self, pos: int):
        self.pos, self.depth, self.quote = pos, 0, ""

    def run(self, text: str) -> tuple[str, int]:
        i = self.pos
        while i < len(text):
            c = text[i]
            if self.quote:
                if c == "\\":
                    if i + 1 == len(text):
                        break
                    i += 2
                    continue
                if c == self.quote:
                    self.quote = ""
            elif c in "'\"":
                self.quote = c
            elif c in "([{":
                self.depth += 1
            elif c in ")]}":
                self.depth -= 1
                if self.depth <= 0:
                    self.pos = i + 1
                    return "done", i + 1
            i += 1
        self.pos = i
        return "wait", i


@dataclass
class BarePythonicReader(Reader):
    """``[name(a=1), other(b="x")]`` at a line start: ends where the bracket closes."""

    tools: tuple = ()
    scanner: PythonBrackets | None = None

    def step(self, final: bool) -> bool:
        if self.scanner is None:
            self.scanner = PythonBrackets(self.start)
        state, j = self.scanner.run(self.raw)
        if state == "wait":
            return self.fail("pythonic call not closed by ]", incomplete=True) if final else False
        self.end = j
        self.items = read_section(SPECS["pythonic"], self.raw[self.start:j], self.raw[:j],
                                  list(self.tools))
        return True
