"""The front door's web_search module, checked by the official anthropic SDK.

A tiny HTTP server plays the front door for Claude Code's dedicated search call: it uses
only the module's functions, and the SDK (non-streaming and streaming) parses what it sends.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import pytest

from anyclaude import bus, errors
from anyclaude.messages import Results
from anyclaude.services.frontdoor import websearch as ws

TOOL = {"type": "web_search_20250305", "name": "web_search", "max_uses": 8}
SYSTEM = "You are an assistant for performing a web search tool use"
RESULTS = Results(results=[
    {"url": "https://docs.python.org/3/", "title": "Python docs", "snippet": "The official docs.",
     "page_age": "May 1, 2024"},
    {"url": "https://example.com/a", "title": "Example", "snippet": "Alpha", "page_age": None},
])


class FakeSearch:
    def __init__(self, results=RESULTS, raises=None):
        self.results, self.raises, self.calls = results, raises, []

    def __call__(self, query, allowed, blocked):
        self.calls.append((query, allowed, blocked))
        if self.raises:
            raise self.raises
        return self.results


class MiniFrontDoor:
    """POST /v1/messages answered with nothing but services/frontdoor/websearch.py."""

    def __init__(self):
        self.search = FakeSearch()
        door = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                tool = ws.find_tool(body.get("tools"))
                query = ws.dedicated_query(body) if tool else None
                assert query is not None, body
                reply = ws.run_search(query, tool, door.search)
                self.send_response(200)
                self.send_header("request-id", "req_test")
                if body.get("stream"):
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for event in ws.sse_events(reply, model=body["model"], message_id="msg_1"):
                        self.wfile.write(event.encode())
                        self.wfile.flush()
                    return
                data = json.dumps(ws.message_body(reply, model=body["model"],
                                                  message_id="msg_1")).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{self.server.server_address[1]}",
                                          api_key="sk-local", max_retries=0)

    def ask(self, query, stream, tool=TOOL):
        # the SDK refuses non-streaming calls with a large max_tokens; Claude Code streams
        kwargs = dict(model="local-main", max_tokens=32000 if stream else 1024,
                      system=SYSTEM, tools=[tool],
                      messages=[{"role": "user",
                                 "content": f"Perform a web search for the query: {query}"}])
        if not stream:
            return self.client.messages.create(**kwargs)
        with self.client.messages.stream(**kwargs) as events:
            self.last_events = [e.type for e in events]
            return events.get_final_message()


@pytest.fixture(scope="module")
def door():
    d = MiniFrontDoor()
    yield d
    d.server.shutdown()
    d.server.server_close()


@pytest.fixture(autouse=True)
def fresh_search(door):
    door.search = FakeSearch()


@pytest.mark.parametrize("stream", [False, True])
def test_results_reply_parses_with_the_sdk(door, stream):
    msg = door.ask("python docs", stream)
    assert isinstance(msg, anthropic.types.Message)
    assert [b.type for b in msg.content] == ["server_tool_use", "web_search_tool_result", "text"]
    use, result, text = msg.content
    assert use.id.startswith("srvtoolu_") and use.name == "web_search"
    assert use.input == {"query": "python docs"}
    assert result.tool_use_id == use.id
    assert [(r.url, r.title, r.page_age) for r in result.content] == [
        ("https://docs.python.org/3/", "Python docs", "May 1, 2024"),
        ("https://example.com/a", "Example", None)]
    assert ws.decode_encrypted_content(result.content[0].encrypted_content)["snippet"] == \
        "The official docs."
    assert "The official docs." in text.text and "https://example.com/a" in text.text
    assert msg.usage.server_tool_use.web_search_requests == 1
    assert msg.stop_reason == "end_turn" and msg.model == "local-main"
    assert door.search.calls == [("python docs", [], [])]


def test_stream_event_order(door):
    door.ask("python docs", stream=True)
    kinds = [k for k in door.last_events if k not in ("input_json", "text")]  # SDK helper events
    assert kinds == ["message_start",
                     "content_block_start", "content_block_delta", "content_block_stop",
                     "content_block_start", "content_block_stop",
                     "content_block_start", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("code", ws.ERROR_CODES)
def test_every_error_code_is_an_error_object_in_a_200_reply(door, code, stream):
    door.search = FakeSearch(Results(error_code=code, message="because"))
    msg = door.ask("python docs", stream)  # the SDK raises on any non-2xx status
    result = msg.content[1]
    assert result.content.type == "web_search_tool_result_error"
    assert result.content.error_code == code
    assert f"Web search error: {code}" in msg.content[2].text
    assert msg.usage.server_tool_use.web_search_requests == 0


@pytest.mark.parametrize("stream", [False, True])
def test_max_uses_and_query_too_long_are_enforced_without_searching(door, stream):
    msg = door.ask("python docs", stream, tool={**TOOL, "max_uses": 0})
    assert msg.content[1].content.error_code == "max_uses_exceeded"
    msg = door.ask("x" * 600, stream)
    assert msg.content[1].content.error_code == "query_too_long"
    assert msg.content[0].input == {"query": "x" * 600}
    assert door.search.calls == []


def test_domain_lists_reach_the_search(door):
    door.ask("python docs", False, tool={**TOOL, "allowed_domains": ["python.org"]})
    assert door.search.calls == [("python docs", ["python.org"], [])]


# --- the pure functions ------------------------------------------------------------------

def test_find_tool():
    assert ws.find_tool(None) is None
    assert ws.find_tool([{"name": "Bash", "input_schema": {}}]) is None
    tool = ws.find_tool([{"name": "Bash", "input_schema": {}},
                         {"type": "web_search_20260209", "name": "web_search", "max_uses": 3,
                          "blocked_domains": ["a.com", 7]}])
    assert tool.max_uses == 3 and tool.blocked_domains == ("a.com",) and tool.allowed_domains == ()
    assert ws.find_tool([{"type": "web_search_20250305", "max_uses": True}]).max_uses is None


@pytest.mark.parametrize("messages, query", [
    ([{"role": "user", "content": "Perform a web search for the query: rust async"}], "rust async"),
    ([{"role": "user", "content": [{"type": "text", "text": "<system-reminder>x</system-reminder>"},
                                   {"type": "text", "text": "Perform a web search for the query: a b\n",
                                    "cache_control": {"type": "ephemeral"}}]}], "a b"),
    ([{"role": "system", "content": "note"},
      {"role": "user", "content": "Perform a web search for the query: q"}], "q"),
    ([{"role": "user", "content": "Perform a web search for the query:"}], ""),
    ([{"role": "user", "content": "<system-reminder>r</system-reminder>\n"
                                  "Perform a web search for the query: after reminder "}],
     "after reminder"),
    ([{"role": "user", "content": "Please Perform a web search for the query: x"}], None),
    ([{"role": "user", "content": "search the web for rust"}], None),
    ([{"role": "user", "content": "Perform a web search for the query: a"},
      {"role": "assistant", "content": "ok"}], None),
    ([], None),
])
def test_dedicated_query(messages, query):
    assert ws.dedicated_query({"messages": messages}) == query


def test_empty_query_is_invalid_tool_input_without_searching():
    search = FakeSearch()
    reply = ws.run_search("  ", ws.WebSearchTool(type="web_search_20250305"), search)
    assert reply.error_code == "invalid_tool_input" and search.calls == []


def test_uses_so_far_counts_against_max_uses():
    tool = ws.WebSearchTool(type="web_search_20250305", max_uses=2)
    assert ws.run_search("q", tool, FakeSearch(), uses_so_far=1).error_code is None
    assert ws.run_search("q", tool, FakeSearch(), uses_so_far=2).error_code == "max_uses_exceeded"


@pytest.mark.parametrize("failure", [errors.Timeout("websearch did not answer"),
                                     errors.ServiceUnavailable("websearch is not running"),
                                     RuntimeError("boom")])
def test_a_failing_search_callable_becomes_unavailable(failure):
    reply = ws.run_search("q", ws.WebSearchTool(type="web_search_20250305"),
                          FakeSearch(raises=failure))
    assert reply.error_code == "unavailable" and reply.web_search_requests == 0
    assert reply.blocks[1]["content"] == {"type": "web_search_tool_result_error",
                                          "error_code": "unavailable"}


def test_unknown_error_codes_from_the_service_become_unavailable():
    reply = ws.run_search("q", ws.WebSearchTool(type="web_search_20250305"),
                          FakeSearch(Results(error_code="weird", message="m")))
    assert reply.error_code == "unavailable"


def test_sse_events_are_well_formed():
    reply = ws.run_search("quote \" and ünïcode", ws.WebSearchTool(type="web_search_20250305"),
                          FakeSearch())
    events = ws.sse_events(reply, model="m", message_id="msg_x", input_tokens=5)
    parsed = []
    for event in events:
        head, data, blank = event.split("\n", 2)
        assert head.startswith("event: ") and data.startswith("data: ") and blank == "\n"
        body = json.loads(data[len("data: "):])
        assert body["type"] == head[len("event: "):]
        parsed.append(body)
        event.encode("ascii")  # nothing can fail to encode
    starts = [p for p in parsed if p["type"] == "content_block_start"]
    assert [p["index"] for p in starts] == [0, 1, 2]
    assert starts[0]["content_block"]["input"] == {}
    delta = next(p for p in parsed if p["type"] == "content_block_delta" and p["index"] == 0)
    assert json.loads(delta["delta"]["partial_json"]) == {"query": "quote \" and ünïcode"}
    assert not [p for p in parsed if p["type"] == "content_block_delta" and p["index"] == 1]
    assert parsed[0]["message"]["usage"]["input_tokens"] == 5 and parsed[1]["type"] == "ping"
    assert parsed[-2]["usage"]["server_tool_use"]["web_search_requests"] == 1


def test_results_as_tool_text():
    text = ws.results_as_tool_text(RESULTS, "python docs")
    assert text.startswith('Web search results for "python docs":')
    assert "1. Python docs" in text and "URL: https://docs.python.org/3/" in text
    assert "Published: May 1, 2024" in text and "Alpha" in text
    assert ws.results_as_tool_text(Results(), "q") == 'No web results found for "q".'
    assert ws.results_as_tool_text(Results(error_code="unavailable", message="off")) == \
        "Web search error: unavailable (off)"


def test_foreign_encrypted_content_is_not_decoded():
    assert ws.decode_encrypted_content("EqgfCioIARgBIiQ3YTAw") is None
    assert ws.decode_encrypted_content(12) is None


# --- end to end: the module over the real websearch service --------------------------------

@pytest.mark.parametrize("stream", [False, True])
def test_through_the_real_service(door, service, stream):
    def real_search(query, allowed, blocked):
        client = bus.Client("websearch")  # one client per thread, as in the front door
        try:
            return ws.bus_search(client, timeout_s=5)(query, allowed, blocked)
        finally:
            client.close()

    door.search = real_search
    msg = door.ask("python docs", stream)
    assert [r.url for r in msg.content[1].content][0] == "https://docs.python.org/3/"
    assert "The official docs." in msg.content[2].text
    msg = door.ask("limited", stream)
    assert msg.content[1].content.error_code == "too_many_requests"


# --- strict validation (the SDK's own parsing is lenient: it constructs without checking) ---

@pytest.mark.parametrize("code", [None, *ws.ERROR_CODES])
def test_bodies_and_events_validate_strictly_against_sdk_types(code):
    import pydantic
    results = RESULTS if code is None else Results(error_code=code, message="m")
    reply = ws.run_search("q", ws.WebSearchTool(type="web_search_20250305"), FakeSearch(results))
    msg = anthropic.types.Message.model_validate(ws.message_body(reply, model="m", message_id="msg_1"))
    assert msg.usage.server_tool_use.web_search_requests == (1 if code is None else 0)
    content = msg.content[1].content
    if code is None:
        assert isinstance(content[0], anthropic.types.WebSearchResultBlock)
    else:
        assert isinstance(content, anthropic.types.WebSearchToolResultError) and content.error_code == code
    adapter = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)
    ping = 0
    for event in ws.sse_events(reply, model="m", message_id="msg_1"):
        data = json.loads(event.split("\n")[1][len("data: "):])
        if data["type"] == "ping":
            ping += 1
            continue
        assert adapter.validate_python(data).type == data["type"]
    assert ping == 1
