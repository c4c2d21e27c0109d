"""SearXNG misbehaves (faults rows 15-20), seen through Claude Code's dedicated WebSearch
call on the running system: front door -> websearch service -> the fake SearXNG, whose
answer depends on the query (tests/websearch/searxng_fake.py)."""

from __future__ import annotations

import threading
import time
from http.server import ThreadingHTTPServer

from .harness import wait_for

TOOL = {"type": "web_search_20250305", "name": "web_search", "max_uses": 8}
SYSTEM = "You are an assistant for performing a web search tool use"


def search(system, query: str, tool: dict = TOOL):
    """(result block content, seconds) of one dedicated search call."""
    payload = {"model": "claude-sonnet-4-6", "max_tokens": 1024, "system": SYSTEM,
               "tools": [tool],
               "messages": [{"role": "user", "content": f"Perform a web search for the query: {query}"}]}
    started = time.monotonic()
    reply = system.post(payload, timeout=30)
    took = time.monotonic() - started
    assert reply.status_code == 200, reply.text             # errors travel inside a 200
    blocks = reply.json()["content"]
    assert [b["type"] for b in blocks][:2] == ["server_tool_use", "web_search_tool_result"]
    return blocks[1]["content"], took


def error_code(content) -> str | None:
    return content.get("error_code") if isinstance(content, dict) else None


def healthy_search(system) -> None:
    """A good search: resets the websearch breaker's count of failures in a row."""
    content, _ = search(system, "results")
    assert isinstance(content, list) and content


def test_rows16_to_18_slow_html_and_empty_answers(system):
    # 16: slow or hung -> bounded by search.timeout_s, timeout_limit sent to SearXNG
    content, took = search(system, "slow")
    assert error_code(content) == "unavailable"
    print(f"\n[row16] a hung SearXNG answered `unavailable` after {took:.2f} s (timeout_s 1.0)")
    sent = system.searxng.queries("slow")[-1]["params"]
    assert float(sent["timeout_limit"]) < 1.0 and sent["format"] == "json"
    healthy_search(system)
    # 17: HTML answers
    content, _ = search(system, "forbidden")
    assert error_code(content) == "unavailable"
    log = (system.home / "logs" / "websearch.log").read_text()
    assert "search.formats" in log                           # says how to enable json
    healthy_search(system)
    assert error_code(search(system, "limited")[0]) == "too_many_requests"
    healthy_search(system)
    assert error_code(search(system, "error500")[0]) == "unavailable"
    healthy_search(system)
    # 18: no results because every engine failed is not "nothing found"
    assert error_code(search(system, "empty-unresponsive")[0]) == "unavailable"
    healthy_search(system)
    assert search(system, "empty")[0] == []


def test_row19_odd_results_are_filtered_deduplicated_truncated(system):
    assert [r["url"] for r in search(system, "nullurls")[0]] == ["https://good.example.net/page"]
    assert [r["title"] for r in search(system, "duplicates")[0]] == ["First", "Query"]
    huge = search(system, "huge")[0]
    assert len(huge) == 2 and all(len(r["title"]) <= 1000 for r in huge)
    allowed = search(system, "domains", {**TOOL, "allowed_domains": ["example.com"]})[0]
    assert [r["url"] for r in allowed] == ["https://example.com/1", "https://docs.example.com/2"]


def test_row20_refused_without_calling_searxng(system):
    asked = len(system.searxng.requests)
    long_query = "q" * 600
    assert error_code(search(system, long_query)[0]) == "query_too_long"
    assert error_code(search(system, "results", {**TOOL, "max_uses": 0})[0]) == "max_uses_exceeded"
    assert len(system.searxng.requests) == asked


def test_row15_searxng_down_fast_unavailable_and_breaker_stops_hammering(system):
    fake = system.searxng
    port = fake.port
    handler = fake.server.RequestHandlerClass
    fake.server.shutdown()
    fake.server.server_close()                                 # connection refused from now on
    try:
        times = []
        for _ in range(6):
            content, took = search(system, "results")
            assert error_code(content) == "unavailable"
            times.append(took)
        print(f"\n[row15] SearXNG down: `unavailable` in {max(times):.3f} s at most")
        def searches_tried():        # connections for searches (not the reachability probe)
            return len([e for e in system.guard_entries()
                        if e["port"] == port and e["caller"] != "probe.py"])
        before = searches_tried()
        for _ in range(3):
            assert error_code(search(system, "results")[0]) == "unavailable"
        assert searches_tried() == before                      # the breaker keeps us away
    finally:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        server.daemon_threads = True
        fake.server = server
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    # back: after the breaker's cooldown a trial goes through and search works again
    wait_for(lambda: isinstance(search(system, "results")[0], list), 20, interval=1.0,
             what="search working again after SearXNG came back")
