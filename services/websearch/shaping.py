"""Turn SearXNG's raw results into the few clean fields a model should see.

A shaped result is ``{url, title, snippet, page_age}``: http(s) URLs only, one entry per
page (scheme, ``www.``-less host case, trailing slash and fragment do not make a new page),
titles and snippets without markup and with bounded length, domain filters applied by host
suffix (``example.com`` matches ``docs.example.com``, never ``badexample.com``).
"""

from __future__ import annotations

import html
import re
from datetime import datetime
from urllib.parse import urlsplit

from anyclaude.websearch_text import MAX_QUERY_CHARS  # noqa: F401  (the limit the front door enforces)

SNIPPET_CHARS = 500
TITLE_CHARS = 200
URL_CHARS = 2048

_TAG = re.compile(r"<[^>]{0,200}>")
_SPACE = re.compile(r"\s+")


def clean_text(value, limit: int) -> str:
    """Plain text: tags removed, entities decoded, whitespace collapsed, at most ``limit``."""
    if not isinstance(value, str):
        return ""
    value = value[: limit * 4]  # bound the work on megabyte-sized fields first
    value = _SPACE.sub(" ", html.unescape(_TAG.sub(" ", value))).strip()
    if len(value) > limit:
        value = value[: limit - 1].rstrip() + "…"
    return value


def http_url(value) -> str | None:
    """The URL if it is an absolute http(s) URL with a host, else None."""
    if not isinstance(value, str) or len(value) > URL_CHARS:
        return None
    value = value.strip()
    try:
        parts = urlsplit(value)
        parts.port  # raises ValueError on a malformed port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    if any(c.isspace() for c in value):
        return None
    return value


def page_key(url: str) -> str:
    """What makes two URLs the same page for de-duplication."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host.startswith("www."):
        host = host[4:]
    port = f":{parts.port}" if parts.port and parts.port not in (80, 443) else ""
    path = parts.path.rstrip("/")
    query = f"?{parts.query}" if parts.query else ""
    return f"{host}{port}{path}{query}"


def normalize_domain(entry: str) -> tuple[str, str] | None:
    """``"https://Docs.Example.com/blog/"`` -> ``("docs.example.com", "/blog")``; None if empty."""
    if not isinstance(entry, str):
        return None
    entry = entry.strip().lower()
    if "://" in entry:
        entry = entry.split("://", 1)[1]
    host, _, path = entry.partition("/")
    host = host.split("@")[-1].split(":")[0].strip(".")
    if host.startswith("*."):
        host = host[2:]
    if not host:
        return None
    return host, ("/" + path).rstrip("/") if path else ""


def matches(url: str, domain: tuple[str, str]) -> bool:
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    want_host, want_path = domain
    if host != want_host and not host.endswith("." + want_host):
        return False
    if not want_path:
        return True
    path = urlsplit(url).path.rstrip("/")
    return path == want_path or path.startswith(want_path + "/")


def page_age(published) -> str | None:
    """SearXNG's publishedDate (ISO) as Anthropic-style text, e.g. ``"May 1, 2024"``."""
    if not isinstance(published, str) or not published.strip():
        return None
    try:
        when = datetime.fromisoformat(published.strip())
    except ValueError:
        return None
    return f"{when:%B} {when.day}, {when.year}"


def shape(raw: list, *, allowed=(), blocked=(), max_results: int = 8) -> tuple[list[dict], int]:
    """(shaped results, how many raw results had a usable http(s) URL before filtering).

    The second number lets the caller tell "nothing matched" from "every engine failed".
    """
    allow = [d for d in map(normalize_domain, allowed or ()) if d]
    block = [d for d in map(normalize_domain, blocked or ()) if d]
    out, seen, usable = [], set(), 0
    for item in raw if isinstance(raw, list) else ():
        if not isinstance(item, dict):
            continue
        url = http_url(item.get("url"))
        if url is None:
            continue
        usable += 1
        key = page_key(url)
        if key in seen:
            continue
        if allow and not any(matches(url, d) for d in allow):
            continue
        if any(matches(url, d) for d in block):
            continue
        seen.add(key)
        if len(out) < max_results:
            out.append({
                "url": url,
                "title": clean_text(item.get("title"), TITLE_CHARS) or urlsplit(url).hostname,
                "snippet": clean_text(item.get("content"), SNIPPET_CHARS),
                "page_age": page_age(item.get("publishedDate")),
            })
    return out, usable
