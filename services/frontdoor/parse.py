"""Validate an Anthropic Messages request and build the internal request.

Every problem is an ``InvalidRequest`` whose message starts with the path of the field
(``messages.2.content.0.type: unknown block type 'foo'``). Unknown fields are ignored, as
the API does. The internal shape is documented in anyclaude/messages.py; beyond it:

- image/document blocks keep their source: base64 -> ``media_type`` + ``data``; a plain-text
  document -> media_type "text/plain" + data; a url source -> ``url``; a file source ->
  ``file_id``. The engine refuses what its model cannot take (unsupported_content).
- server tools (a ``type`` other than "custom", e.g. web_search_20250305) go to
  ``server_tools`` unchanged; server_tool_use / web_search_tool_result input blocks pass
  through unchanged.
- ``tool_choice`` may carry ``disable_parallel_tool_use: true``. Forced tool use (any, tool)
  with ``thinking.type`` "enabled" is refused, as the API does; "adaptive" passes (the
  engine's forced call leaves no room to think).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from anyclaude.errors import InvalidRequest

ROLES = ("user", "assistant", "system")
TOOL_CHOICES = ("auto", "any", "tool", "none")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


@dataclass(frozen=True)
class Parsed:
    request: dict          # the internal request; "model" is still the requested id
    stream: bool


# --- the body -----------------------------------------------------------------------------

def check_content_type(value: str | None) -> None:
    if not value:
        return
    media = value.split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise InvalidRequest(f"content-type must be application/json, got {value!r}")


def decode_body(body: bytes) -> dict:
    """Bytes -> JSON object; invalid UTF-8, bad JSON and lone surrogates are 400s."""
    if not body:
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        payload = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc.msg} at line {exc.lineno} "
                             f"column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidRequest(f"request body must be a JSON object, got {_kind(payload)}")
    if _SURROGATE_ESCAPE.search(text):  # only \u escapes can produce lone surrogates
        _check_surrogates(payload, "")
    return payload


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed in JSON")


def _check_surrogates(value, path: str) -> None:
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidRequest(f"{where or 'body'}: string contains a lone UTF-16 "
                                     "surrogate escape") from None
        elif isinstance(item, dict):
            for key, sub in item.items():
                stack.append((key, where))
                stack.append((sub, f"{where}.{key}" if where else key))
        elif isinstance(item, list):
            stack.extend((sub, f"{where}.{i}") for i, sub in enumerate(item))


# --- fields -------------------------------------------------------------------------------

def _kind(value) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null", int: "a number", float: "a number"}.get(type(value), "a value")


def _need(obj: dict, key: str, path: str):
    if key not in obj or obj[key] is None:
        raise InvalidRequest(f"{path}{key}: field required")
    return obj[key]


def _str(value, path: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{path}: expected a string, got {_kind(value)}")
    return value


def _obj(value, path: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{path}: expected an object, got {_kind(value)}")
    return value


def _list(value, path: str) -> list:
    if not isinstance(value, list):
        raise InvalidRequest(f"{path}: expected an array, got {_kind(value)}")
    return value


def _int(value, path: str, minimum: int | None = None) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f"{path}: expected an integer, got {_kind(value)}")
    if minimum is not None and value < minimum:
        raise InvalidRequest(f"{path}: must be at least {minimum}, got {value}")
    return value


def _number(value, path: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRequest(f"{path}: expected a number, got {_kind(value)}")
    if value < 0:
        raise InvalidRequest(f"{path}: must not be negative, got {value}")
    return float(value)


# --- the request --------------------------------------------------------------------------

def parse_request(payload: dict, *, count: bool = False) -> Parsed:
    """A /v1/messages (or, with count=True, /v1/messages/count_tokens) body."""
    model = _str(_need(payload, "model", ""), "model")
    if not model:
        raise InvalidRequest("model: must not be empty")
    if count:
        max_tokens = 1
    else:
        max_tokens = _int(_need(payload, "max_tokens", ""), "max_tokens", minimum=1)
    raw_messages = _list(_need(payload, "messages", ""), "messages")
    if not raw_messages:
        raise InvalidRequest("messages: at least one message is required")
    tools, server_tools = _tools(payload.get("tools"))
    stream = payload.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest(f"stream: expected a boolean, got {_kind(stream)}")
    top_k = payload.get("top_k")
    request = {
        "model": model,
        "system": _system(payload.get("system")),
        "messages": [_message(m, f"messages.{i}") for i, m in enumerate(raw_messages)],
        "tools": tools,
        "server_tools": server_tools,
        "tool_choice": _tool_choice(payload.get("tool_choice")),
        "max_tokens": max_tokens,
        "temperature": _number(payload.get("temperature"), "temperature"),
        "top_p": _number(payload.get("top_p"), "top_p"),
        "top_k": None if top_k is None else _int(top_k, "top_k", minimum=0),
        "stop_sequences": _stop_sequences(payload.get("stop_sequences")),
        "thinking": _thinking(payload.get("thinking")),
    }
    if (request["tool_choice"] or {}).get("type") in ("any", "tool") and \
            (payload.get("thinking") or {}).get("type") == "enabled":
        # As the API: forced tool use starts the reply with the call, leaving no room to think.
        raise InvalidRequest("thinking: may not be enabled when tool_choice forces tool use "
                             f"(tool_choice.type {request['tool_choice']['type']!r}); use "
                             "tool_choice auto or none, or disable thinking")
    return Parsed(request, stream and not count)


def _system(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    out = []
    for i, block in enumerate(_list(value, "system")):
        path = f"system.{i}"
        block = _obj(block, path)
        kind = _need(block, "type", path + ".")
        if kind != "text":
            raise InvalidRequest(f"{path}.type: system blocks must be text, got {kind!r}")
        out.append(_str(_need(block, "text", path + "."), path + ".text"))
    return out


def _message(value, path: str) -> dict:
    msg = _obj(value, path)
    role = _need(msg, "role", path + ".")
    if role not in ROLES:
        raise InvalidRequest(f"{path}.role: must be one of {', '.join(ROLES)}, got {role!r}")
    content = _need(msg, "content", path + ".")
    return {"role": role, "content": _content(content, f"{path}.content")}


def _content(value, path: str, allowed: tuple | None = None) -> list[dict]:
    if isinstance(value, str):
        return [{"type": "text", "text": value}]
    return [_block(b, f"{path}.{i}", allowed) for i, b in enumerate(_list(value, path))]


def _block(value, path: str, allowed: tuple | None) -> dict:
    block = _obj(value, path)
    kind = _need(block, "type", path + ".")
    parse = _BLOCKS.get(kind) if isinstance(kind, str) else None
    if parse is None or (allowed is not None and kind not in allowed):
        where = " inside tool_result" if allowed is not None and parse is not None else ""
        raise InvalidRequest(f"{path}.type: unknown block type {kind!r}{where}")
    return parse(block, path + ".")


def _text(b: dict, p: str) -> dict:
    return {"type": "text", "text": _str(_need(b, "text", p), p + "text")}


def _source(b: dict, p: str, kind: str) -> dict:
    src = _obj(_need(b, "source", p), p + "source")
    stype = _need(src, "type", p + "source.")
    sp = p + "source."
    if stype == "base64":
        return {"type": kind, "media_type": _str(_need(src, "media_type", sp), sp + "media_type"),
                "data": _str(_need(src, "data", sp), sp + "data")}
    if stype == "text":
        return {"type": kind, "media_type": "text/plain",
                "data": _str(_need(src, "data", sp), sp + "data")}
    if stype == "url":
        return {"type": kind, "url": _str(_need(src, "url", sp), sp + "url")}
    if stype == "file":
        return {"type": kind, "file_id": _str(_need(src, "file_id", sp), sp + "file_id")}
    if stype == "content" and kind == "document":
        parts = _content(_need(src, "content", sp), sp + "content", ("text", "image"))
        text = "\n".join(part["text"] for part in parts if part["type"] == "text")
        return {"type": kind, "media_type": "text/plain", "data": text}
    raise InvalidRequest(f"{sp}type: unknown {kind} source type {stype!r}")


def _image(b: dict, p: str) -> dict:
    return _source(b, p, "image")


def _document(b: dict, p: str) -> dict:
    out = _source(b, p, "document")
    if isinstance(b.get("title"), str):
        out["title"] = b["title"]
    return out


def _tool_use(b: dict, p: str) -> dict:
    return {"type": "tool_use", "id": _str(_need(b, "id", p), p + "id"),
            "name": _str(_need(b, "name", p), p + "name"),
            "input": _obj(b.get("input", {}), p + "input")}


def _tool_result(b: dict, p: str) -> dict:
    content = b.get("content")
    is_error = b.get("is_error") or False
    if not isinstance(is_error, bool):
        raise InvalidRequest(f"{p}is_error: expected a boolean, got {_kind(is_error)}")
    return {"type": "tool_result",
            "tool_use_id": _str(_need(b, "tool_use_id", p), p + "tool_use_id"),
            "content": [] if content is None else
            _content(content, p + "content", ("text", "image", "document")),
            "is_error": is_error}


def _thinking_block(b: dict, p: str) -> dict:
    # Claude Code echoes thinking back with signature "": accept any signature.
    return {"type": "thinking", "thinking": _str(_need(b, "thinking", p), p + "thinking")}


def _redacted(b: dict, p: str) -> dict:
    return {"type": "redacted_thinking", "data": _str(_need(b, "data", p), p + "data")}


def _passthrough(b: dict, p: str) -> dict:
    return {k: v for k, v in b.items() if k != "cache_control"}


_BLOCKS = {"text": _text, "image": _image, "document": _document, "tool_use": _tool_use,
           "tool_result": _tool_result, "thinking": _thinking_block,
           "redacted_thinking": _redacted, "server_tool_use": _passthrough,
           "web_search_tool_result": _passthrough}


def _tools(value) -> tuple[list[dict], list[dict]]:
    if value is None:
        return [], []
    tools, server, names = [], [], set()
    for i, tool in enumerate(_list(value, "tools")):
        path = f"tools.{i}"
        tool = _obj(tool, path)
        kind = tool.get("type")
        name = _str(_need(tool, "name", path + "."), path + ".name")
        if name in names:
            raise InvalidRequest(f"{path}.name: tool names must be unique; {name!r} repeats")
        names.add(name)
        if kind not in (None, "custom"):
            _str(kind, path + ".type")
            server.append(dict(tool))
            continue
        desc = tool.get("description")
        tools.append({"name": name,
                      "description": "" if desc is None else _str(desc, path + ".description"),
                      "input_schema": _obj(_need(tool, "input_schema", path + "."),
                                           path + ".input_schema")})
    return tools, server


def _tool_choice(value) -> dict | None:
    if value is None:
        return None
    choice = _obj(value, "tool_choice")
    kind = _need(choice, "type", "tool_choice.")
    if kind not in TOOL_CHOICES:
        raise InvalidRequest(f"tool_choice.type: must be one of {', '.join(TOOL_CHOICES)}, "
                             f"got {kind!r}")
    out = {"type": kind}
    if kind == "tool":
        out["name"] = _str(_need(choice, "name", "tool_choice."), "tool_choice.name")
    if choice.get("disable_parallel_tool_use") is True:
        out["disable_parallel_tool_use"] = True
    return out


def _stop_sequences(value) -> list[str]:
    if value is None:
        return []
    return [_str(s, f"stop_sequences.{i}") for i, s in enumerate(_list(value, "stop_sequences"))]


def _thinking(value) -> bool:
    if value is None:
        return False
    cfg = _obj(value, "thinking")
    kind = _need(cfg, "type", "thinking.")
    if kind in ("enabled", "adaptive"):
        return True
    if kind == "disabled":
        return False
    raise InvalidRequest(f"thinking.type: must be enabled, adaptive or disabled, got {kind!r}")
