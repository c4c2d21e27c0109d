"""The content scanner: model text (special tokens already removed) -> text, thinking and
tool-call events, incrementally.

Ordinary text goes out as soon as it cannot be the start of something else; only a
possible partial marker is held back (and trailing whitespace, see below). What starts
something else, by family:

  every family   a reasoning opener (``<think>``, ``[THINK]``, … thinking.THINK_PAIRS) before
                 any answer text; a stray closer (dropped)
  JSON families  ``<tool_call>``; a stray ``</tool_call>`` (dropped); a bare
  (hermes,       ``{"name": "<known tool>"…`` object (at a line start any name for llama3;
  qwen3_coder,   elsewhere a known tool only); a markdown fence or a ``<tools>``,
  mistral,       ``<response>``, ``<json>`` wrapper tag whose content starts a call (the
  llama3)        wrapper is dropped with the call)
  hermes, qwen3_coder   ``<function=`` (a Qwen3-Coder call without its wrapper)
  mistral        ``[TOOL_CALLS]``
  llama3         ``<|python_tag|>``
  mlx-lm families  the family's opening marker (toolcall_families.SPECS); pythonic also a
                 bare ``[known_tool(`` at a line start

Why hermes, qwen3_coder, mistral and llama3 keep readers of their own rather than mlx-lm's
json_tools / qwen3_coder / mistral parsers: those parse a finished text and are strict or
lossy where models are not clean - json_tools is a plain ``json.loads`` (no raw newlines in
strings, Python literals, stray brackets), qwen3_coder reads only the first ``<function=``
of a section (a second one is dropped), neither finds a call whose wrapper is missing or
fenced, and mlx-lm has no Llama 3 parser. The other families use mlx-lm's parsers
(toolcall_families.py).

Whitespace: text right after ``</think>`` or after a tool call loses its leading
whitespace, and whitespace right before a tool call or ``<think>`` is dropped, so no
whitespace-only text sits between blocks. Other text passes through unchanged.
"""

from __future__ import annotations

import re
from typing import Callable

from anyclaude.services.engine.parsing.thinking import THINK_PAIRS, ThinkBlock
from anyclaude.services.engine.parsing.toolcall_families import (
    ALIASES, BARE_PREFIX, SPECS, BarePythonicReader, DelimitedReader, bare_pythonic_head)
from anyclaude.services.engine.parsing.toolcall_base import PARTIAL, Candidate, Reader, lit, skip_ws
from anyclaude.services.engine.parsing.toolcall_json import PYTHON_TAG, TAG_CLOSE, TAG_OPEN, ObjectReader, TagReader, match_call_head
from anyclaude.services.engine.parsing.toolcall_mistral import MARK as MISTRAL_MARK
from anyclaude.services.engine.parsing.toolcall_mistral import MistralReader
from anyclaude.services.engine.parsing.toolcall_xml import FUNC_OPEN, FunctionReader

TOOL_FAMILIES = ("hermes", "qwen3_coder", "mistral", "llama3")   # read by readers of our own
FAMILIES = TOOL_FAMILIES + tuple(SPECS) + ("none",)
KNOWN_FAMILIES = FAMILIES + tuple(ALIASES)   # what the tool_parser setting accepts

_READERS = {"tag": TagReader, "function": FunctionReader, "mistral": MistralReader,
            "python": lambda **kw: ObjectReader(tagged=True, **kw), "delimited": None}
_WRAPPERS = {"<tools>": "</tools>", "<response>": "</response>", "<json>": "</json>"}
_FENCE = re.compile(r"```[\w+\-]{0,20}[ \t]*\r?\n")
_FENCE_PREFIX = re.compile(r"`{1,2}|```[\w+\-]{0,20}[ \t]*\r?")
FENCE_CLOSE = "```"
_FUNC_HEAD = re.compile(r"<function=([A-Za-z0-9_.\-]{1,128})>")
_FUNC_HEAD_PREFIX = re.compile(r"<function=[A-Za-z0-9_.\-]{0,128}")


def _markers(family: str) -> list[tuple[str, str]]:
    out = [(opener, "think") for opener, _ in THINK_PAIRS]
    out += [(closer, "drop_think") for _, closer in THINK_PAIRS]
    if family in SPECS:
        out.append((SPECS[family].start, "delimited"))
    if family in TOOL_FAMILIES:
        out += [(TAG_OPEN, "tag"), (TAG_CLOSE, "drop")]
        out += [(tag, "wrap") for tag in _WRAPPERS]
    if family in ("hermes", "qwen3_coder"):
        out.append((FUNC_OPEN, "function"))
    if family == "mistral":
        out.append((MISTRAL_MARK, "mistral"))
    if family == "llama3":
        out.append((PYTHON_TAG, "python"))
    return out


def _line_start(text: str, ls: bool) -> bool:
    """Is the position after ``text`` at the start of a line (indentation aside)?"""
    nl = text.rfind("\n")
    if nl >= 0:
        return not text[nl + 1:].strip(" \t")
    return ls and not text.strip(" \t")


class ContentScanner:
    def __init__(self, family: str, *, emit_thinking: bool, starts_in_thinking: bool,
                 is_known: Callable[[str], bool], finalize: Callable[[Candidate], list[dict] | None],
                 tools: list[dict] = ()):
        family = ALIASES.get(family, family)
        if family not in FAMILIES:
            raise ValueError(f"unknown tool-call family {family!r}; allowed: {', '.join(FAMILIES)}")
        self.family = family
        self._tools = tuple(tools)
        self._emit_thinking = emit_thinking
        self._is_known = is_known
        self._finalize = finalize
        self._markers = _markers(family)
        chars = "<[" + ("{`" if family in TOOL_FAMILIES else "")
        self._trigger = re.compile("[" + re.escape(chars) + "]")
        self._out: list[dict] = []
        self._buf = ""
        self._reader: Reader | None = None
        self._think: ThinkBlock | None = ThinkBlock() if starts_in_thinking else None
        self._line_start = True
        self._content_seen = False    # answer text or a tool call went out
        self._strip_leading = False   # drop whitespace at the start of the next text
        self._ws = ""                 # trailing whitespace of the text, held back
        self._close_after = None      # a fenced / wrapped call was read: drop this closer

    def feed(self, text: str) -> list[dict]:
        self._buf += text
        self._run(final=False)
        out, self._out = self._out, []
        return out

    def finish(self) -> list[dict]:
        self._run(final=True)
        if self._ws and not self._strip_leading:
            self._out.append({"type": "text", "text": self._ws})
        self._ws = ""
        out, self._out = self._out, []
        return out

    # -- the loop ---------------------------------------------------------------------------

    def _run(self, final: bool) -> None:
        while True:
            if self._think is not None:
                texts, rest = self._think.feed(self._buf, final)
                self._buf = ""
                if self._emit_thinking:
                    self._out.extend({"type": "thinking", "text": t} for t in texts)
                if rest is None:
                    return
                self._think, self._buf, self._strip_leading = None, rest, True
            elif self._reader is not None:
                if self._buf:
                    self._reader.feed(self._buf)
                    self._buf = ""
                if not self._reader.step(final):
                    return
                self._reader_done()
            elif not self._scan(final):
                return

    def _reader_done(self) -> None:
        reader, self._reader = self._reader, None
        self._buf = reader.raw[reader.end:] + self._buf
        called = False
        for item in reader.items:
            events = self._finalize(item)
            if events is None:
                self._text(item.raw)
                self._line_start = _line_start(item.raw, self._line_start)
            else:
                self._ws = ""
                self._out.extend(events)
                self._content_seen = called = True
                self._strip_leading = self._line_start = True
        if called and reader.closer:
            self._close_after = reader.closer

    def _scan(self, final: bool) -> bool:
        """Emit text up to the next marker; True when a block or a call begins."""
        buf = self._buf
        if self._close_after:
            j = skip_ws(buf, 0)
            closing = lit(buf, j, self._close_after)
            if (j == len(buf) or closing == PARTIAL) and not final:
                return False
            self._close_after = None
            if isinstance(closing, int):
                buf = buf[closing:]
        start, ls = 0, self._line_start
        while True:
            m = self._trigger.search(buf, start)
            j = m.start() if m else len(buf)
            self._text(buf[start:j])
            ls = _line_start(buf[start:j], ls)
            if m is None:
                self._buf, self._line_start = "", ls
                return False
            found = self._match(buf, j, ls, final)
            if found is None:
                self._text(buf[j])
                start, ls = j + 1, False
                continue
            if found == PARTIAL:
                self._buf, self._line_start = buf[j:], ls
                return False
            kind, value = found
            if kind in ("drop", "drop_think"):
                start = value   # a stray closing tag: dropped, the text around it stays
                continue
            self._buf, self._line_start = "", ls
            if kind == "think":
                self._ws, self._think, self._buf = "", ThinkBlock(value[1]), buf[value[0]:]
            else:
                self._reader = value
            return True

    def _match(self, buf: str, j: int, ls: bool, final: bool, inner: bool = False):
        """What starts at ``j``: None, PARTIAL, or (kind, end | reader)."""
        c = buf[j]
        if c == "[" and ls and self.family == "pythonic":
            name = bare_pythonic_head(buf, j)
            if name is None and not final and BARE_PREFIX.fullmatch(buf, j):
                return PARTIAL
            if name is not None and self._is_known(name):
                return "reader", BarePythonicReader(raw=buf[j:], start=0, tools=self._tools)
        if c in "<[":
            partial = False
            for word, kind in self._markers:
                if inner and kind not in _READERS:
                    continue
                if kind == "think" and self._content_seen:
                    continue
                at = lit(buf, j, word)
                if isinstance(at, int) and kind == "function":
                    at = self._function_head(buf, j, final)  # only a known tool's name counts
                    if at is None:
                        continue
                if isinstance(at, int) and kind == "wrap":
                    found = self._wrapped(buf, j, at, final, _WRAPPERS[word])
                    if found is None:
                        continue
                    return found
                if isinstance(at, int):
                    if kind == "delimited":
                        return "reader", DelimitedReader(raw=buf[j:], start=0, tools=self._tools,
                                                         spec=SPECS[self.family])
                    if kind in _READERS:
                        return "reader", _READERS[kind](raw=buf[j:], start=0)
                    return kind, ((at, word) if kind == "think" else at)
                partial = partial or at == PARTIAL
            return PARTIAL if partial and not final else None
        if c == "{" and (ls or self.family == "llama3"):  # after text on a line: Llama 3 only
            head = match_call_head(buf, j)
            if head == PARTIAL:
                return None if final else PARTIAL
            if head is None or not ((ls and self.family == "llama3") or self._is_known(head[0])):
                return None
            return "reader", ObjectReader(raw=buf[j:], start=0)
        if not ls:
            return None
        if c == "`" and not inner:
            m = _FENCE.match(buf, j)
            if m is None:
                return PARTIAL if not final and _FENCE_PREFIX.fullmatch(buf, j) else None
            k = skip_ws(buf, m.end())
            if k == len(buf):
                return None if final else PARTIAL
            found = self._match(buf, k, True, final, inner=True)
            if found is None or found == PARTIAL:
                return found
            reader = found[1]
            reader.raw, reader.start, reader.closer = buf[j:], k - j, FENCE_CLOSE
            return "reader", reader
        return None

    def _wrapped(self, buf: str, j: int, at: int, final: bool, closer: str):
        """A wrapper tag at ``j`` (ending at ``at``) directly around a call: the call's
        reader, owning the tag; PARTIAL; or None (the tag is text)."""
        k = skip_ws(buf, at)
        if k == len(buf):
            return None if final else PARTIAL
        found = self._match(buf, k, True, final, inner=True)
        if found is None or found == PARTIAL:
            return found
        reader = found[1]
        reader.raw, reader.start, reader.closer = buf[j:], k - j, closer
        return "reader", reader

    def _function_head(self, buf: str, j: int, final: bool) -> int | str | None:
        m = _FUNC_HEAD.match(buf, j)
        if m is None:
            if not final and _FUNC_HEAD_PREFIX.fullmatch(buf, j):
                return PARTIAL
            return None
        return m.end() if self._is_known(m.group(1)) else None

    def _text(self, text: str) -> None:
        if not text:
            return
        if self._strip_leading:
            text = text.lstrip()
            if not text:
                return
            self._strip_leading = False
        text = self._ws + text
        kept = text.rstrip()
        self._ws = text[len(kept):]
        if kept:
            self._out.append({"type": "text", "text": kept})
            self._content_seen = True
