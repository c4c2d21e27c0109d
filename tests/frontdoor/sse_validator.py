"""A strict validator for Anthropic SSE bodies, independent of any SDK.

``validate(raw_bytes)`` parses the stream and checks the grammar the SDKs and Claude Code
enforce; it returns the events and the assembled message, or raises SSEError saying what
is wrong and at which event.

    stream := message_start ping* block* message_delta message_stop    (ping anywhere)
    block  := content_block_start content_block_delta* content_block_stop
    or an error event, after which nothing may follow.
"""

from __future__ import annotations

import json
import re

DELTA_FOR = {"text": {"text_delta"}, "thinking": {"thinking_delta", "signature_delta"},
             "tool_use": {"input_json_delta"}, "server_tool_use": {"input_json_delta"},
             "redacted_thinking": set(), "web_search_tool_result": set()}
STOP_REASONS = {"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal",
                "model_context_window_exceeded"}
USAGE_KEYS = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
              "cache_read_input_tokens")


class SSEError(AssertionError):
    pass


def parse_events(raw: bytes) -> list[tuple[str, dict]]:
    text = raw.decode("utf-8")
    if "\r" in text:
        raise SSEError("stream uses CR line endings")
    events = []
    for n, chunk in enumerate(text.split("\n\n")):
        if not chunk.strip():
            continue
        lines = chunk.split("\n")
        fields: dict[str, list[str]] = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if not sep:
                raise SSEError(f"event {n}: line without a colon: {line!r}")
            fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
        if "event" not in fields:
            raise SSEError(f"event {n}: no event: line (SDKs drop such events): {chunk!r}")
        if "data" not in fields or len(fields["data"]) != 1:
            raise SSEError(f"event {n}: expected exactly one data: line: {chunk!r}")
        kind = fields["event"][0]
        try:
            data = json.loads(fields["data"][0])
        except ValueError as exc:
            raise SSEError(f"event {n} ({kind}): data is not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("type") != kind:
            raise SSEError(f"event {n}: event: {kind} but data.type is {data.get('type')!r}")
        events.append((kind, data))
    if not text.endswith("\n\n"):
        raise SSEError("stream does not end with a blank line")
    return events


class _Prefix(Exception):
    """The text ended inside a value that could still become valid."""


_NUMBER_PREFIX = re.compile(r"-?(?:0|[1-9]\d*)?(?:(?<=\d)\.\d*)?(?:(?<=\d)[eE][+-]?\d*)?")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")


def is_partial_json(text: str) -> bool:
    """True if ``text`` is a prefix of a valid JSON object (what the SDK re-parses)."""
    i = _ws(text, 0)
    if i == len(text):
        return True
    if text[i] != "{":
        return False
    try:
        i = _ws(text, _value(text, i))
    except _Prefix:
        return True
    except ValueError:
        return False
    return i == len(text)


def _ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in " \t\n\r":
        i += 1
    return i


def _value(s: str, i: int) -> int:
    if i >= len(s):
        raise _Prefix
    c = s[i]
    if c == "{":
        return _container(s, i, "}", keyed=True)
    if c == "[":
        return _container(s, i, "]", keyed=False)
    if c == '"':
        return _string(s, i)
    for literal in ("true", "false", "null"):
        if c == literal[0]:
            part = s[i:i + len(literal)]
            if part == literal:
                return i + len(literal)
            if literal.startswith(part) and i + len(part) == len(s):
                raise _Prefix
            raise ValueError("bad literal")
    j = i
    while j < len(s) and s[j] in "+-0123456789.eE":
        j += 1
    token = s[i:j]
    if j == len(s) and _NUMBER_PREFIX.fullmatch(token) and token:
        raise _Prefix
    if not token or not _NUMBER.fullmatch(token):
        raise ValueError(f"bad number {token!r}")
    return j


def _string(s: str, i: int) -> int:
    i += 1
    while True:
        if i >= len(s):
            raise _Prefix
        c = s[i]
        if c == '"':
            return i + 1
        if c == "\\":
            if i + 1 >= len(s):
                raise _Prefix
            e = s[i + 1]
            if e == "u":
                digits = s[i + 2:i + 6]
                if not all(d in "0123456789abcdefABCDEF" for d in digits):
                    raise ValueError("bad \\u escape")
                if len(digits) < 4:
                    raise _Prefix
                i += 6
                continue
            if e not in '"\\/bfnrt':
                raise ValueError("bad escape")
            i += 2
            continue
        if ord(c) < 0x20:
            raise ValueError("control character in string")
        i += 1


def _container(s: str, i: int, close: str, *, keyed: bool) -> int:
    i = _ws(s, i + 1)
    if i >= len(s):
        raise _Prefix
    if s[i] == close:
        return i + 1
    while True:
        if keyed:
            if i >= len(s):
                raise _Prefix
            if s[i] != '"':
                raise ValueError("object key must be a string")
            i = _ws(s, _string(s, i))
            if i >= len(s):
                raise _Prefix
            if s[i] != ":":
                raise ValueError("expected ':'")
            i = _ws(s, i + 1)
        i = _ws(s, _value(s, i))
        if i >= len(s):
            raise _Prefix
        if s[i] == close:
            return i + 1
        if s[i] != ",":
            raise ValueError("expected ',' or close")
        i = _ws(s, i + 1)


def validate(raw: bytes) -> dict:
    """Check the whole stream; return {"events", "message", "error"}."""
    events = parse_events(raw)
    if not events:
        raise SSEError("empty stream")
    message, error = None, None
    index, open_block, json_buf, ended = -1, None, "", False
    for n, (kind, data) in enumerate(events):
        where = f"event {n} ({kind})"
        if error is not None:
            raise SSEError(f"{where}: nothing may follow an error event")
        if kind == "ping":
            continue
        if kind == "error":
            err = data.get("error")
            if not isinstance(err, dict) or not isinstance(err.get("type"), str) \
                    or not isinstance(err.get("message"), str):
                raise SSEError(f"{where}: error must carry error.type and error.message")
            error = err
            continue
        if ended:
            raise SSEError(f"{where}: event after message_stop")
        if n == 0 and kind != "message_start":
            raise SSEError(f"{where}: the first event must be message_start")
        if kind == "message_start":
            if message is not None:
                raise SSEError(f"{where}: second message_start")
            message = data["message"]
            _check_start(message, where)
            message = {**message, "content": []}
        elif message is None:
            raise SSEError(f"{where}: before message_start")
        elif kind == "content_block_start":
            if open_block is not None:
                raise SSEError(f"{where}: block {index} is still open (blocks interleave)")
            if data.get("index") != index + 1:
                raise SSEError(f"{where}: index {data.get('index')} after {index}")
            index += 1
            block = data["content_block"]
            if block.get("type") not in DELTA_FOR:
                raise SSEError(f"{where}: unknown block type {block.get('type')!r}")
            if block["type"] in ("tool_use", "server_tool_use") and block.get("input") != {}:
                raise SSEError(f"{where}: tool_use must start with input {{}}")
            open_block, json_buf = dict(block), ""
            message["content"].append(open_block)
        elif kind == "content_block_delta":
            if open_block is None or data.get("index") != index:
                raise SSEError(f"{where}: delta for index {data.get('index')} but open is "
                               f"{index if open_block else None}")
            delta = data["delta"]
            if delta.get("type") not in DELTA_FOR[open_block["type"]]:
                raise SSEError(f"{where}: {delta.get('type')} in a {open_block['type']} block")
            if delta["type"] == "text_delta":
                open_block["text"] += _str(delta, "text", where)
            elif delta["type"] == "thinking_delta":
                if open_block.get("signature"):
                    raise SSEError(f"{where}: thinking_delta after signature_delta")
                open_block["thinking"] += _str(delta, "thinking", where)
            elif delta["type"] == "signature_delta":
                open_block["signature"] = _str(delta, "signature", where)
            else:
                json_buf += _str(delta, "partial_json", where)
                if not is_partial_json(json_buf):
                    raise SSEError(f"{where}: partial_json so far is no JSON prefix: {json_buf!r}")
        elif kind == "content_block_stop":
            if open_block is None or data.get("index") != index:
                raise SSEError(f"{where}: stop for index {data.get('index')}, open is {index}")
            if open_block["type"] == "thinking" and not open_block.get("signature"):
                raise SSEError(f"{where}: thinking block closed without a signature_delta")
            if open_block["type"] in ("tool_use", "server_tool_use"):
                value = json.loads(json_buf) if json_buf else {}
                if not isinstance(value, dict):
                    raise SSEError(f"{where}: tool input is not a JSON object: {json_buf!r}")
                open_block["input"] = value
            open_block = None
        elif kind == "message_delta":
            if open_block is not None:
                raise SSEError(f"{where}: message_delta while block {index} is open")
            delta = data.get("delta", {})
            if delta.get("stop_reason") not in STOP_REASONS:
                raise SSEError(f"{where}: bad stop_reason {delta.get('stop_reason')!r}")
            usage = data.get("usage")
            if not isinstance(usage, dict) or not isinstance(usage.get("output_tokens"), int):
                raise SSEError(f"{where}: usage.output_tokens missing")
            message["stop_reason"] = delta["stop_reason"]
            message["stop_sequence"] = delta.get("stop_sequence")
            message["usage"] = {**message["usage"], **usage}
            message["_delta_seen"] = True
        elif kind == "message_stop":
            if not message.get("_delta_seen"):
                raise SSEError(f"{where}: message_stop without message_delta")
            ended = True
        else:
            raise SSEError(f"{where}: unknown event type")
    if error is None and not ended:
        raise SSEError("stream ended without message_stop or error")
    if message is not None:
        message.pop("_delta_seen", None)
    return {"events": events, "message": message, "error": error}


def _check_start(message: dict, where: str) -> None:
    for key, kind in (("id", str), ("model", str), ("content", list), ("usage", dict)):
        if not isinstance(message.get(key), kind):
            raise SSEError(f"{where}: message.{key} must be {kind.__name__}")
    if message.get("type") != "message" or message.get("role") != "assistant":
        raise SSEError(f"{where}: message type/role wrong")
    if message["content"] or message.get("stop_reason") is not None:
        raise SSEError(f"{where}: message_start must have empty content and null stop_reason")
    for key in USAGE_KEYS:
        if not isinstance(message["usage"].get(key), int):
            raise SSEError(f"{where}: message.usage.{key} must be an integer")


def _str(delta: dict, key: str, where: str) -> str:
    value = delta.get(key)
    if not isinstance(value, str):
        raise SSEError(f"{where}: delta.{key} must be a string")
    return value
