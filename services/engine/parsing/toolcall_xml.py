"""Qwen3-Coder XML tool calls:

    <tool_call>
    <function=NAME>
    <parameter=KEY>
    value
    </parameter>
    </function>
    </tool_call>

Values are raw text: they may hold ``<``, ``</`` and newlines (code being written). Exactly
one newline right after ``<parameter=KEY>`` and one right before ``</parameter>`` belong to
the format and are removed, as Qwen3-Coder's own parser does. Values are typed later from
the tool's schema (``type_params``): strings stay verbatim, anything else is read as JSON.

Where a call ends is decided conservatively, so that closing tags inside values do not end
it: ``</function>`` counts only right after a ``</parameter>`` (or right after the function
header), and ``</tool_call>`` only outside a parameter value. A value cannot hold
``</parameter>`` itself (nor can it for Qwen3-Coder's own parser). When the output ends
without a proper end, the first ``</tool_call>`` is taken; with none at all the call was cut
(max_tokens, a stop sequence) and is marked incomplete: it is never executed.

A value holding a literal ``</parameter>\n<parameter=x>`` is split there only when ``x`` is a
parameter of the tool (``parse_function(known=…)``, read again once the tool is known).
``<function=NAME>{json}</function>`` (a JSON body in the XML head, seen from Qwen fine-tunes)
is read too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from anyclaude.services.engine.parsing.toolcall_base import PARTIAL, Candidate, Reader, lit, skip_ws

FUNC_OPEN = "<function="
FUNC_CLOSE = "</function>"
PARAM_OPEN = "<parameter="
PARAM_CLOSE = "</parameter>"
TAG_CLOSE = "</tool_call>"

_HEAD = re.compile(r"<function=\s*[\"']?([^>\s\"']+)[\"']?\s*>")
_HEAD_ONLY = re.compile(r"<function=[^>]*>\s*")
_HEAD_JSON = re.compile(r"<function=[^>]*>\s*\{.*\}", re.DOTALL)
_SPLIT = re.compile(r"</function>\s*(?=<function=)")
_HOLD = max(len(FUNC_CLOSE), len(TAG_CLOSE)) - 1


def _ends_function(before: str) -> bool:
    """Can a ``</function>`` after ``before`` (the stripped body so far) end the function?"""
    return before.endswith(PARAM_CLOSE) or bool(_HEAD_ONLY.fullmatch(before)
                                                 or _HEAD_JSON.fullmatch(before))


def _in_open_param(body: str) -> bool:
    return body.rfind(PARAM_OPEN) > body.rfind(PARAM_CLOSE)


@dataclass
class XmlEnd:
    """Finds the end of an XML call in a growing text. ``body`` is where the call's body
    starts (just after ``<tool_call>``, or at ``<function=`` when the wrapper is missing)."""

    body: int
    pos: int
    tagged: bool
    cut: bool = False        # the output ended with the call still open

    def step(self, raw: str, final: bool) -> tuple[int, int] | None:
        """(end of body, end of call) once known, else None (wait for more text)."""
        while True:
            at_func = raw.find(FUNC_CLOSE, self.pos)
            at_tag = raw.find(TAG_CLOSE, self.pos) if self.tagged else -1
            if at_func < 0 and at_tag < 0:
                self.pos = max(self.pos, len(raw) - _HOLD)
                return self._final(raw) if final else None
            if at_func >= 0 and (at_tag < 0 or at_func < at_tag):
                before = raw[self.body:at_func].strip()
                if _ends_function(before):
                    k = at_func + len(FUNC_CLOSE)
                    j = skip_ws(raw, k)
                    if j == len(raw):
                        if final:
                            return k, k
                        self.pos = at_func
                        return None
                    m = lit(raw, j, TAG_CLOSE)
                    if isinstance(m, int):
                        return k, m
                    if m == PARTIAL and not final:
                        self.pos = at_func
                        return None
                    return k, k   # no (or a missing) </tool_call> after the function
                self.pos = at_func + 1
                continue
            if not _in_open_param(raw[self.body:at_tag]):
                return at_tag, at_tag + len(TAG_CLOSE)
            self.pos = at_tag + 1

    def _final(self, raw: str) -> tuple[int, int]:
        if self.tagged:
            at = raw.find(TAG_CLOSE, self.body)
            if at >= 0:
                return at, at + len(TAG_CLOSE)
        self.cut = True
        return len(raw), len(raw)


@dataclass
class FunctionReader(Reader):
    """``<function=NAME>…</function>`` without the ``<tool_call>`` wrapper."""

    xml: XmlEnd | None = None

    def step(self, final: bool) -> bool:
        if self.xml is None:
            self.xml = XmlEnd(body=self.start, pos=self.start, tagged=False)
        found = self.xml.step(self.raw, final)
        if found is None:
            return False
        body_end, self.end = found
        self.items = xml_candidates(self.raw[self.start:body_end], self.raw[:self.end],
                                    cut=self.xml.cut)
        return True


def _strip_one_newline(value: str) -> str:
    """The format's own newline after the opening tag and before the closing one."""
    if value.startswith("\n"):
        value = value[1:]
    if value.endswith("\n"):
        value = value[:-1]
    return value


def _next_param(inner: str, after: int, known: set[str] | None) -> bool:
    """Does a parameter the tool has (any, when ``known`` is None) open at ``after``?"""
    if not inner.startswith(PARAM_OPEN, after):
        return False
    if known is None:
        return True
    q = inner.find(">", after)
    return q >= 0 and inner[after + len(PARAM_OPEN):q].strip().strip("\"'") in known


def _value_end(inner: str, start: int, known: set[str] | None = None) -> tuple[int, int]:
    """Where a value that starts at ``start`` ends, and where reading goes on. The value
    ends at the first ``</parameter>`` followed by another (known) parameter or the end of
    the function; failing that at the first ``</parameter>``; failing that (a missing
    closing tag) at the next ``<parameter=`` or the end."""
    first = at = inner.find(PARAM_CLOSE, start)
    while at >= 0:
        after = skip_ws(inner, at + len(PARAM_CLOSE))
        if after == len(inner) or _next_param(inner, after, known):
            return at, at + len(PARAM_CLOSE)
        at = inner.find(PARAM_CLOSE, at + 1)
    if first >= 0:
        return first, first + len(PARAM_CLOSE)
    nxt = inner.find(PARAM_OPEN, start)
    return (nxt, nxt) if nxt >= 0 else (len(inner), len(inner))


def parse_function(text: str, known: set[str] | None = None) -> tuple[str, list | dict] | str:
    """``<function=NAME>…`` -> (name, [(key, raw value)]), or (name, {json args}) for a JSON
    body, or an error message. ``known``: the tool's parameter names, when known."""
    s = text.strip()
    m = _HEAD.match(s)
    if m is None:
        return "no <function=NAME> in the tool call"
    inner = s[m.end():].rstrip()
    if inner.endswith(FUNC_CLOSE):
        inner = inner[:-len(FUNC_CLOSE)]
    if inner.lstrip().startswith("{"):
        return _json_body(m.group(1), inner)
    params: list[tuple[str, str]] = []
    i = 0
    while True:
        p = inner.find(PARAM_OPEN, i)
        if inner[i:len(inner) if p < 0 else p].strip():
            return "text outside the <parameter=…> tags of the call"
        if p < 0:
            break
        q = inner.find(">", p)
        if q < 0:
            return "unterminated <parameter= tag"
        key = inner[p + len(PARAM_OPEN):q].strip().strip("\"'")
        if not key:
            return "parameter without a name"
        if any(k == key for k, _ in params):    # which value is meant? show it as text
            return f"parameter {key!r} given twice"
        end, i = _value_end(inner, q + 1, known)
        params.append((key, _strip_one_newline(inner[q + 1:end])))
    return m.group(1), params


def _json_body(name: str, inner: str) -> tuple[str, dict] | str:
    from anyclaude.services.engine.parsing.toolcall_json import load_json  # (imports this module)
    value, error = load_json(inner)
    if error is not None:
        return error
    return (name, value) if isinstance(value, dict) else "arguments are not a JSON object"


def _split_functions(body: str) -> list[str]:
    """Split a body holding several functions, only at a ``</function>`` that really ends
    one (right after a ``</parameter>`` or the header) and is followed by ``<function=``."""
    segments, start = [], 0
    for m in _SPLIT.finditer(body):
        before = body[start:m.start()].strip()
        if _ends_function(before):
            segments.append(body[start:m.start() + len(FUNC_CLOSE)])
            start = m.end()
    segments.append(body[start:])
    return segments


def xml_candidates(body: str, raw: str, cut: bool = False) -> list[Candidate]:
    """Every function in an XML call body (normally one). ``cut``: the body was not closed."""
    segments = _split_functions(body)
    out = []
    for seg in segments:
        parsed = parse_function(seg)
        piece = raw if len(segments) == 1 else seg
        if isinstance(parsed, str):
            out.append(Candidate(raw=piece, error=parsed, incomplete=cut))
        else:
            xml = isinstance(parsed[1], list)
            out.append(Candidate(raw=piece, name=parsed[0], args=parsed[1], xml=xml,
                                 body=seg if xml else None, incomplete=cut))
    return out


def _kinds(schema: dict) -> set[str]:
    kinds: set[str] = set()
    kind = schema.get("type")
    if isinstance(kind, str):
        kinds.add(kind)
    elif isinstance(kind, list):
        kinds.update(k for k in kind if isinstance(k, str))
    for key in ("anyOf", "oneOf"):
        for branch in schema.get(key) or []:
            if isinstance(branch, dict):
                kinds |= _kinds(branch)
    if "enum" in schema and not kinds:
        kinds.update("string" if isinstance(v, str) else "other" for v in schema["enum"])
    return kinds


def _convert(value: str, schema: Any) -> Any:
    if not isinstance(schema, dict):
        return value  # not a declared parameter: leave it to the schema check
    kinds = _kinds(schema)
    if "string" in kinds:
        return None if value.strip() in ("null", "None") and "null" in kinds else value
    try:
        parsed = json.loads(value.strip(), strict=False)
    except ValueError:
        return value  # the schema check repairs "True", refuses the rest
    if not kinds and not isinstance(parsed, (dict, list)):
        return value
    return parsed


def type_params(params: list[tuple[str, str]], schema: dict | None) -> dict:
    """Raw XML values -> typed arguments, by the property types of ``schema``."""
    props = (schema or {}).get("properties")
    props = props if isinstance(props, dict) else {}
    out: dict = {}
    for key, value in params:
        prop = props.get(key)
        if prop is None:
            folded = [p for p in props if p.lower() == key.lower()]
            prop = props[folded[0]] if len(folded) == 1 else None
        out[key] = _convert(value, prop)
    return out
