"""JSON tool calls: Hermes / Qwen ``<tool_call>{…}</tool_call>``, Llama 3 bare objects (also
after ``<|python_tag|>``), and the helpers the Mistral reader shares.

A JSON call is found by scanning brackets outside strings, incrementally, so a closing tag
inside an argument string (a file being written that contains ``</tool_call>``) does not end
the call, and a call whose closing tag never comes still ends where its JSON ends.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any

from anyclaude.services.engine.parsing.toolcall_base import PARTIAL, Candidate, Reader, is_prefix, lit, skip_ws
from anyclaude.services.engine.parsing.toolcall_xml import XmlEnd, xml_candidates

TAG_OPEN = "<tool_call>"
TAG_CLOSE = "</tool_call>"
PYTHON_TAG = "<|python_tag|>"

_DECODER = json.JSONDecoder(strict=False)
_OUTSIDE = re.compile(r'["{}\[\]<]')
_INSIDE = re.compile(r'["\\]')
_ARG_KEYS = ("arguments", "parameters", "input", "args")


class JsonScanner:
    """Finds where a JSON value that starts at ``pos`` ends, across pieces of text."""

    def __init__(self, pos: int):
        self.pos = pos
        self.depth = 0
        self.in_string = False

    def run(self, text: str, stop_tag: str | None = None) -> tuple[str, int]:
        """("done", end) | ("tag", where stop_tag starts outside strings) | ("wait", pos)."""
        i, n = self.pos, len(text)
        while i < n:
            if self.in_string:
                m = _INSIDE.search(text, i)
                if m is None:
                    i = n
                    break
                j = m.start()
                if text[j] == "\\":
                    if j + 1 >= n:
                        i = j
                        break
                    i = j + 2
                    continue
                self.in_string = False
                i = j + 1
                continue
            m = _OUTSIDE.search(text, i)
            if m is None:
                i = n
                break
            j, c = m.start(), m.group()
            i = j + 1
            if c == '"':
                self.in_string = True
            elif c in "{[":
                self.depth += 1
            elif c in "}]":
                self.depth -= 1
                if self.depth <= 0:
                    self.pos = i
                    return "done", i
            elif stop_tag is not None:
                if text.startswith(stop_tag, j):
                    self.pos = j
                    return "tag", j
                if is_prefix(text, j, stop_tag):
                    i = j
                    break
        self.pos = i
        return "wait", i


def load_json(text: str) -> tuple[Any, str | None]:
    """Parse a call body leniently: raw control characters in strings, stray closing
    brackets after the value, or a Python literal (single quotes, True/False/None)."""
    body = text.strip()
    if not body:
        return None, "empty tool call"
    try:
        return json.loads(body, strict=False), None
    except ValueError as exc:
        error = f"invalid JSON: {exc}"
    try:
        value, k = _DECODER.raw_decode(body)
        rest = body[k:].strip()
        if rest and set(rest) <= set("}]"):
            return value, None
    except ValueError:
        pass
    if body[0] in "{[":
        try:
            value = ast.literal_eval(body)
            if isinstance(value, (dict, list)):
                return json.loads(json.dumps(value)), None
        except Exception:  # noqa: BLE001 - anything literal_eval or dumps raises means "no"
            pass
    return None, error


def call_from_obj(obj: Any, raw: str) -> Candidate:
    """``{"name", "arguments" | "parameters" | "input"}`` (also OpenAI's nested
    ``{"function": {...}}``) -> a candidate; arguments given as a JSON string are decoded."""
    if not isinstance(obj, dict):
        return Candidate(raw=raw, error="tool call is not a JSON object")
    if isinstance(obj.get("function"), dict):
        obj = {**obj, **obj["function"]}
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return Candidate(raw=raw, error="tool call has no name")
    args: Any = {}
    for key in _ARG_KEYS:
        if key in obj:
            args = obj[key]
            break
    if args is None:
        args = {}
    if isinstance(args, str):
        if not args.strip():
            args = {}
        else:
            try:
                args = json.loads(args, strict=False)
            except ValueError:
                return Candidate(raw=raw, name=name.strip(), error="arguments string is not JSON")
    if not isinstance(args, dict):
        return Candidate(raw=raw, name=name.strip(), error="arguments are not a JSON object")
    return Candidate(raw=raw, name=name.strip(), args=args)


def array_items(text: str) -> list[tuple[Any, int]] | None:
    """The elements of a JSON array with where each starts in ``text``, or None if it is
    not one."""
    s = text.rstrip()
    i = skip_ws(s, 0)
    if not s.startswith("[", i):
        return None
    out: list[tuple[Any, int]] = []
    i = skip_ws(s, i + 1)
    try:
        if s[i] == "]":
            return out
        while True:
            value, j = _DECODER.raw_decode(s, i)
            out.append((value, i))
            i = skip_ws(s, j)
            if s[i] == ",":
                i = skip_ws(s, i + 1)
            elif s[i] == "]" and not s[i + 1:].strip():
                return out
            else:
                return None
    except (ValueError, IndexError):
        return None


def candidates(body: str, raw: str) -> list[Candidate]:
    """Every call in a JSON body: one object, or an array of them."""
    items = array_items(body)
    if items is not None and len(items) > 1:
        # Each element's text runs to the next element, the first from the start of the raw
        # text and the last to its end: a refused element shows with its brackets and commas.
        at = raw.find(body)
        cuts = [0] + [at + start for _, start in items[1:]] + [len(raw)]
        return [call_from_obj(value, raw[cuts[k]:cuts[k + 1]]) for k, (value, _) in enumerate(items)]
    if items is not None and len(items) == 1:
        return [call_from_obj(items[0][0], raw)]
    value, error = load_json(body)
    if error is not None:
        return [Candidate(raw=raw, error=error)]
    if isinstance(value, list):
        if not value:
            return [Candidate(raw=raw, error="empty list of tool calls")]
        if len(value) == 1:
            return [call_from_obj(value[0], raw)]
        return [call_from_obj(v, json.dumps(v, ensure_ascii=False)) for v in value]
    return [call_from_obj(value, raw)]


def match_call_head(text: str, i: int) -> tuple[str, int] | str | None:
    """Does a bare ``{"name": "…"`` (optionally after ``"type": "function",``) start at
    ``i``? Returns (name, index after it), PARTIAL, or None."""
    j = lit(text, i, "{")
    if not isinstance(j, int):
        return j
    j = skip_ws(text, j)
    head = lit(text, j, '"name"')
    if head is None:
        typed = lit(text, j, '"type"')
        if not isinstance(typed, int):
            return typed
        for word in (":", '"function"', ","):
            typed = lit(text, skip_ws(text, typed), word)
            if not isinstance(typed, int):
                return typed
        head = lit(text, skip_ws(text, typed), '"name"')
    if not isinstance(head, int):
        return head
    j = lit(text, skip_ws(text, head), ":")
    if not isinstance(j, int):
        return j
    j = lit(text, skip_ws(text, j), '"')
    if not isinstance(j, int):
        return j
    k = j
    while k < len(text) and k - j <= 128:
        c = text[k]
        if c == '"':
            return text[j:k], k + 1
        if c in "\\\n{}[]":
            return None
        k += 1
    return PARTIAL if k == len(text) else None


@dataclass
class TagReader(Reader):
    """``<tool_call>`` … ``</tool_call>`` with a JSON body (one object or a list) or a
    Qwen3-Coder XML body; anything else in the tags is reported as unparseable."""

    mode: str | None = None
    scanner: JsonScanner | None = None
    json_end: int | None = None
    xml: XmlEnd | None = None

    @property
    def body(self) -> int:
        return self.start + len(TAG_OPEN)

    def step(self, final: bool) -> bool:
        raw = self.raw
        if self.mode is None:
            i = skip_ws(raw, self.body)
            if i == len(raw):
                return self.fail("empty tool call") if final else False
            xml, close = lit(raw, i, "<function="), lit(raw, i, TAG_CLOSE)
            if raw[i] in "{[":
                self.mode, self.scanner = "json", JsonScanner(i)
            elif PARTIAL in (xml, close) and not final:
                return False
            elif isinstance(xml, int):
                self.mode, self.xml = "xml", XmlEnd(body=self.body, pos=i, tagged=True)
            elif isinstance(close, int):
                return self.fail("empty tool call", close)
            else:
                self.mode = "opaque"
        if self.mode == "json":
            return self._json(final)
        if self.mode == "xml":
            found = self.xml.step(raw, final)
            if found is None:
                return False
            body_end, self.end = found
            self.items = xml_candidates(raw[self.body:body_end], raw[:self.end], cut=self.xml.cut)
            return True
        # Neither JSON nor XML follows: only the tag is taken, the rest is read as usual.
        return self.fail("<tool_call> is not followed by JSON or <function=", self.body)

    def _json(self, final: bool) -> bool:
        raw = self.raw
        if self.json_end is None:
            state, j = self.scanner.run(raw, TAG_CLOSE)
            if state == "tag":
                return self._close(j, j + len(TAG_CLOSE))
            if state == "wait":
                if not final:
                    return False
                close = raw.find(TAG_CLOSE, self.body)
                if close >= 0:
                    return self._close(close, close + len(TAG_CLOSE))
                return self._close(len(raw), len(raw), cut=True)
            self.json_end = j
        k = j = self.json_end
        while j < len(raw) and raw[j] in " \t\r\n}]":  # stray closing brackets are common
            j += 1
        if j == len(raw):
            return self._close(len(raw), len(raw)) if final else False
        m = lit(raw, j, TAG_CLOSE)
        if isinstance(m, int):
            return self._close(j, m)
        if m == PARTIAL and not final:
            return False
        return self._close(k, k)  # the closing tag is missing: the call ends with its JSON

    def _close(self, body_end: int, end: int, cut: bool = False) -> bool:
        self.end = end
        self.items = candidates(self.raw[self.body:body_end], self.raw[:end])
        for item in self.items:
            item.incomplete = cut
        return True


@dataclass
class ObjectReader(Reader):
    """A bare JSON call object at ``start`` (Llama 3, or a call whose wrapper tag is
    missing), or after ``<|python_tag|>`` when ``tagged``. Calls separated by ``;``
    (Llama 3 does this) are split so the next one is read as its own call."""

    tagged: bool = False
    scanner: JsonScanner | None = None
    json_end: int | None = None
    obj: int = 0

    def step(self, final: bool) -> bool:
        raw = self.raw
        if self.scanner is None:
            i = skip_ws(raw, self.start + len(PYTHON_TAG)) if self.tagged else self.start
            if i == len(raw):
                return self.fail("nothing after <|python_tag|>") if final else False
            if raw[i] != "{":
                return self.fail("<|python_tag|> is not followed by a JSON call", i)
            self.obj, self.scanner = i, JsonScanner(i)
        if self.json_end is None:
            state, j = self.scanner.run(raw)
            if state == "wait":
                return self._close(len(raw), len(raw), cut=True) if final else False
            self.json_end = j
        k = self.json_end
        j = skip_ws(raw, k)
        if j == len(raw):
            return self._close(k, k) if final else False
        if raw[j] != ";":
            return self._close(k, k)
        after = skip_ws(raw, j + 1)
        if after == len(raw):
            return self._close(k, j + 1) if final else False
        return self._close(k, after if raw[after] == "{" else k)

    def _close(self, body_end: int, end: int, cut: bool = False) -> bool:
        self.end = end
        body = self.raw[self.obj:body_end]
        value, error = load_json(body)
        if error is not None:
            self.items = [Candidate(raw=self.raw[:end], error=error, incomplete=cut)]
        else:
            self.items = [call_from_obj(value, self.raw[:end])]
            self.items[0].incomplete = cut
        return True
