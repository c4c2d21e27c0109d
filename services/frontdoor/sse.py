"""Anthropic SSE: the encoder and the neutral-event -> content_block_* state machine.

The engine speaks neutral events (see anyclaude/messages.py); this module turns them into
the stream grammar the SDKs and Claude Code enforce:

    message_start ping* (content_block_start content_block_delta* content_block_stop)*
    message_delta message_stop

Blocks are strictly sequential: a new kind of event closes the open block first. Besides
the engine's events, the search loop (search_loop.py) feeds ``{type: "block", block}``:
one complete content block (server_tool_use, web_search_tool_result).
"""

from __future__ import annotations

import json

# Thinking blocks need a signature_delta before their stop. Ours proves nothing (there is
# no server-side secret to verify against); it is a short, constant, opaque marker that
# clients echo back and we ignore.
SIGNATURE = "YW55Y2xhdWRlLWxvY2Fs"

STOP_REASONS = frozenset({"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn",
                          "refusal", "model_context_window_exceeded"})

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# Characters that str.splitlines() takes for line breaks but JSON leaves raw (the control
# characters among them it escapes already): escaped, so a client splitting lines the
# naive way still sees one data line per event.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _dumps(data: dict) -> str:
    return _encode(data).translate(_LINE_BREAKS)


def event(kind: str, data: dict) -> bytes:
    """One SSE event; the ``event:`` line is mandatory for the SDKs."""
    return b"event: " + kind.encode() + b"\ndata: " + _dumps(data).encode() + b"\n\n"


PING = event("ping", {"type": "ping"})


def usage(raw: dict | None) -> dict:
    raw = raw or {}
    out = {
        "input_tokens": int(raw.get("input_tokens") or 0),
        "output_tokens": int(raw.get("output_tokens") or 0),
        "cache_creation_input_tokens": int(raw.get("cache_creation_input_tokens") or 0),
        "cache_read_input_tokens": int(raw.get("cache_read_input_tokens") or 0),
    }
    if isinstance(raw.get("server_tool_use"), dict):   # set by the search loop
        out["server_tool_use"] = dict(raw["server_tool_use"])
    return out


def stop_reason(value: str | None) -> str:
    return value if value in STOP_REASONS else "end_turn"


_STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                 403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                 429: "rate_limit_error", 500: "api_error", 504: "timeout_error",
                 529: "overloaded_error"}


def error_type_for(status: int) -> str:
    """The Anthropic error type for an HTTP status (for errors not raised by us)."""
    if status in _STATUS_TYPES:
        return _STATUS_TYPES[status]
    return "invalid_request_error" if status < 500 else "api_error"


def error_body(error_type: str, message: str, request_id: str | None = None) -> dict:
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    if request_id:
        body["request_id"] = request_id
    return body


class MalformedEvents(Exception):
    """The engine sent events that cannot form a valid stream (a bug on its side)."""


class StreamState:
    """Turns neutral events into SSE bytes, keeping the block grammar valid."""

    def __init__(self, *, message_id: str, model: str, thinking: bool):
        self.message_id, self.model, self.thinking = message_id, model, thinking
        self.index = -1
        self.open: str | None = None   # "text" | "thinking" | "tool_use" | None
        self.tool_json: list[str] = []
        self.output_tokens = 0
        self.finished = False

    def start(self, input_tokens: int = 0) -> bytes:
        message = {"id": self.message_id, "type": "message", "role": "assistant",
                   "model": self.model, "content": [], "stop_reason": None,
                   "stop_sequence": None, "usage": usage({"input_tokens": input_tokens})}
        return event("message_start", {"type": "message_start", "message": message}) + PING

    def feed(self, events: list) -> bytes:
        out = []
        for ev in events:
            kind = ev.get("type") if isinstance(ev, dict) else None
            if kind == "text":
                if ev.get("text"):
                    self._ensure(out, "text")
                    out.append(self._delta({"type": "text_delta", "text": ev["text"]}))
            elif kind == "thinking":
                if ev.get("text"):
                    self._ensure(out, "thinking")
                    out.append(self._delta({"type": "thinking_delta", "thinking": ev["text"]}))
            elif kind == "tool_start":
                self._close(out)
                self._open(out, "tool_use", {"type": "tool_use", "id": str(ev.get("id") or ""),
                                             "name": str(ev.get("name") or ""), "input": {}})
            elif kind == "tool_args":
                if self.open != "tool_use":
                    raise MalformedEvents("tool_args outside a tool call")
                if ev.get("json"):
                    self.tool_json.append(ev["json"])
                    out.append(self._delta({"type": "input_json_delta",
                                            "partial_json": ev["json"]}))
            elif kind == "tool_end":
                if self.open != "tool_use":
                    raise MalformedEvents("tool_end outside a tool call")
                self._close(out)
            elif kind == "block":
                self._whole(out, ev["block"])
            else:
                raise MalformedEvents(f"unknown engine event {kind!r}")
        return b"".join(out)

    def _whole(self, out: list, block: dict) -> None:
        """A complete block from the front door itself (the search loop's server_tool_use
        and web_search_tool_result): a server_tool_use streams its input as one delta."""
        self._close(out)
        if block.get("type") == "server_tool_use":
            self._open(out, "server_tool_use", {**block, "input": {}})
            out.append(self._delta({"type": "input_json_delta",
                                    "partial_json": _dumps(block.get("input") or {})}))
        else:
            self._open(out, str(block.get("type")), block)
        self._close(out)

    def keepalive(self) -> bytes:
        """A content event that adds nothing, for Claude Code's 300 s no-content watchdog.

        Honest choice: before any output, the model is still reading the prompt. If the
        client asked for thinking we open the thinking block the model's reasoning will go
        into; otherwise an empty text block (the model's answer continues it, or it is
        closed empty before a tool call). Later stalls add an empty delta to the open block.
        Nothing is said that the model did not say.
        """
        out: list[bytes] = []
        if self.open is None:
            self._ensure(out, "thinking" if self.thinking else "text")
        elif self.open == "text":
            out.append(self._delta({"type": "text_delta", "text": ""}))
        elif self.open == "thinking":
            out.append(self._delta({"type": "thinking_delta", "thinking": ""}))
        # an open tool_use: an empty partial_json is not a valid partial JSON for every SDK
        # while nothing has been received, and a stalled tool call hits the idle deadline
        return b"".join(out)

    def finish(self, reason: str | None, sequence: str | None, raw_usage: dict | None) -> bytes:
        out: list[bytes] = []
        self._close(out)
        self.finished = True
        self.output_tokens = usage(raw_usage)["output_tokens"]
        out.append(event("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(reason), "stop_sequence": sequence},
            "usage": usage(raw_usage)}))
        out.append(event("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def error(self, error_type: str, message: str, request_id: str | None = None) -> bytes:
        self.finished = True
        return event("error", error_body(error_type, message, request_id))

    # -- blocks --
    def _ensure(self, out: list, kind: str) -> None:
        if self.open != kind:
            self._close(out)
            block = {"type": "text", "text": ""} if kind == "text" else \
                {"type": "thinking", "thinking": "", "signature": ""}
            self._open(out, kind, block)

    def _open(self, out: list, kind: str, block: dict) -> None:
        self.index += 1
        self.open = kind
        out.append(event("content_block_start", {"type": "content_block_start",
                                                 "index": self.index, "content_block": block}))

    def _close(self, out: list) -> None:
        if self.open is None:
            return
        if self.open == "thinking":
            out.append(self._delta({"type": "signature_delta", "signature": SIGNATURE}))
        elif self.open == "tool_use":
            self._check_tool_json()
        out.append(event("content_block_stop", {"type": "content_block_stop",
                                                "index": self.index}))
        self.open = None

    def _check_tool_json(self) -> None:
        text = "".join(self.tool_json)
        self.tool_json = []
        if not text:
            return
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise MalformedEvents("the model's tool arguments are not one JSON object")

    def _delta(self, delta: dict) -> bytes:
        return event("content_block_delta", {"type": "content_block_delta",
                                             "index": self.index, "delta": delta})
