"""The internal (Anthropic-shaped) request -> an OpenAI chat.completions request body.

- ``system`` blocks -> one leading system message (joined by a blank line); a role "system"
  message later on stays a system message (``strict_roles`` turns it into user text and
  merges consecutive same-role turns, for servers whose templates refuse either).
- user text -> a string content; with images -> a list of text / image_url parts, base64
  images as data URLs; text documents inline; PDFs as OpenAI ``file`` parts.
- ``tool_result`` -> ``role: tool`` messages right after the assistant turn (text parts
  joined by a newline, ``is_error`` prefixes "Error: "); images inside a result follow in a
  user message, since tool messages carry text only.
- assistant ``tool_use`` -> ``tool_calls`` with the arguments as a JSON string; thinking and
  redacted thinking are not sent back (servers re-derive or ignore it); a web search the
  front door ran shows up as text.
- tools -> function tools; tool_choice auto/any/tool/none -> "auto"/"required"/
  {type: function, function: {name}}/"none"; disable_parallel_tool_use -> parallel_tool_calls false.
- ``max_tokens`` (or ``max_completion_tokens``), temperature, top_p, ``stop`` (at most 4:
  the engine matches every stop sequence in the text itself), ``stream_options.include_usage``.
- ``extra_params``: top_k and ``chat_template_kwargs.enable_thinking`` too; they are not
  OpenAI fields, but llama.cpp, vLLM, SGLang and mlx_lm.server read them.
"""

from __future__ import annotations

import json

from anyclaude.errors import InvalidRequest, UnsupportedContent

MAX_STOP = 4


def chat_body(request: dict, *, model_name: str, max_tokens: int, extra_params: bool = False,
              max_tokens_field: str = "max_tokens", strict_roles: bool = False) -> dict:
    body: dict = {"model": model_name,
                  "messages": chat_messages(request, strict_roles=strict_roles),
                  "stream": True, "stream_options": {"include_usage": True},
                  max_tokens_field: max_tokens}
    tools = function_tools(request)
    choice = request.get("tool_choice") or None
    if tools:
        body["tools"] = tools
        if choice:
            body["tool_choice"] = _tool_choice(choice)
            if choice.get("disable_parallel_tool_use"):
                body["parallel_tool_calls"] = False
    for key in ("temperature", "top_p"):
        if request.get(key) is not None:
            body[key] = request[key]
    stops = [s for s in request.get("stop_sequences") or [] if s]
    if stops:
        body["stop"] = stops[:MAX_STOP]
    if extra_params:
        if request.get("top_k"):
            body["top_k"] = request["top_k"]
        body["chat_template_kwargs"] = {"enable_thinking": bool(request.get("thinking"))}
    return body


def function_tools(request: dict) -> list[dict]:
    out = []
    for tool in request.get("tools") or []:
        function = {"name": tool["name"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: dict):
    kind = choice.get("type")
    if kind == "any":
        return "required"
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name", "")}}
    if kind == "none":
        return "none"
    return "auto"


# --- messages -----------------------------------------------------------------------------

def chat_messages(request: dict, *, strict_roles: bool = False) -> list[dict]:
    out: list[dict] = []
    system = "\n\n".join(s for s in request.get("system") or [] if s)
    if system:
        out.append({"role": "system", "content": system})
    for index, message in enumerate(request.get("messages") or []):
        role = message.get("role")
        blocks = message.get("content") or []
        where = f"messages[{index}]"
        if role == "assistant":
            out.append(_assistant(blocks, where))
        elif role in ("user", "system"):
            out.extend(_user(role, blocks, where))
        else:
            raise InvalidRequest(f"{where}.role: unknown role {role!r}")
    if strict_roles:
        out = _strict(out)
    return out


def _user(role: str, blocks: list, where: str) -> list[dict]:
    tool_messages, parts, result_images = [], [], []
    for i, block in enumerate(blocks):
        kind = block.get("type")
        at = f"{where}.content[{i}]"
        if kind == "tool_result" and role == "user":
            text, images = _tool_result(block, at)
            tool_messages.append({"role": "tool", "tool_call_id": block.get("tool_use_id", ""),
                                  "content": text})
            result_images.extend(images)
        elif kind in ("thinking", "redacted_thinking", "server_tool_use"):
            continue
        else:
            parts.append(_part(block, at))
    out = list(tool_messages)
    if result_images:
        parts = [{"type": "text", "text": "(images from the tool results above)"},
                 *result_images, *parts]
    if parts or not tool_messages:
        out.append({"role": role, "content": _content(parts)})
    return out


def _assistant(blocks: list, where: str) -> dict:
    texts, calls = [], []
    for i, block in enumerate(blocks):
        kind = block.get("type")
        if kind == "tool_use":
            args = block.get("input") if isinstance(block.get("input"), dict) else {}
            calls.append({"id": block.get("id", ""), "type": "function",
                          "function": {"name": block.get("name", ""),
                                       "arguments": json.dumps(args, ensure_ascii=False)}})
        elif kind in ("thinking", "redacted_thinking", "server_tool_use"):
            continue
        else:
            part = _part(block, f"{where}.content[{i}]")
            if part["type"] != "text":
                raise UnsupportedContent(f"{where}.content[{i}]: an assistant turn cannot carry "
                                         f"{block.get('type')} content for this model")
            texts.append(part["text"])
    message: dict = {"role": "assistant", "content": "\n\n".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _content(parts: list[dict]):
    if all(p["type"] == "text" for p in parts):
        return "\n\n".join(p["text"] for p in parts)
    return parts


def _part(block: dict, where: str) -> dict:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": block.get("text", "")}
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": _image_url(block, where)}}
    if kind == "document":
        return _document(block, where)
    if kind == "web_search_tool_result":
        return {"type": "text", "text": search_results_text(block)}
    if kind == "tool_result":
        raise InvalidRequest(f"{where}: tool_result blocks belong in user messages")
    if kind == "tool_use":
        raise InvalidRequest(f"{where}: tool_use blocks belong in assistant messages")
    raise UnsupportedContent(f"{where}: unsupported content block type {kind!r}")


def _image_url(block: dict, where: str) -> str:
    if block.get("url"):
        return block["url"]
    if block.get("data") and block.get("media_type"):
        return f"data:{block['media_type']};base64,{block['data']}"
    raise UnsupportedContent(f"{where}: images uploaded with the Files API (file_id) cannot be "
                             "sent to this model; send the image as base64 instead")


def _document(block: dict, where: str) -> dict:
    media_type = block.get("media_type", "")
    if media_type.startswith("text/"):
        return {"type": "text", "text": str(block.get("data", ""))}
    if media_type == "application/pdf" and block.get("data"):
        return {"type": "file", "file": {"filename": block.get("title") or "document.pdf",
                                         "file_data": f"data:application/pdf;base64,{block['data']}"}}
    raise UnsupportedContent(f"{where}: {media_type or 'this kind of'} document cannot be sent to "
                             "this model; send its text instead")


def _tool_result(block: dict, where: str) -> tuple[str, list[dict]]:
    content = block.get("content") or []
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    texts, images = [], []
    for j, part in enumerate(content):
        converted = _part(part, f"{where}.content[{j}]")
        (texts if converted["type"] == "text" else images).append(converted)
    text = "\n".join(t["text"] for t in texts)
    if block.get("is_error"):
        text = f"Error: {text}" if text else "Error"
    return text, images


def search_results_text(block: dict) -> str:
    """A web_search_tool_result the front door produced, as plain text for the model."""
    content = block.get("content")
    if isinstance(content, dict):
        return f"(web search failed: {content.get('error_code', 'error')})"
    lines = ["Web search results:"]
    for item in content or []:
        if isinstance(item, dict):
            lines.append(f"- {item.get('title', '')} ({item.get('url', '')})")
    return "\n".join(lines)


def _strict(messages: list[dict]) -> list[dict]:
    """Later system turns -> user; consecutive plain user (or assistant) turns merged."""
    out: list[dict] = []
    for i, message in enumerate(messages):
        message = dict(message)
        if message["role"] == "system" and i > 0:
            message["role"] = "user"
        prev = out[-1] if out else None
        if (prev is not None and prev["role"] == message["role"] and message["role"] in ("user", "assistant")
                and isinstance(prev.get("content"), str) and isinstance(message.get("content"), str)
                and not prev.get("tool_calls")):
            prev["content"] = "\n\n".join(t for t in (prev["content"], message["content"]) if t)
            if message.get("tool_calls"):
                prev["tool_calls"] = message["tool_calls"]
        else:
            out.append(message)
    return out
