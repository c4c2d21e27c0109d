"""Mistral tool calls, which have no closing token:

    [TOOL_CALLS][{"name": "a", "arguments": {...}}, {"name": "b", "arguments": {...}}]
    [TOOL_CALLS]a[ARGS]{...}                       (tokenizer v11+, may repeat)
    [TOOL_CALLS]a[CALL_ID]abc123XYZ[ARGS]{...}     (some fine-tunes)
    [TOOL_CALLS]{"name": "a", "arguments": {...}}  (a single object)

A call ends where its JSON ends; after a ``name[ARGS]{…}`` call another ``name[ARGS]``
may follow without a new ``[TOOL_CALLS]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from anyclaude.services.engine.parsing.toolcall_base import PARTIAL, Candidate, Reader, lit, skip_ws
from anyclaude.services.engine.parsing.toolcall_json import JsonScanner, call_from_obj, candidates, load_json

MARK = "[TOOL_CALLS]"
ARGS = "[ARGS]"
CALL_ID = "[CALL_ID]"

_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_ID = re.compile(r"[A-Za-z0-9_\-]*")
_MAX_NAME = 128


@dataclass
class MistralReader(Reader):
    phase: str = "head"
    pos: int = 0
    json_start: int = 0
    call_start: int = 0
    name: str = ""
    scanner: JsonScanner | None = None
    calls: list[Candidate] = field(default_factory=list)

    def step(self, final: bool) -> bool:
        while True:
            done = getattr(self, "_" + self.phase)(final)
            if done is not None:
                return done

    def _done(self, end: int) -> bool:
        self.end, self.items = end, self.calls
        return True

    def _head(self, final: bool) -> bool | None:
        i = skip_ws(self.raw, self.start + len(MARK))
        if i == len(self.raw):
            return self.fail("nothing after [TOOL_CALLS]") if final else False
        c = self.raw[i]
        if c in "[{":
            self.phase, self.json_start, self.scanner = "whole", i, JsonScanner(i)
        elif _NAME.match(c):
            self.phase, self.pos, self.call_start = "name", i, self.start
        else:
            return self.fail("[TOOL_CALLS] is not followed by a call", i)
        return None

    def _whole(self, final: bool) -> bool | None:
        state, j = self.scanner.run(self.raw)
        if state == "wait":
            return self.fail("unterminated JSON after [TOOL_CALLS]") if final else False
        self.calls = candidates(self.raw[self.json_start:j], self.raw[:j])
        return self._done(j)

    def _name(self, final: bool) -> bool | None:
        raw = self.raw
        m = _NAME.match(raw, self.pos)
        k = m.end()
        if k == len(raw):
            if final or k - self.pos > _MAX_NAME:
                return self._give_up("[TOOL_CALLS] name without arguments")
            return False
        self.name = m.group()
        at = lit(raw, k, CALL_ID)
        if at == PARTIAL:
            return self._give_up("unterminated [CALL_ID]") if final else False
        if isinstance(at, int):
            k = _ID.match(raw, at).end()
        j = skip_ws(raw, k)
        args = lit(raw, j, ARGS)
        if args == PARTIAL or j == len(raw):
            return self._give_up("[TOOL_CALLS] name without arguments") if final else False
        if isinstance(args, int):
            j = skip_ws(raw, args)
            if j == len(raw):
                return self._give_up("nothing after [ARGS]") if final else False
        if raw[j] != "{":
            return self._give_up("expected [ARGS]{…} after the tool name", k)
        self.phase, self.json_start, self.scanner = "args", j, JsonScanner(j)
        return None

    def _give_up(self, reason: str, end: int | None = None) -> bool:
        """A name form that is not a call: calls read so far stand, the rest is text."""
        if not self.calls:
            return self.fail(reason, end)
        self.calls.append(Candidate(raw=self.raw[self.call_start:end], error=reason))
        return self._done(len(self.raw) if end is None else end)

    def _args(self, final: bool) -> bool | None:
        state, j = self.scanner.run(self.raw)
        if state == "wait":
            return self._give_up("unterminated arguments after [ARGS]") if final else False
        piece = self.raw[self.call_start:j]
        value, error = load_json(self.raw[self.json_start:j])
        if error is not None:
            self.calls.append(Candidate(raw=piece, name=self.name, error=error))
        else:
            call = call_from_obj({"name": self.name, "arguments": value}, piece)
            self.calls.append(call)
        self.phase, self.pos = "after", j
        return None

    def _after(self, final: bool) -> bool | None:
        """Another ``name[ARGS]`` may follow; anything else ends the calls."""
        raw = self.raw
        j = skip_ws(raw, self.pos)
        if j == len(raw):
            return self._done(self.pos) if final else False
        m = _NAME.match(raw, j)
        if m is None:
            return self._done(self.pos)
        k = m.end()
        if k == len(raw):
            return self._done(self.pos) if final or k - j > _MAX_NAME else False
        at = lit(raw, k, ARGS)
        if at is None:
            at = lit(raw, k, CALL_ID)
        if at == PARTIAL and not final:
            return False
        if isinstance(at, int):
            self.phase, self.pos, self.call_start = "name", j, j
            return None
        return self._done(self.pos)
