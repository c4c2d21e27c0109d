"""Claude Code's dedicated WebSearch call, answered by searching — no model call.

Claude Code's WebSearch tool sends its own request: one user message "Perform a web search
for the query: <q>" with the web_search server tool. The real API searches server-side;
we search through the websearch service (SearXNG) and answer with server_tool_use,
web_search_tool_result and a text block carrying the snippets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import structlog

from . import websearch

log = structlog.get_logger()


def dedicated_search(body: dict, request: dict) -> tuple[str, websearch.WebSearchTool] | None:
    """(query, tool) when this request is the dedicated search call, else None."""
    tool = websearch.find_tool(request.get("server_tools") or [])
    if tool is None:
        return None
    query = websearch.dedicated_query(body)
    if query is None:
        return None
    return query, tool


def answer(query: str, tool: websearch.WebSearchTool, search: websearch.SearchFn, *,
           stream: bool, model: str, message_id: str, request_id: str):
    """The non-streaming body (a dict), or an iterator of SSE bytes."""
    if not stream:
        reply = _run(query, tool, search, request_id)
        return websearch.message_body(reply, model=model, message_id=message_id)
    return _stream(query, tool, search, model=model, message_id=message_id, request_id=request_id)


def _stream(query, tool, search, *, model, message_id, request_id) -> Iterator[bytes]:
    for event in websearch.sse_message_start(model=model, message_id=message_id):
        yield event.encode()  # headers and message_start before the search runs
    reply = _run(query, tool, search, request_id)
    for event in websearch.sse_blocks(reply.blocks) + websearch.sse_message_end(reply):
        yield event.encode()


def _run(query, tool, search, request_id) -> websearch.SearchReply:
    reply = websearch.run_search(query, tool, search)
    log.info("frontdoor.web_search", request_id=request_id, query_chars=len(query),
             results=len(reply.results.results), error=reply.error_code)
    return reply


SearchFactory = Callable[[], websearch.SearchFn]
