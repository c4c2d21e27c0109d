"""The front door's web-search blocks as text a model reads.

The search loop (services/frontdoor/search_loop.py) hands the model a tool result whose
text is ``result_text`` of the web_search_tool_result block the client gets; when the
client sends that block back on a later turn, the chat template and the openai backend
(blocks.py) render it with the same function, so the prompt the engine cached stays a
prefix of the next one.

Our ``encrypted_content`` decodes to {url, title, snippet, page_age}; a block from
elsewhere (foreign encrypted_content) shows its titles and URLs only. An error block
reads "Web search error: <code>". One result text is at most about ``MAX_RESULT_CHARS``
(some 3-4K tokens; a typical 8-result search is well under it): longer text is cut after
the last whole result before the limit, with a note, so one huge search cannot fill the
context window.
"""

from __future__ import annotations

from anyclaude.messages import Results
from anyclaude.services.frontdoor.websearch import decode_encrypted_content, results_as_tool_text

MAX_RESULT_CHARS = 12_000


def result_text(block: dict, query: str | None = None) -> str:
    """A web_search_tool_result block as the tool-result text the model reads."""
    content = block.get("content")
    if isinstance(content, dict):
        return results_as_tool_text(Results(error_code=str(content.get("error_code")
                                                            or "unavailable")))
    items = []
    for item in content if isinstance(content, list) else ():
        if not isinstance(item, dict):
            continue
        decoded = decode_encrypted_content(item.get("encrypted_content"))
        items.append(decoded if decoded is not None else {
            "url": item.get("url"), "title": item.get("title"), "snippet": None,
            "page_age": item.get("page_age")})
    return _capped(results_as_tool_text(Results(results=items), query or None))


def _capped(text: str) -> str:
    if len(text) <= MAX_RESULT_CHARS:
        return text
    cut = text.rfind("\n\n", 0, MAX_RESULT_CHARS) + 2   # after the last whole result
    if cut <= MAX_RESULT_CHARS // 2:
        cut = MAX_RESULT_CHARS
    head = text[:cut] if text[cut - 1] == "\n" else text[:cut] + "\n"
    return head + f"[… {len(text) - cut:,} more characters of results cut by anyclaude]\n"


def call_query(block: dict) -> str:
    """The query of a server_tool_use block ("" when it has none)."""
    args = block.get("input")
    query = args.get("query") if isinstance(args, dict) else None
    return query if isinstance(query, str) else ""
