"""chat.completion.chunk objects -> neutral engine events, incrementally.

    translator = StreamTranslator(tools=..., thinking=..., stop_sequences=...)
    for chunk in chunks:
        send(translator.feed(chunk))
        if translator.stopped: break        # a stop sequence matched: stop reading
    send(translator.finish())
    translator.stop_reason(), translator.usage

- ``delta.content`` -> text. Text goes through a StopMatcher (servers may ignore ``stop``,
  take only 4, or not say which one matched) and through the engine's OutputParser, so a
  ``<think>`` block left in the content becomes thinking, and with a ``tool_parser`` family
  tool-call markup in the content becomes tool calls.
- ``delta.reasoning_content`` (llama.cpp, vLLM < 0.10, LM Studio) or ``delta.reasoning``
  (vLLM >= 0.10, OpenRouter, mlx_lm.server) -> thinking, only when the request asked for it.
- ``delta.tool_calls`` pieces are gathered per call: the arguments arrive in pieces; a piece
  without ``index`` belongs to the current call unless its id or name says it starts a new
  one; later pieces may lack the id; an index reused with another id is a new call. A call is
  sent once it is complete (text after it, the finish reason, or the end of the stream): its
  arguments are parsed, checked and repaired against the tool's schema (schema_repair), and
  go out as tool_start + one tool_args holding a JSON object + tool_end. A call that cannot
  be used (unknown tool, arguments that are not a JSON object or do not fit the schema) is
  shown as text, never dropped.
"""

from __future__ import annotations

import json

import structlog

from anyclaude.services.engine.parsing.output import OutputParser, new_tool_id
from anyclaude.services.engine.parsing.schema_repair import repair_args, resolve_tool
from anyclaude.services.engine.streamtext import StopMatcher, merge_events

log = structlog.get_logger()

FINISH = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
          "function_call": "tool_use", "content_filter": "refusal"}


class _Call:
    def __init__(self):
        self.id = ""
        self.name = ""
        self.pieces: list[str] = []

    @property
    def raw(self) -> str:
        return "".join(self.pieces).strip()

    def looks_complete(self) -> bool:
        try:
            return isinstance(json.loads(self.raw), dict)
        except ValueError:
            return False


class StreamTranslator:
    def __init__(self, *, tools: list[dict], thinking: bool, stop_sequences: list[str] = (),
                 family: str = "none", new_id=new_tool_id):
        self.tools = [t for t in tools or [] if isinstance(t, dict) and isinstance(t.get("name"), str)]
        self.thinking = thinking
        self.family = family
        self.new_id = new_id
        self.stops = StopMatcher(list(stop_sequences or []))
        self.parser = self._new_parser()
        self.calls: dict[tuple, _Call] = {}     # pending calls, in arrival order
        self._current: tuple | None = None
        self._serial = 0
        self.finish_reason: str | None = None
        self.usage: dict | None = None
        self.cached_hint: int | None = None      # llama.cpp timings.cache_n
        self.tool_calls = 0
        self.output_chars = 0
        self.stopped = False

    def _new_parser(self) -> OutputParser:
        return OutputParser(family=self.family, tools=self.tools, thinking=self.thinking)

    # -- input --
    def feed(self, chunk: dict) -> list[dict]:
        out: list[dict] = []
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        timings = chunk.get("timings")
        if isinstance(timings, dict) and isinstance(timings.get("cache_n"), int):
            self.cached_hint = timings["cache_n"]
        choices = chunk.get("choices") or []
        choice = next((c for c in choices if isinstance(c, dict) and c.get("index", 0) == 0), None)
        if choice is None or self.stopped:
            return out
        delta = choice.get("delta") or choice.get("message") or {}
        reasoning = delta.get("reasoning_content")
        if not isinstance(reasoning, str) or not reasoning:
            reasoning = delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            out += self._close_calls()
            self.output_chars += len(reasoning)
            if self.thinking:
                out.append({"type": "thinking", "text": reasoning})
        content = _text_of(delta.get("content"))
        if content:
            out += self._close_calls()
            self.output_chars += len(content)
            out += self.parser.feed(self.stops.feed(content))
            if self.stops.matched is not None:
                self.stopped = True
        pieces = delta.get("tool_calls")
        if isinstance(delta.get("function_call"), dict):   # the legacy single-call form
            pieces = [{"function": delta["function_call"]}]
        for piece in pieces if isinstance(pieces, list) else []:
            if isinstance(piece, dict):
                self._add_piece(piece)
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        return merge_events(out)

    def finish(self) -> list[dict]:
        out = self.parser.feed(self.stops.flush()) + self.parser.finish()
        out += self._emit_calls()
        return merge_events(out)

    # -- results --
    def stop_reason(self) -> str:
        if self.stops.matched is not None:
            return "stop_sequence"
        made_calls = self.tool_calls + self.parser.tool_calls > 0
        if made_calls and self.finish_reason in (None, "stop", "tool_calls", "function_call"):
            return "tool_use"
        if self.finish_reason in ("tool_calls", "function_call") and not made_calls:
            return "end_turn"   # every call was unusable and went out as text
        return FINISH.get(self.finish_reason or "stop", "end_turn")

    # -- tool calls --
    def _add_piece(self, piece: dict) -> None:
        function = piece.get("function") if isinstance(piece.get("function"), dict) else {}
        call_id = piece.get("id") if isinstance(piece.get("id"), str) else ""
        name = function.get("name") if isinstance(function.get("name"), str) else ""
        key = self._key(piece.get("index"), call_id, name)
        call = self.calls.setdefault(key, _Call())
        self._current = key
        if call_id and not call.id:
            call.id = call_id
        if name and name != call.name:
            call.name = call.name + name if call.name and not call.pieces else (call.name or name)
        args = function.get("arguments")
        if isinstance(args, dict):
            call.pieces = [json.dumps(args, ensure_ascii=False)]
        elif isinstance(args, str):
            call.pieces.append(args)

    def _key(self, index, call_id: str, name: str) -> tuple:
        if isinstance(index, int) and not isinstance(index, bool):
            key = ("index", index, self._serial)
            existing = self.calls.get(key)
            if existing is not None and call_id and existing.id and call_id != existing.id:
                self._serial += 1       # the same index reused for another call
                key = ("index", index, self._serial)
            elif existing is None:
                for old in self.calls:  # an earlier generation of this index still pending
                    if old[:2] == ("index", index):
                        key = old
            return key
        current = self.calls.get(self._current) if self._current else None
        new = (current is None
               or (call_id and current.id and call_id != current.id)
               or (name and current.name and not call_id
                   and (name != current.name or current.looks_complete())))
        if new:
            self._serial += 1
            return ("serial", self._serial)
        return self._current

    def _close_calls(self) -> list[dict]:
        """Text after tool calls: what the parser held back comes first, then the calls."""
        if not self.calls:
            return []
        out = self.parser.feed(self.stops.flush()) + self.parser.finish()
        self.parser = self._new_parser()
        return out + self._emit_calls()

    def _emit_calls(self) -> list[dict]:
        out: list[dict] = []
        for call in self.calls.values():
            out += self._finalize(call)
        self.calls.clear()
        self._current = None
        return out

    def _finalize(self, call: _Call) -> list[dict]:
        tool = resolve_tool(call.name, self.tools)
        if tool is None:
            return self._unusable(call, f"unknown tool {call.name!r}")
        args, reason = parse_arguments(call.raw)
        if reason is None:
            schema = tool.get("input_schema") if isinstance(tool.get("input_schema"), dict) else {}
            args, reason = repair_args(args, schema)
        if reason is not None:
            return self._unusable(call, reason)
        try:
            text = json.dumps(args, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except ValueError:
            return self._unusable(call, "arguments hold NaN or Infinity")
        self.tool_calls += 1
        return [{"type": "tool_start", "id": self.new_id(), "name": tool["name"]},
                {"type": "tool_args", "json": text}, {"type": "tool_end"}]

    def _unusable(self, call: _Call, reason: str) -> list[dict]:
        log.warning("engine.toolcall.unparsed", reason=reason, tool=call.name, raw=call.raw[:500],
                    family="openai")
        raw = call.raw or "{}"
        return [{"type": "text",
                 "text": f'<tool_call>{{"name": {json.dumps(call.name)}, "arguments": {raw}}}</tool_call>'}]


def parse_arguments(raw: str) -> tuple[dict | None, str | None]:
    """Streamed arguments -> (object, None) or (None, reason). Accepts "" (no arguments),
    a JSON object followed by junk (some servers repeat it), and a JSON string holding one."""
    if not raw:
        return {}, None
    decoder = json.JSONDecoder(strict=False)
    try:
        value, _ = decoder.raw_decode(raw)
    except ValueError as exc:
        return None, f"arguments are not valid JSON ({exc.msg})"
    if isinstance(value, str):
        try:
            value, _ = decoder.raw_decode(value.strip())
        except ValueError:
            pass
    if not isinstance(value, dict):
        return None, f"arguments are a JSON {type(value).__name__}, not an object"
    return value, None


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):   # a few servers stream content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict)
                       and isinstance(p.get("text"), str))
    return ""


def completion_as_chunk(body: dict) -> dict:
    """A whole chat.completion (a server that ignored ``stream``) as one chunk."""
    chunk = {k: v for k, v in body.items() if k != "choices"}
    chunk["choices"] = [{"index": c.get("index", 0), "delta": c.get("message") or {},
                         "finish_reason": c.get("finish_reason")}
                        for c in body.get("choices") or [] if isinstance(c, dict)]
    return chunk
