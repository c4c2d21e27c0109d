"""The internal (Anthropic-shaped) request's messages, walked once for every chat target.

template.py (the MLX chat template) and openai_translate.py (an OpenAI chat.completions
server) both turn the request into chat messages. The walk and its rules are here; each of
them only shapes what the walk yields. ``turns(request, media)`` yields, message by message
(the joined ``system`` blocks first, when there are any), the role and its turns, in block
order:

    {"role": "system" | "user", "parts": [...]}        text parts {"type": "text", "text"}
                                                       and what ``media`` made of the rest
    {"role": "tool", "tool_call_id", "content", "media": [...]}
    {"role": "assistant", "texts": [...], "reasoning": [...], "calls": [{"id", "name", "input"}]}

- In a user message each ``tool_result`` is a tool turn: its text parts joined by a newline,
  ``is_error`` prefixes "Error: ", its other parts go to ``media``; the blocks around it
  become user turns. A message with nothing to show is one empty turn.
- Only assistant turns carry reasoning (each non-empty ``thinking``); ``redacted_thinking``
  is dropped (it is opaque).
- ``tool_use`` -> a call, its input a dict ({} if it is not one).
- The front door's web searches (search_loop.py): ``server_tool_use`` -> a call with the
  arguments {query}; in an assistant message ``web_search_tool_result`` ends the assistant
  turn there and becomes a tool turn whose text is ``search_blocks.result_text``; what
  follows starts a new assistant turn. Elsewhere it reads as that text. This is the shape
  the search loop sent the engine, so the prompt it cached stays a prefix of the next one.
- text/* documents are inlined as text; images and other documents are ``media(block,
  where)``'s to convert (to a part) or to refuse (by raising).
- Misplaced blocks raise InvalidRequest; unknown ones UnsupportedContent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from anyclaude.errors import InvalidRequest, UnsupportedContent

from anyclaude.websearch_text import call_query, result_text

Media = Callable[[dict, str], dict]    # (image or document block, where) -> a part


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def turns(request: dict, media: Media) -> Iterator[tuple[str, list[dict]]]:
    system = "\n\n".join(s for s in request.get("system") or [] if s)
    if system:
        yield "system", [{"role": "system", "parts": [text_part(system)]}]
    for index, message in enumerate(request.get("messages") or []):
        role = message.get("role")
        blocks = message.get("content") or []
        where = f"messages[{index}]"
        if role == "assistant":
            yield role, _assistant(blocks, where, media)
        elif role in ("user", "system"):
            yield role, _user_or_system(role, blocks, where, media)
        else:
            raise InvalidRequest(f"{where}.role: unknown role {role!r}")


def _user_or_system(role: str, blocks: list, where: str, media: Media) -> list[dict]:
    out: list[dict] = []
    parts: list[dict] = []
    for i, block in enumerate(blocks):
        kind = block.get("type")
        if kind == "tool_result" and role == "user":
            if parts:
                out.append({"role": role, "parts": parts})
                parts = []
            out.append(_tool_result(block, f"{where}.content[{i}]", media))
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            parts.append(part(block, f"{where}.content[{i}]", media))
    if parts or not out:
        out.append({"role": role, "parts": parts})
    return out


def _assistant(blocks: list, where: str, media: Media) -> list[dict]:
    out: list[dict] = []
    turn = _assistant_turn()
    queries: dict[str, str] = {}
    for i, block in enumerate(blocks):
        kind = block.get("type")
        at = f"{where}.content[{i}]"
        if kind in ("tool_use", "server_tool_use"):
            args = block.get("input")
            if kind == "server_tool_use":
                args = {"query": call_query(block)}
                queries[block.get("id", "")] = args["query"]
            turn["calls"].append({"id": block.get("id", ""), "name": block.get("name", ""),
                                  "input": args if isinstance(args, dict) else {}})
        elif kind == "web_search_tool_result":
            if _pending(turn):
                out.append(turn)
                turn = _assistant_turn()
            tool_use_id = block.get("tool_use_id", "")
            out.append({"role": "tool", "tool_call_id": tool_use_id, "media": [],
                        "content": result_text(block, queries.get(tool_use_id))})
        elif kind == "thinking":
            if block.get("thinking"):
                turn["reasoning"].append(block["thinking"])
        elif kind == "redacted_thinking":
            continue
        else:
            converted = part(block, at, media)
            if converted["type"] != "text":
                raise UnsupportedContent(f"{at}: an assistant turn cannot carry {kind} content "
                                         "for this model")
            turn["texts"].append(converted["text"])
    if _pending(turn) or not out:
        out.append(turn)
    return out


def _assistant_turn() -> dict:
    return {"role": "assistant", "texts": [], "reasoning": [], "calls": []}


def _pending(turn: dict) -> bool:
    return bool(turn["texts"] or turn["reasoning"] or turn["calls"])


def _tool_result(block: dict, where: str, media: Media) -> dict:
    content = block.get("content") or []
    if isinstance(content, str):
        content = [text_part(content)]
    parts = [part(p, f"{where}.content[{j}]", media) for j, p in enumerate(content)]
    text = "\n".join(p["text"] for p in parts if p["type"] == "text")
    if block.get("is_error"):
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": text,
            "media": [p for p in parts if p["type"] != "text"]}


def part(block: dict, where: str, media: Media) -> dict:
    """A block of a user or system turn (or of a tool result) as a part."""
    kind = block.get("type")
    if kind == "text":
        return text_part(block.get("text", ""))
    if kind == "document" and (block.get("media_type") or "").startswith("text/"):
        data = block.get("data", "")
        return text_part(data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data))
    if kind in ("image", "document"):
        return media(block, where)
    if kind == "web_search_tool_result":
        return text_part(result_text(block))
    if kind == "tool_result":
        raise InvalidRequest(f"{where}: tool_result blocks belong in user messages")
    if kind in ("tool_use", "server_tool_use"):
        raise InvalidRequest(f"{where}: {kind} blocks belong in assistant messages")
    raise UnsupportedContent(f"{where}: unsupported content block type {kind!r}")


def custom_tool(tool: dict) -> dict:
    """One request tool ({name, description, input_schema}) as the Anthropic API takes it:
    the description only when there is one, an empty object schema when there is none. The
    one place a request's tools are reshaped (see function_tool)."""
    out = {"name": tool["name"]}
    if tool.get("description"):
        out["description"] = tool["description"]
    out["input_schema"] = tool.get("input_schema") or {"type": "object", "properties": {}}
    return out


def function_tool(tool: dict) -> dict:
    """One request tool as an OpenAI-style function tool (what HF templates, OpenAI-style
    servers and mlx-lm's tool-call parsers read): ``{type, function: {name, description?,
    parameters}}``."""
    function = custom_tool(tool)
    function["parameters"] = function.pop("input_schema")
    return {"type": "function", "function": function}


def function_tools(request: dict) -> list[dict]:
    """Anthropic custom tools -> OpenAI-style function tools (what HF templates expect too)."""
    return [function_tool(tool) for tool in request.get("tools") or []]


def merge_strict(messages: list[dict]) -> list[dict]:
    """For templates and servers that refuse mid-conversation system turns or two turns of
    one role in a row: later system messages become user text, and consecutive user (or
    plain assistant) turns merge, their texts joined by a blank line."""
    out: list[dict] = []
    for i, message in enumerate(messages):
        message = dict(message)
        if message["role"] == "system" and i > 0:
            message["role"] = "user"
        prev = out[-1] if out else None
        if prev is not None and _mergeable(prev, message):
            prev["content"] = "\n\n".join(t for t in (prev["content"], message["content"]) if t)
            if message.get("tool_calls"):
                prev["tool_calls"] = message["tool_calls"]
        else:
            out.append(message)
    return out


def _mergeable(prev: dict, message: dict) -> bool:
    # content is a list with images (openai) or None beside tool calls; reasoning is kept
    # on its own turn (the template decides where it shows)
    return (prev["role"] == message["role"] and message["role"] in ("user", "assistant")
            and isinstance(prev.get("content"), str) and isinstance(message.get("content"), str)
            and not prev.get("tool_calls") and not message.get("reasoning_content"))
