"""The web_search server tool at the front door: detect it, run one search, answer it.

Claude Code's WebSearch tool makes a separate /v1/messages call whose only user message is
``Perform a web search for the query: <q>`` with a ``web_search_20250305`` server tool. The
front door answers that call itself, without the model:

    tool = find_tool(body.get("tools"))
    query = dedicated_query(body) if tool else None
    if query is not None:
        reply = run_search(query, tool, bus_search(client, timeout_s=cfg.timeout_s + 2))
        body = message_body(reply, model=body["model"], message_id=msg_id)   # or:
        for event in sse_events(reply, model=body["model"], message_id=msg_id): yield event

To get message_start out before the search runs (waitress sends headers with the first
chunk), stream ``sse_message_start(...)`` first, then ``sse_blocks(reply.blocks)`` and
``sse_message_end(reply)``; ``sse_events`` is exactly those three concatenated.

The reply is three blocks: server_tool_use, web_search_tool_result (results, or the error
object — errors always travel inside a 200 reply), and a text block with titles, URLs and
snippets, because Claude Code keeps only titles and URLs from the result block and passes
text blocks on to the main model.

``encrypted_content`` is base64 of the compact JSON ``{"url", "title", "snippet",
"page_age"}``: opaque to clients, readable by us again (``decode_encrypted_content``) when a
client sends a result block back. ``web_search_requests`` counts searches SearXNG answered.
Queries longer than ``MAX_QUERY_CHARS`` (500) answer query_too_long; searches beyond
``max_uses`` answer max_uses_exceeded; neither reaches SearXNG.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog

from anyclaude import errors
from anyclaude.messages import Results, Search
from anyclaude.websearch_text import (MAX_QUERY_CHARS, decode_encrypted_content,
                                      encrypted_content, results_as_tool_text, valid_results)

log = structlog.get_logger()

DEDICATED_PREFIX = "Perform a web search for the query:"
ERROR_CODES = ("invalid_tool_input", "unavailable", "max_uses_exceeded", "too_many_requests",
               "query_too_long", "request_too_large")

SearchFn = Callable[[str, list, list], Results]
_ID_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class WebSearchTool:
    type: str
    name: str = "web_search"
    max_uses: int | None = None
    allowed_domains: tuple = ()
    blocked_domains: tuple = ()


@dataclass(frozen=True)
class SearchReply:
    query: str
    tool_use_id: str
    results: Results
    web_search_requests: int
    blocks: list

    @property
    def error_code(self) -> str | None:
        return self.results.error_code

    @property
    def output_tokens(self) -> int:
        """A rough count (4 characters a token) of what we 'generated'."""
        return 1 + (len(self.query) + len(self.blocks[-1]["text"])) // 4


# --- detection --------------------------------------------------------------------------

def find_tool(tools) -> WebSearchTool | None:
    """The first server tool whose type starts with ``web_search_``, else None."""
    for tool in tools if isinstance(tools, list) else ():
        if isinstance(tool, dict) and str(tool.get("type", "")).startswith("web_search_"):
            uses = tool.get("max_uses")
            return WebSearchTool(
                type=tool["type"],
                name=tool.get("name") if isinstance(tool.get("name"), str) else "web_search",
                max_uses=uses if isinstance(uses, int) and not isinstance(uses, bool) else None,
                allowed_domains=_strings(tool.get("allowed_domains")),
                blocked_domains=_strings(tool.get("blocked_domains")))
    return None


def _strings(value) -> tuple:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def dedicated_query(body: dict) -> str | None:
    """The query of Claude Code's dedicated search call, or None if this is not one.

    One user message (role "system" messages aside) with a text that has DEDICATED_PREFIX
    at the start of a line (a system reminder may come before it). An empty query comes back as "" (run_search answers invalid_tool_input).
    """
    chat = [m for m in body.get("messages") or () if isinstance(m, dict)
            and m.get("role") != "system"]
    if len(chat) != 1 or chat[0].get("role") != "user":
        return None
    content = chat[0].get("content")
    texts = [content] if isinstance(content, str) else [
        b.get("text") for b in content or () if isinstance(b, dict) and b.get("type") == "text"]
    for text in texts:
        at = text.find(DEDICATED_PREFIX) if isinstance(text, str) else -1
        if at == 0 or (at > 0 and text[:at].endswith("\n")):  # at the start of a line
            return text[at + len(DEDICATED_PREFIX):].strip()
    return None


# --- running one search -----------------------------------------------------------------

def new_tool_use_id() -> str:
    return "srvtoolu_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def bus_search(client, *, timeout_s: float) -> SearchFn:
    """The real search callable over a ``bus.Client("websearch")`` owned by this thread."""
    def search(query: str, allowed: list, blocked: list) -> Results:
        reply = client.request(Search(query, list(allowed), list(blocked)), timeout=timeout_s)
        if not isinstance(reply, Results):
            raise errors.BadFrame(f"websearch answered {reply.kind}, expected Results")
        return reply
    return search


def run_search(query: str, tool: WebSearchTool, search: SearchFn, *, uses_so_far: int = 0,
               tool_use_id: str | None = None) -> SearchReply:
    """One search, checked first (empty, too long, max_uses) without calling ``search``."""
    tool_use_id = tool_use_id or new_tool_use_id()
    query = query.strip() if isinstance(query, str) else ""
    searched = False
    if not query:
        results = Results(error_code="invalid_tool_input", message="the search query is empty")
    elif len(query) > MAX_QUERY_CHARS:
        results = Results(error_code="query_too_long", message=f"the query has {len(query)} "
                          f"characters; at most {MAX_QUERY_CHARS} are allowed")
    elif tool.max_uses is not None and uses_so_far >= tool.max_uses:
        results = Results(error_code="max_uses_exceeded",
                          message=f"max_uses is {tool.max_uses}; no more searches in this turn")
    else:
        results, searched = _call(search, query, tool), True
    count = 1 if searched and results.error_code is None else 0
    return SearchReply(query, tool_use_id, results, count,
                       reply_blocks(query, tool_use_id, results))


def _call(search: SearchFn, query: str, tool: WebSearchTool) -> Results:
    try:
        results = search(query, list(tool.allowed_domains), list(tool.blocked_domains))
    except errors.AnyclaudeError as exc:
        log.warning("frontdoor.websearch.failed", error=exc.message)
        return Results(error_code="unavailable", message=f"web search service: {exc.message}")
    except Exception as exc:
        log.exception("frontdoor.websearch.crashed")
        return Results(error_code="unavailable", message=f"web search failed: {exc}")
    if not isinstance(results, Results):
        return Results(error_code="unavailable", message="web search answered nonsense")
    if results.error_code is not None and results.error_code not in ERROR_CODES:
        return Results(error_code="unavailable", message=results.message)
    return results


# --- the reply as Anthropic content blocks ----------------------------------------------

def result_block(tool_use_id: str, results: Results) -> dict:
    if results.error_code is not None:
        content = {"type": "web_search_tool_result_error", "error_code": results.error_code}
    else:
        content = [{"type": "web_search_result", "url": r["url"],
                    "title": str(r.get("title") or r["url"]),
                    "encrypted_content": encrypted_content(r),
                    "page_age": r.get("page_age") if isinstance(r.get("page_age"), str) else None}
                   for r in valid_results(results.results)]
    return {"type": "web_search_tool_result", "tool_use_id": tool_use_id, "content": content}


def reply_blocks(query: str, tool_use_id: str, results: Results) -> list:
    return [
        {"type": "server_tool_use", "id": tool_use_id, "name": "web_search",
         "input": {"query": query}},
        result_block(tool_use_id, results),
        {"type": "text", "text": results_as_tool_text(results, query)},
    ]


# --- rendering: non-streaming body and SSE ----------------------------------------------

def _usage(reply: SearchReply, input_tokens: int) -> dict:
    return {"input_tokens": input_tokens, "output_tokens": reply.output_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "server_tool_use": {"web_search_requests": reply.web_search_requests,
                                "web_fetch_requests": 0}}


def message_body(reply: SearchReply, *, model: str, message_id: str,
                 input_tokens: int = 0) -> dict:
    """The complete non-streaming Anthropic Message for a search reply."""
    return {"id": message_id, "type": "message", "role": "assistant", "model": model,
            "content": reply.blocks, "stop_reason": "end_turn", "stop_sequence": None,
            "usage": _usage(reply, input_tokens)}


def sse(event_type: str, data: dict) -> str:
    """One SSE event; ASCII-only JSON so encoding it can never fail."""
    return f"event: {event_type}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def sse_message_start(*, model: str, message_id: str, input_tokens: int = 0) -> list:
    """message_start and a ping: send these at once, before the search runs."""
    message = {"id": message_id, "type": "message", "role": "assistant", "model": model,
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": input_tokens, "output_tokens": 0,
                         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}
    return [sse("message_start", {"type": "message_start", "message": message}),
            sse("ping", {"type": "ping"})]


def sse_blocks(blocks: Iterable[dict], *, first_index: int = 0) -> list:
    """content_block_start/delta/stop for each block, indices from ``first_index``."""
    out = []
    for index, block in enumerate(blocks, first_index):
        kind = block["type"]
        if kind in ("server_tool_use", "tool_use"):
            out.append(_start(index, {**block, "input": {}}))
            out.append(_delta(index, {"type": "input_json_delta",
                                      "partial_json": json.dumps(block["input"])}))
        elif kind == "text":
            out.append(_start(index, {"type": "text", "text": ""}))
            if block["text"]:
                out.append(_delta(index, {"type": "text_delta", "text": block["text"]}))
        else:  # web_search_tool_result and other complete blocks arrive whole
            out.append(_start(index, block))
        out.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    return out


def _start(index: int, block: dict) -> str:
    return sse("content_block_start",
               {"type": "content_block_start", "index": index, "content_block": block})


def _delta(index: int, delta: dict) -> str:
    return sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                       "delta": delta})


def sse_message_end(reply: SearchReply, *, stop_reason: str = "end_turn") -> list:
    usage = {"output_tokens": reply.output_tokens,
             "server_tool_use": {"web_search_requests": reply.web_search_requests,
                                 "web_fetch_requests": 0}}
    return [sse("message_delta", {"type": "message_delta",
                                  "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                  "usage": usage}),
            sse("message_stop", {"type": "message_stop"})]


def sse_events(reply: SearchReply, *, model: str, message_id: str,
               input_tokens: int = 0) -> list:
    """The whole stream for a search reply, one string per event."""
    return [*sse_message_start(model=model, message_id=message_id, input_tokens=input_tokens),
            *sse_blocks(reply.blocks), *sse_message_end(reply)]
