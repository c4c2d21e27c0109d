"""The internal (Anthropic-shaped) request -> the model's chat messages -> prompt token ids.

Mapping (see anyclaude/messages.py for the request shape; the walk over the blocks is
blocks.py's, shared with openai_translate.py):
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

from anyclaude.prompt.blocks import function_tools, merge_strict, turns


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
            strict = merge_strict(messages)
            if strict == messages:
                raise
            text = self._apply(strict, tools, request, bool(prefill))
        ids = list(self.tokenizer.encode(text, add_special_tokens=False))
        return Rendered(ids=ids, text=text, prefill=prefill,
                        starts_in_thinking=text.rfind(self.think_start) > text.rfind(self.think_end))

    def renders_tools(self) -> bool:
        """Whether the chat template puts tools in the prompt at all: some (SmolLM2's) have no
        place for them, so a model behind such a template never sees the tools it is offered."""
        probe = {"system": [], "messages": [{"role": "user", "content": [
            {"type": "text", "text": "hello"}]}], "thinking": False}
        tool = {"name": "probe_tool_x7", "description": "A probe.",
                "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}
        try:
            return (self.render_prompt({**probe, "tools": [tool]}).text
                    != self.render_prompt({**probe, "tools": []}).text)
        except Exception:   # a template that fails on the probe: say nothing about it
            return True

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
    """The tools the template renders: none with tool_choice none."""
    if (request.get("tool_choice") or {}).get("type") == "none":
        return None
    return function_tools(request) or None


def to_chat_messages(request: dict, *, model_id: str = "model") -> list[dict]:
    refuse = _text_only(model_id)
    return [_chat_message(turn) for _, group in turns(request, refuse) for turn in group]


def _chat_message(turn: dict) -> dict:
    role = turn["role"]
    if role == "tool":
        return {"role": "tool", "tool_call_id": turn["tool_call_id"], "content": turn["content"]}
    if role != "assistant":
        return {"role": role, "content": "\n\n".join(p["text"] for p in turn["parts"])}
    message = {"role": "assistant", "content": "\n\n".join(turn["texts"])}
    if turn["reasoning"]:
        message["reasoning_content"] = "\n\n".join(turn["reasoning"])
    if turn["calls"]:
        # arguments as dicts: templates ``tojson`` them
        message["tool_calls"] = [{"id": c["id"], "type": "function",
                                  "function": {"name": c["name"], "arguments": c["input"]}}
                                 for c in turn["calls"]]
    return message


def _text_only(model_id: str):
    """The blocks.Media of a model that reads text only: it refuses them all."""
    def refuse(block: dict, where: str) -> dict:
        if block.get("type") == "image":
            raise UnsupportedContent(f"model {model_id} cannot read images ({where} is an image); "
                                     "send text only or route image requests to another model")
        media_type = block.get("media_type") or ""
        raise UnsupportedContent(f"model {model_id} cannot read {media_type or 'binary'} documents "
                                 f"({where}); send the document's text instead")
    return refuse
