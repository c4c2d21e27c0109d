"""Web-search results as text and blocks: shared by the front door, the engine's template
and the websearch service (its query limit).

The front door's web-search blocks as text a model reads.

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

import base64
import json

from anyclaude.messages import Results

MAX_RESULT_CHARS = 12_000
MAX_QUERY_CHARS = 500     # longer queries answer query_too_long (engines cut them anyway)


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


def encrypted_content(result: dict) -> str:
    payload = {k: result.get(k) for k in ("url", "title", "snippet", "page_age")}
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "replace")
    return base64.b64encode(raw).decode("ascii")


def decode_encrypted_content(value) -> dict | None:
    """Our own encrypted_content back into {url, title, snippet, page_age}; None if foreign."""
    try:
        data = json.loads(base64.b64decode(value, validate=True))
    except (ValueError, TypeError):
        return None
    return data if isinstance(data, dict) and "url" in data else None


def valid_results(items) -> list:
    return [r for r in items if isinstance(r, dict) and isinstance(r.get("url"), str)]


def results_as_tool_text(results: Results, query: str | None = None) -> str:
    """What a model should read: numbered titles, URLs, dates and snippets, or the error."""
    if results.error_code is not None:
        detail = f" ({results.message})" if results.message else ""
        return f"Web search error: {results.error_code}{detail}"
    items = valid_results(results.results)
    about = f' for "{query}"' if query else ""
    if not items:
        return f"No web results found{about}."
    lines = [f"Web search results{about}:", ""]
    for n, r in enumerate(items, 1):
        lines.append(f"{n}. {r.get('title') or r['url']}")
        lines.append(f"   URL: {r['url']}")
        if r.get("page_age"):
            lines.append(f"   Published: {r['page_age']}")
        if r.get("snippet"):
            lines.append(f"   {r['snippet']}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
