"""The internal (Anthropic-shaped) request -> the model's chat messages -> prompt token ids.

Mapping (see anyclaude/messages.py for the request shape):
- ``system`` blocks are joined with a blank line into one leading system message.
- A role "system" message later in the conversation stays a system turn (Qwen templates
  render it as ``<|im_start|>system``). If the template refuses that (or refuses two turns of
  the same role in a row), the render is retried with each such system message turned into
  user text and consecutive user/assistant turns merged (texts joined by a blank line).
- User text blocks are joined with a blank line. ``tool_result`` blocks become "tool"
  messages in order (text parts joined by a newline; ``is_error`` prefixes "Error: "); text
  blocks around them become user messages, so block order is kept.
- Assistant ``tool_use`` -> ``tool_calls`` with arguments as dicts (templates ``tojson``
  them); ``thinking`` -> ``reasoning_content`` (the template decides which turns keep it;
  Qwen3 drops it for turns before the last real user query); ``redacted_thinking`` is
  dropped (it is opaque).
- The front door's web searches in an assistant turn (search_loop.py): ``server_tool_use``
  -> a tool call (arguments {query}); ``web_search_tool_result`` ends the assistant message
  there and becomes a "tool" message whose text is ``search_blocks.result_text`` (the
  decoded results with snippets, or "Web search error: <code>"); what follows starts a new
  assistant message. That is the shape the search loop sent the engine, so the prompt it
  cached stays a prefix of the next turn's.
- Images, and documents that are not text/*, raise UnsupportedContent (mlx-lm models read
  text only); text documents are inlined as text.
- A final assistant message with text is a prefill: it is rendered open
  (``continue_final_message``) and the model continues it.
- ``tool_choice`` none renders no tools; auto, any and tool render them all.
- ``thinking`` is passed to the template as ``enable_thinking``.

Rendering is deterministic: the same request always gives the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2.exceptions import TemplateError

from anyclaude.errors import InvalidRequest, UnsupportedContent

from .search_blocks import call_query, result_text


@dataclass(frozen=True)
class Rendered:
    ids: list[int]
    text: str
    starts_in_thinking: bool    # the prompt ends inside an opened thinking block
    prefill: str                # the assistant text the model continues ("" if none)


class ChatRenderer:
    def __init__(self, tokenizer, *, model_id: str = "model"):
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.think_start = getattr(tokenizer, "think_start", None) or "<think>"
        self.think_end = getattr(tokenizer, "think_end", None) or "</think>"

    def render(self, request: dict) -> list[int]:
        return self.render_prompt(request).ids

    def render_prompt(self, request: dict) -> Rendered:
        messages = to_chat_messages(request, model_id=self.model_id)
        tools = chat_tools(request)
        prefill = ""
        last = messages[-1] if messages else None
        if last and last["role"] == "assistant" and not last.get("tool_calls"):
            if last["content"].strip():
                prefill = last["content"]
            else:
                messages = messages[:-1]  # an empty prefill is no prefill
        try:
            text = self._apply(messages, tools, request, bool(prefill))
        except TemplateError:
            strict = merge_for_strict_templates(messages)
            if strict == messages:
                raise
            text = self._apply(strict, tools, request, bool(prefill))
        ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        return Rendered(ids=ids, text=text, prefill=prefill,
                        starts_in_thinking=text.rfind(self.think_start) > text.rfind(self.think_end))

    def _apply(self, messages, tools, request, prefill: bool) -> str:
        if not messages:
            raise InvalidRequest("messages: at least one message is required")
        kwargs = dict(tokenize=False, enable_thinking=bool(request.get("thinking")))
        if prefill:
            kwargs.update(add_generation_prompt=False, continue_final_message=True)
        else:
            kwargs.update(add_generation_prompt=True)
        if tools:
            kwargs["tools"] = tools
        return self.tokenizer.apply_chat_template(messages, **kwargs)


def chat_tools(request: dict) -> list[dict] | None:
    """Anthropic custom tools -> OpenAI-style function tools (what HF templates expect)."""
    choice = request.get("tool_choice") or {}
    if choice.get("type") == "none":
        return None
    out = []
    for tool in request.get("tools") or []:
        function = {"name": tool["name"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
        out.append({"type": "function", "function": function})
    return out or None


def to_chat_messages(request: dict, *, model_id: str = "model") -> list[dict]:
    messages: list[dict] = []
    system = "\n\n".join(s for s in request.get("system") or [] if s)
    if system:
        messages.append({"role": "system", "content": system})
    for index, message in enumerate(request.get("messages") or []):
        role = message.get("role")
        blocks = message.get("content") or []
        where = f"messages[{index}]"
        if role == "assistant":
            messages.extend(_assistant(blocks, where, model_id))
        elif role in ("user", "system"):
            messages.extend(_user_or_system(role, blocks, where, model_id))
        else:
            raise InvalidRequest(f"{where}.role: unknown role {role!r}")
    return messages


def _user_or_system(role: str, blocks: list, where: str, model_id: str) -> list[dict]:
    out: list[dict] = []
    texts: list[str] = []

    def flush():
        if texts:
            out.append({"role": role, "content": "\n\n".join(texts)})
            texts.clear()

    for i, block in enumerate(blocks):
        kind = block.get("type")
        if kind == "tool_result" and role == "user":
            flush()
            out.append({"role": "tool", "tool_call_id": block.get("tool_use_id", ""),
                        "content": _tool_result_text(block, f"{where}.content[{i}]", model_id)})
        elif kind in ("thinking", "redacted_thinking"):
            continue  # only assistant turns carry reasoning
        else:
            texts.append(_text_of(block, f"{where}.content[{i}]", model_id))
    flush()
    if not out:  # an empty message still takes its turn
        out.append({"role": role, "content": ""})
    return out


def _assistant(blocks: list, where: str, model_id: str) -> list[dict]:
    out: list[dict] = []
    texts, reasoning, calls = [], [], []
    queries: dict[str, str] = {}

    def flush() -> None:
        message = {"role": "assistant", "content": "\n\n".join(texts)}
        if reasoning:
            message["reasoning_content"] = "\n\n".join(reasoning)
        if calls:
            message["tool_calls"] = list(calls)
        out.append(message)
        texts.clear(), reasoning.clear(), calls.clear()

    for i, block in enumerate(blocks):
        kind = block.get("type")
        if kind in ("tool_use", "server_tool_use"):
            args = block.get("input")
            if kind == "server_tool_use":
                args = {"query": call_query(block)}
                queries[block.get("id", "")] = args["query"]
            calls.append({"id": block.get("id", ""), "type": "function",
                          "function": {"name": block.get("name", ""),
                                       "arguments": args if isinstance(args, dict) else {}}})
        elif kind == "web_search_tool_result":
            if texts or reasoning or calls:
                flush()
            tool_use_id = block.get("tool_use_id", "")
            out.append({"role": "tool", "tool_call_id": tool_use_id,
                        "content": result_text(block, queries.get(tool_use_id))})
        elif kind == "thinking":
            if block.get("thinking"):
                reasoning.append(block["thinking"])
        elif kind == "redacted_thinking":
            continue
        else:
            texts.append(_text_of(block, f"{where}.content[{i}]", model_id))
    if texts or reasoning or calls or not out:
        flush()
    return out


def _text_of(block: dict, where: str, model_id: str) -> str:
    kind = block.get("type")
    if kind == "text":
        return block.get("text", "")
    if kind == "image":
        raise UnsupportedContent(f"model {model_id} cannot read images ({where} is an image); "
                                 "send text only or route image requests to another model")
    if kind == "document":
        media_type = block.get("media_type", "")
        if media_type.startswith("text/"):
            data = block.get("data", "")
            return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        raise UnsupportedContent(f"model {model_id} cannot read {media_type or 'binary'} documents "
                                 f"({where}); send the document's text instead")
    if kind == "tool_result":
        raise InvalidRequest(f"{where}: tool_result blocks belong in user messages")
    if kind in ("tool_use", "server_tool_use"):
        raise InvalidRequest(f"{where}: {kind} blocks belong in assistant messages")
    if kind == "web_search_tool_result":   # outside an assistant turn: read as text
        return result_text(block)
    raise UnsupportedContent(f"{where}: unsupported content block type {kind!r}")


def _tool_result_text(block: dict, where: str, model_id: str) -> str:
    content = block.get("content") or []
    if isinstance(content, str):
        text = content
    else:
        text = "\n".join(_text_of(b, f"{where}.content[{j}]", model_id)
                         for j, b in enumerate(content))
    if block.get("is_error"):
        text = f"Error: {text}" if text else "Error"
    return text


def merge_for_strict_templates(messages: list[dict]) -> list[dict]:
    """For templates that refuse mid-conversation system turns or repeated roles: later
    system messages become user text, and consecutive user (or plain assistant) turns merge."""
    out: list[dict] = []
    for i, message in enumerate(messages):
        message = dict(message)
        if message["role"] == "system" and i > 0:
            message["role"] = "user"
        prev = out[-1] if out else None
        mergeable = (prev is not None and prev["role"] == message["role"]
                     and message["role"] in ("user", "assistant")
                     and not prev.get("tool_calls") and not message.get("reasoning_content"))
        if mergeable:
            prev["content"] = "\n\n".join(t for t in (prev["content"], message["content"]) if t)
            if message.get("tool_calls"):
                prev["tool_calls"] = message["tool_calls"]
        else:
            out.append(message)
    return out
