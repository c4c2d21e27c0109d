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
  redacted thinking are not sent back (servers re-derive or ignore it).
- a web search the front door ran is sent back as the chat template sees it (blocks.py):
  ``server_tool_use`` -> a tool call {query}, ``web_search_tool_result`` -> a tool message
  whose text is ``search_blocks.result_text``, so every backend reads search results alike.
- tools -> function tools; tool_choice auto/any/tool/none -> "auto"/"required"/
  {type: function, function: {name}}/"none"; disable_parallel_tool_use -> parallel_tool_calls false.
- ``max_tokens`` (or ``max_completion_tokens``), temperature, top_p, ``stop`` (at most 4:
  the engine matches every stop sequence in the text itself), ``stream_options.include_usage``.
- ``extra_params``: top_k and ``chat_template_kwargs.enable_thinking`` too; they are not
  OpenAI fields, but llama.cpp, vLLM, SGLang and mlx_lm.server read them.
"""

from __future__ import annotations

import json

from anyclaude.errors import UnsupportedContent

from anyclaude.prompt.blocks import function_tools, merge_strict, turns

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
    for role, group in turns(request, _media):
        if role == "assistant":
            out.extend(_assistant(t) if t["role"] == "assistant" else _tool(t) for t in group)
        else:
            out.extend(_user(role, group))
    return merge_strict(out) if strict_roles else out


def _user(role: str, group: list[dict]) -> list[dict]:
    """Tool messages first, right after the assistant turn; then one user message with the
    rest (images inside tool results too: tool messages carry text only)."""
    tools = [t for t in group if t["role"] == "tool"]
    parts = [p for t in group if t["role"] != "tool" for p in t["parts"]]
    result_images = [m for t in tools for m in t["media"]]
    out = [_tool(t) for t in tools]
    if result_images:
        parts = [{"type": "text", "text": "(images from the tool results above)"},
                 *result_images, *parts]
    if parts or not tools:
        out.append({"role": role, "content": _content(parts)})
    return out


def _tool(turn: dict) -> dict:
    return {"role": "tool", "tool_call_id": turn["tool_call_id"], "content": turn["content"]}


def _assistant(turn: dict) -> dict:
    calls = [{"id": c["id"], "type": "function",
              "function": {"name": c["name"],
                           "arguments": json.dumps(c["input"], ensure_ascii=False)}}
             for c in turn["calls"]]
    texts = turn["texts"]
    message: dict = {"role": "assistant", "content": "\n\n".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _content(parts: list[dict]):
    if all(p["type"] == "text" for p in parts):
        return "\n\n".join(p["text"] for p in parts)
    return parts


def _media(block: dict, where: str) -> dict:
    if block.get("type") == "image":
        return {"type": "image_url", "image_url": {"url": _image_url(block, where)}}
    media_type = block.get("media_type", "")
    if media_type == "application/pdf" and block.get("data"):
        return {"type": "file", "file": {"filename": block.get("title") or "document.pdf",
                                         "file_data": f"data:application/pdf;base64,{block['data']}"}}
    raise UnsupportedContent(f"{where}: {media_type or 'this kind of'} document cannot be sent to "
                             "this model; send its text instead")


def _image_url(block: dict, where: str) -> str:
    if block.get("url"):
        return block["url"]
    if block.get("data") and block.get("media_type"):
        return f"data:{block['media_type']};base64,{block['data']}"
    raise UnsupportedContent(f"{where}: images uploaded with the Files API (file_id) cannot be "
                             "sent to this model; send the image as base64 instead")
