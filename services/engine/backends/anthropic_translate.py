"""Both directions for the anthropic kind (a passthrough to the real Messages API, or to
anything that speaks it).

Request: the internal request is rebuilt into a Messages body faithfully - system blocks,
messages (text, images and documents with their sources, tool_use, tool_result, role
"system" turns), tools, tool_choice, stop_sequences, temperature/top_p/top_k, thinking -
except what the real API rejects in a session that mixed local and remote turns:
- thinking blocks without a signature are dropped (the front door does not keep signatures,
  and local models never had one); a block whose signature is present is kept;
- when that leaves a tool-use loop whose last assistant turn does not start with thinking,
  thinking is turned off for the request (the API requires that block there);
- server_tool_use / web_search_tool_result blocks from the local web-search bridge become
  text (their encrypted_content is not Anthropic's);
- empty text blocks are dropped, an assistant turn left empty is dropped, a user turn left
  empty says "(empty)"; with thinking on, top_k, temperature and a top_p below 0.95 are
  not sent (the API refuses them together with thinking).
The front door drops ``cache_control``; breakpoints are put back where Claude Code puts them
(last tool, last system block, the last two user turns) so the API's prompt cache works.
With thinking on, ``thinking_config`` (the client's object) is used when the front door
passes it, else a budget of half of max_tokens (at least 1024).

Response: the SSE events -> neutral events. text_delta -> text, thinking_delta -> thinking
(signature deltas cannot travel in neutral events and are dropped), a tool_use block's
input_json_delta pieces are gathered and sent as one tool_args at its stop, with the
upstream's tool id; usage and stop_reason / stop_sequence pass through unchanged.
"""

from __future__ import annotations

import json

from anyclaude.prompt.blocks import custom_tool
from anyclaude.websearch_text import call_query

LOCAL_SIGNATURE = "YW55Y2xhdWRlLWxvY2Fs"   # the front door's marker, not a real signature
MIN_THINKING_BUDGET = 1024
EPHEMERAL = {"type": "ephemeral"}


def messages_body(request: dict, *, model_name: str, max_tokens: int, cache: bool = True) -> dict:
    messages = [m for m in (_message(m) for m in request.get("messages") or []) if m["content"]]
    body: dict = {"model": model_name, "max_tokens": max_tokens, "messages": messages, "stream": True}
    system = [{"type": "text", "text": s} for s in request.get("system") or [] if s]
    if system:
        body["system"] = system
    tools = [custom_tool(t) for t in request.get("tools") or []]
    if tools:
        body["tools"] = tools
    if request.get("tool_choice"):
        body["tool_choice"] = dict(request["tool_choice"])
    if request.get("stop_sequences"):
        body["stop_sequences"] = list(request["stop_sequences"])
    for key in ("temperature", "top_p", "top_k"):
        if request.get(key) is not None:
            body[key] = request[key]
    thinking = _thinking(request, max_tokens)
    if thinking and _thinking_allowed(messages):
        body["thinking"] = thinking
        # with thinking the API refuses top_k, a temperature other than 1 and top_p < 0.95
        body.pop("top_k", None)
        body.pop("temperature", None)
        if body.get("top_p", 1.0) < 0.95:
            body.pop("top_p")
    if cache:
        _mark_cache(body)
    return body


def count_body(body: dict) -> dict:
    """The count_tokens body for a messages body."""
    return {k: v for k, v in body.items() if k not in ("max_tokens", "stream", "stop_sequences",
                                                        "temperature", "top_p", "top_k")}


def _message(message: dict) -> dict:
    blocks = []
    for block in message.get("content") or []:
        converted = _block(block)
        if converted is not None:
            blocks.append(converted)
    if not blocks and message.get("role") != "assistant":
        blocks = [{"type": "text", "text": "(empty)"}]   # the API refuses empty turns
    return {"role": message.get("role"), "content": blocks}


def _block(block: dict) -> dict | None:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": block["text"]} if block.get("text") else None
    if kind in ("image", "document"):
        return _media(block)
    if kind == "tool_use":
        return {"type": "tool_use", "id": block.get("id", ""), "name": block.get("name", ""),
                "input": block.get("input") if isinstance(block.get("input"), dict) else {}}
    if kind == "tool_result":
        out = {"type": "tool_result", "tool_use_id": block.get("tool_use_id", ""),
               "content": [c for c in (_block(p) for p in block.get("content") or []) if c]}
        if block.get("is_error"):
            out["is_error"] = True
        return out
    if kind == "thinking":
        signature = block.get("signature") or ""
        if not signature or signature == LOCAL_SIGNATURE:
            return None
        return {"type": "thinking", "thinking": block.get("thinking", ""), "signature": signature}
    if kind == "redacted_thinking":
        return {"type": "redacted_thinking", "data": block.get("data", "")}
    if kind == "web_search_tool_result":
        return {"type": "text", "text": _search_results_text(block)}
    if kind == "server_tool_use":
        return {"type": "text", "text": f"(searched the web for: {call_query(block)})"}
    return {"type": "text", "text": json.dumps(block, ensure_ascii=False)}


def _search_results_text(block: dict) -> str:
    """A web_search_tool_result of the local bridge as text: titles and URLs (the snippets
    are in encrypted_content, which is not Anthropic's)."""
    content = block.get("content")
    if isinstance(content, dict):
        return f"(web search failed: {content.get('error_code', 'error')})"
    lines = ["Web search results:"]
    for item in content or []:
        if isinstance(item, dict):
            lines.append(f"- {item.get('title', '')} ({item.get('url', '')})")
    return "\n".join(lines)


def _media(block: dict) -> dict:
    kind = block["type"]
    if block.get("url"):
        source = {"type": "url", "url": block["url"]}
    elif block.get("file_id"):
        source = {"type": "file", "file_id": block["file_id"]}
    elif kind == "document" and block.get("media_type") == "text/plain":
        source = {"type": "text", "media_type": "text/plain", "data": block.get("data", "")}
    else:
        source = {"type": "base64", "media_type": block.get("media_type", ""), "data": block.get("data", "")}
    out = {"type": kind, "source": source}
    if kind == "document" and block.get("title"):
        out["title"] = block["title"]
    return out


def _thinking(request: dict, max_tokens: int) -> dict | None:
    if not request.get("thinking"):
        return None
    given = request.get("thinking_config")
    if isinstance(given, dict) and given.get("type") in ("enabled", "adaptive"):
        return dict(given)
    budget = max(MIN_THINKING_BUDGET, max_tokens // 2)
    if budget >= max_tokens:
        return None    # no room for a budget the API accepts
    return {"type": "enabled", "budget_tokens": budget}


def _thinking_allowed(messages: list[dict]) -> bool:
    """In a tool-use loop (the last turn returns tool results) the last assistant turn
    must start with a thinking block for the API to accept thinking."""
    if not messages or messages[-1]["role"] != "user":
        return True
    if not any(b.get("type") == "tool_result" for b in messages[-1]["content"]):
        return True
    last = next((m for m in reversed(messages) if m["role"] == "assistant"), None)
    return bool(last and last["content"] and last["content"][0]["type"] in ("thinking", "redacted_thinking"))


def _mark_cache(body: dict) -> None:
    marks = 0
    if body.get("tools"):
        body["tools"][-1]["cache_control"] = EPHEMERAL
        marks += 1
    if body.get("system"):
        body["system"][-1]["cache_control"] = EPHEMERAL
        marks += 1
    users = [m for m in body["messages"] if m["role"] == "user" and m["content"]]
    for message in users[-2:][::-1]:
        if marks >= 4:
            break
        last = message["content"][-1]
        if last.get("type") not in ("thinking", "redacted_thinking"):
            last["cache_control"] = EPHEMERAL
            marks += 1


# --- the response -------------------------------------------------------------------------

class EventTranslator:
    """Anthropic SSE events (already JSON-decoded) -> neutral events."""

    def __init__(self, *, thinking: bool):
        self.thinking = thinking
        self.usage: dict = {}
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self.finished = False
        self.error: dict | None = None
        self._block: dict | None = None      # the open content block
        self._args: list[str] = []

    def feed(self, name: str, data: dict) -> list[dict]:
        kind = data.get("type") or name
        if kind == "message_start":
            self._take_usage((data.get("message") or {}).get("usage"))
        elif kind == "content_block_start":
            return self._start(data.get("content_block") or {})
        elif kind == "content_block_delta":
            return self._delta(data.get("delta") or {})
        elif kind == "content_block_stop":
            return self._stop()
        elif kind == "message_delta":
            delta = data.get("delta") or {}
            self.stop_reason = delta.get("stop_reason") or self.stop_reason
            self.stop_sequence = delta.get("stop_sequence")
            self._take_usage(data.get("usage"))
        elif kind == "message_stop":
            self.finished = True
        elif kind == "error":
            self.error = data.get("error") if isinstance(data.get("error"), dict) else {"message": str(data)}
        return []

    def _take_usage(self, usage) -> None:
        if isinstance(usage, dict):
            self.usage.update({k: v for k, v in usage.items() if isinstance(v, int)})

    def _start(self, block: dict) -> list[dict]:
        self._block, self._args = block, []
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            return [{"type": "text", "text": block["text"]}]
        if kind == "thinking" and block.get("thinking") and self.thinking:
            return [{"type": "thinking", "text": block["thinking"]}]
        return []

    def _delta(self, delta: dict) -> list[dict]:
        kind = delta.get("type")
        if kind == "text_delta":
            return [{"type": "text", "text": delta.get("text", "")}]
        if kind == "thinking_delta":
            return [{"type": "thinking", "text": delta.get("thinking", "")}] if self.thinking else []
        if kind == "input_json_delta":
            self._args.append(delta.get("partial_json", ""))
        return []

    def _stop(self) -> list[dict]:
        block, self._block = self._block or {}, None
        if block.get("type") != "tool_use":
            return []
        raw = "".join(self._args).strip()
        if not raw:
            given = block.get("input")
            raw = json.dumps(given if isinstance(given, dict) else {}, ensure_ascii=False)
        return [{"type": "tool_start", "id": block.get("id", ""), "name": block.get("name", "")},
                {"type": "tool_args", "json": raw}, {"type": "tool_end"}]

    def final_usage(self) -> dict:
        u = self.usage
        return {"input_tokens": u.get("input_tokens", 0), "output_tokens": u.get("output_tokens", 0),
                "cache_read_input_tokens": u.get("cache_read_input_tokens", 0),
                "cache_creation_input_tokens": u.get("cache_creation_input_tokens", 0)}
