"""The model decides to search (search_loop.py), through real waitress, the real bus and a
scripted engine service; the official SDK and sse_validator read what comes back.

The scripted engine plays one step per engine call, chosen by how many tool-result turns
the conversation has; the plan is the first user message: ``plan: STEP | STEP | ...``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import threading

import anthropic
import httpx2 as httpx
import pytest

from anyclaude import errors
from anyclaude.config import ModelConfig
from anyclaude.messages import Accepted, Delta, Done, Results
from anyclaude.services.frontdoor import search_loop

from .fd_fake_engine import FakeEngine, fake_tokens
from .fd_helpers import Door, make_settings, wait_for
from .sse_validator import validate

MODEL = "local-search"
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search"}
WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}
RESULTS = Results(results=[
    {"url": "https://example.com/a", "title": "Example A", "snippet": "Alpha snippet",
     "page_age": "May 1, 2024"},
    {"url": "https://other.org/b", "title": "Other B", "snippet": "Beta snippet",
     "page_age": None}])


def tool_call(name: str, args: dict, n: int) -> list[dict]:
    raw = json.dumps(args)
    half = len(raw) // 2
    return [{"type": "tool_start", "id": f"toolu_engine{n}", "name": name},
            {"type": "tool_args", "json": raw[:half]}, {"type": "tool_args", "json": raw[half:]},
            {"type": "tool_end"}]


class ScriptedEngine(FakeEngine):
    """Steps: ``search Q`` (text, then a web_search call), ``searches Q1;Q2`` (two calls),
    ``searchtool Q`` (a search and a get_weather call), ``tool`` (text and a get_weather
    call), ``echo`` (the last tool result's text), ``text WORDS``, ``spend N Q`` (like search
    but reports N output tokens), ``hang``."""

    def _script(self, call, cancel):
        request = call.message.request
        plan = request["messages"][0]["content"][0]["text"].removeprefix("plan:").split("|")
        rounds = sum(1 for m in request["messages"] if m["role"] == "user"
                     and any(b["type"] == "tool_result" for b in m["content"]))
        name, _, arg = plan[min(rounds, len(plan) - 1)].strip().partition(" ")
        call.send(Accepted(0))
        spent, stop = 2, "tool_use"
        if name == "search":
            events = [{"type": "text", "text": "Searching. "},
                      *tool_call("web_search", {"query": arg}, 1)]
        elif name == "searches":
            events = [c for i, q in enumerate(arg.split(";"))
                      for c in tool_call("web_search", {"query": q}, i)]
        elif name == "searchtool":
            events = [*tool_call("web_search", {"query": arg}, 1),
                      *tool_call("get_weather", {"city": "Paris"}, 2)]
        elif name == "tool":
            events = [{"type": "text", "text": "Now the weather."},
                      *tool_call("get_weather", {"city": "Paris"}, 3)]
        elif name == "spend":
            count, _, query = arg.partition(" ")
            spent, events = int(count), tool_call("web_search", {"query": query}, 4)
        elif name == "hang":
            cancel.wait(30)
            return
        else:
            stop = "end_turn"
            last = request["messages"][-1]["content"]
            text = last[0]["content"][0]["text"] if name == "echo" else arg
            events = [{"type": "text", "text": text}]
        for event in events:
            call.send(Delta([event]))
        call.send(Done(stop, None, {"input_tokens": fake_tokens(request), "output_tokens": spent,
                                    "cache_read_input_tokens": 7,
                                    "cache_creation_input_tokens": 3}))


class FakeSearch:
    def __init__(self):
        self.calls: list[str] = []

    def __call__(self, query, allowed, blocked):
        self.calls.append(query)
        if query == "down":
            raise errors.ServiceUnavailable("websearch is not running")
        return RESULTS


@pytest.fixture(scope="module")
def engine(run_dir):
    started = ScriptedEngine(MODEL).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def searches():
    return FakeSearch()


@pytest.fixture(scope="module")
def door(engine, fake_engines, searches):
    base = make_settings()
    settings = dataclasses.replace(base, models={**base.models, MODEL: ModelConfig(
        context_window=32768, max_output_tokens=4096)})
    d = Door(settings, search=lambda: searches)
    yield d
    d.close()


@pytest.fixture
def client(door):
    return door.client()


@pytest.fixture(autouse=True)
def fresh_calls(searches):
    searches.calls.clear()


def ask(plan: str, *, tools=None, max_tokens=200) -> dict:
    return {"model": MODEL, "max_tokens": max_tokens, "tools": tools or [WEB_SEARCH],
            "messages": [{"role": "user", "content": f"plan: {plan}"}]}


def raw_stream(door, body) -> tuple[str, dict]:
    with httpx.Client(base_url=door.url, timeout=30) as http:
        response = http.post("/v1/messages", json={**body, "stream": True})
        assert response.status_code == 200, response.text
        return response.headers["request-id"], validate(response.content)


def rounds_of(engine, rid: str) -> list[dict]:
    """The requests of one message's engine calls, in order."""
    ids = [rid.encode()] + [f"{rid}-s{n}".encode() for n in range(1, 20)]
    found = dict(engine.generated)
    return [found[i] for i in ids if i in found]


# --- the loop -------------------------------------------------------------------------------

def test_stream_searches_then_continues_in_the_same_message(door, client, engine, searches):
    rid, result = raw_stream(door, ask("search python docs | echo"))
    message = result["message"]
    assert [b["type"] for b in message["content"]] == [
        "text", "server_tool_use", "web_search_tool_result", "text"]
    text, use, found, answer = message["content"]
    assert text["text"] == "Searching. "
    assert use["id"].startswith("srvtoolu_") and use["name"] == "web_search"
    assert use["input"] == {"query": "python docs"}
    assert found["tool_use_id"] == use["id"]
    assert [r["url"] for r in found["content"]] == ["https://example.com/a", "https://other.org/b"]
    assert "Alpha snippet" in answer["text"] and "https://other.org/b" in answer["text"]
    kinds = [kind for kind, _ in result["events"]]
    assert kinds.count("message_start") == kinds.count("message_delta") == 1
    starts = [data["index"] for kind, data in result["events"] if kind == "content_block_start"]
    assert starts == [0, 1, 2, 3]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"]["server_tool_use"]["web_search_requests"] == 1
    assert searches.calls == ["python docs"]
    first, second = rounds_of(engine, rid)
    # the continuation is the request the engine ran, messages appended: its prefix is stable
    assert second["messages"][:1] == first["messages"]
    assert {k: v for k, v in second.items() if k not in ("messages", "max_tokens")} == \
        {k: v for k, v in first.items() if k not in ("messages", "max_tokens")}
    assert first["tools"][-1] == search_loop.offered_tool("web_search")
    assert second["messages"][1] == {"role": "assistant", "content": [
        {"type": "text", "text": "Searching. "},
        {"type": "tool_use", "id": use["id"], "name": "web_search",
         "input": {"query": "python docs"}}]}
    tool_result = second["messages"][2]["content"][0]
    assert tool_result["tool_use_id"] == use["id"]
    assert tool_result["content"][0]["text"] == answer["text"]
    assert message["usage"]["input_tokens"] == fake_tokens(first) + fake_tokens(second)
    assert message["usage"]["output_tokens"] == 4
    assert message["usage"]["cache_read_input_tokens"] == 14


@pytest.mark.parametrize("stream", [False, True])
def test_the_sdk_parses_the_reply(client, stream):
    kwargs = dict(model=MODEL, max_tokens=200, tools=[WEB_SEARCH],
                  messages=[{"role": "user", "content": "plan: search python docs | echo"}])
    if stream:
        with client.messages.stream(**kwargs) as events:
            message = events.get_final_message()
    else:
        raw = client.messages.with_raw_response.create(**kwargs)
        message = anthropic.types.Message.model_validate(json.loads(raw.http_response.text))
    assert [b.type for b in message.content] == [
        "text", "server_tool_use", "web_search_tool_result", "text"]
    assert isinstance(message.content[2].content[0], anthropic.types.WebSearchResultBlock)
    assert message.content[1].input == {"query": "python docs"}
    assert message.usage.server_tool_use.web_search_requests == 1
    assert message.stop_reason == "end_turn"


def test_the_sdk_sends_the_blocks_back_on_the_next_turn(client, engine):
    first = client.messages.create(model=MODEL, max_tokens=200, tools=[WEB_SEARCH],
                                   messages=[{"role": "user", "content": "plan: search q1 | echo"}])
    again = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=200, tools=[WEB_SEARCH],
        messages=[{"role": "user", "content": "plan: text thanks"},
                  {"role": "assistant", "content": first.content},
                  {"role": "user", "content": "and now?"}])
    assert again.parse().content[0].text == "thanks"
    sent = engine.request_of(again.headers["request-id"])["messages"][1]["content"]
    assert [b["type"] for b in sent] == [
        "text", "server_tool_use", "web_search_tool_result", "text"]


def test_max_uses_answers_later_searches_with_an_error(client, engine, searches):
    tool = {**WEB_SEARCH, "max_uses": 1}
    message = client.messages.create(**ask("search one | search two | echo", tools=[tool]))
    kinds = [b.type for b in message.content]
    assert kinds == ["text", "server_tool_use", "web_search_tool_result",
                     "text", "server_tool_use", "web_search_tool_result", "text"]
    assert message.content[5].content.error_code == "max_uses_exceeded"
    assert message.content[6].text == "Web search error: max_uses_exceeded"  # the model read it
    assert searches.calls == ["one"]
    assert message.usage.server_tool_use.web_search_requests == 1


def test_two_searches_in_one_engine_call(client, searches):
    message = client.messages.create(**ask("searches alpha;beta | text done"))
    assert [b.type for b in message.content] == [
        "server_tool_use", "web_search_tool_result", "server_tool_use", "web_search_tool_result",
        "text"]
    assert [message.content[0].input, message.content[2].input] == [{"query": "alpha"},
                                                                    {"query": "beta"}]
    assert searches.calls == ["alpha", "beta"]
    assert message.usage.server_tool_use.web_search_requests == 2


def test_query_too_long_is_answered_without_searching(door, searches):
    _, result = raw_stream(door, ask(f"search {'x' * 600} | echo"))
    content = result["message"]["content"]
    assert content[2]["content"] == {"type": "web_search_tool_result_error",
                                     "error_code": "query_too_long"}
    assert content[3]["text"] == "Web search error: query_too_long"
    assert searches.calls == []
    assert result["message"]["usage"]["server_tool_use"]["web_search_requests"] == 0


def test_a_failing_search_is_an_error_result_and_the_model_goes_on(door, searches):
    _, result = raw_stream(door, ask("search down | echo"))
    content = result["message"]["content"]
    assert content[2]["content"]["error_code"] == "unavailable"
    assert content[3]["text"] == "Web search error: unavailable"
    assert result["message"]["stop_reason"] == "end_turn"
    assert searches.calls == ["down"]


def test_without_a_search_service_results_are_unavailable(engine, fake_engines):
    base = make_settings()
    settings = dataclasses.replace(base, models={**base.models, MODEL: ModelConfig()})
    door = Door(settings)     # search=None: web search is not configured
    try:
        _, result = raw_stream(door, ask("search anything | echo"))
    finally:
        door.close()
    assert result["message"]["content"][2]["content"]["error_code"] == "unavailable"


def test_a_client_tool_after_a_search_ends_with_tool_use(client, engine):
    message = client.messages.create(**ask("search q | tool", tools=[WEB_SEARCH, WEATHER]))
    assert [b.type for b in message.content] == [
        "text", "server_tool_use", "web_search_tool_result", "text", "tool_use"]
    call = message.content[4]
    assert call.name == "get_weather" and call.input == {"city": "Paris"}
    assert message.stop_reason == "tool_use"


def test_a_client_tool_in_the_same_engine_call_keeps_the_order(door, engine, searches):
    rid, result = raw_stream(door, ask("searchtool q | echo", tools=[WEB_SEARCH, WEATHER]))
    content = result["message"]["content"]
    assert [b["type"] for b in content] == ["server_tool_use", "web_search_tool_result", "tool_use"]
    assert result["message"]["stop_reason"] == "tool_use"
    assert len(rounds_of(engine, rid)) == 1 and searches.calls == ["q"]


def test_max_tokens_bounds_the_whole_message(door, engine):
    rid, result = raw_stream(door, ask("spend 30 q | echo", max_tokens=40))
    assert [r["max_tokens"] for r in rounds_of(engine, rid)] == [40, 10]
    assert result["message"]["usage"]["output_tokens"] == 32
    rid, result = raw_stream(door, ask("spend 40 q | echo", max_tokens=40))
    assert len(rounds_of(engine, rid)) == 1
    assert [b["type"] for b in result["message"]["content"]] == [
        "server_tool_use", "web_search_tool_result"]
    assert result["message"]["stop_reason"] == "max_tokens"


def test_a_model_that_never_stops_searching_is_paused(door, monkeypatch, searches):
    monkeypatch.setattr(search_loop, "MAX_ROUNDS", 2)
    _, result = raw_stream(door, ask("search again"))
    assert result["message"]["stop_reason"] == "pause_turn"
    assert searches.calls == ["again"] * 3


def test_no_search_means_a_plain_reply_with_count_tokens_equal_to_input(client, engine):
    body = ask("text plain answer")
    raw = client.messages.with_raw_response.create(**body)
    message = raw.parse()
    assert [b.type for b in message.content] == ["text"]
    assert message.usage.server_tool_use.web_search_requests == 0
    counted = client.messages.count_tokens(model=MODEL, tools=body["tools"],
                                           messages=body["messages"])
    request = engine.request_of(raw.headers["request-id"])
    assert counted.input_tokens == message.usage.input_tokens == fake_tokens(request)


def test_a_client_tool_named_like_the_server_tool_is_refused(client):
    clash = {**WEATHER, "name": "web_search"}
    with pytest.raises(anthropic.BadRequestError, match="web_search"):
        client.messages.create(**ask("text x", tools=[clash, WEB_SEARCH]))
    request = {"tools": [clash], "server_tools": [WEB_SEARCH]}
    assert search_loop.offer(request) == (request, None)


def test_client_disconnect_mid_loop_cancels_the_engine(door, engine):
    body = json.dumps({**ask("search q | hang"), "stream": True}).encode()
    sock = socket.create_connection(("127.0.0.1", door.port))
    sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    received = b""
    sock.settimeout(10)
    while b"web_search_tool_result" not in received:
        chunk = sock.recv(4096)
        assert chunk, received
        received += chunk
    rid = re.search(rb"[Rr]equest-[Ii]d: (req_\w+)", received).group(1).decode()
    assert wait_for(lambda: f"{rid}-s1".encode() in dict(engine.generated))
    sock.close()
    assert wait_for(lambda: engine.was_cancelled(f"{rid}-s1"))
    assert wait_for(lambda: len(door.app.inflight) == 0)


def test_concurrent_searching_streams_do_not_mix(door):
    out = {}

    def run(tag):
        out[tag] = raw_stream(door, ask(f"search {tag} | echo"))[1]["message"]

    threads = [threading.Thread(target=run, args=(t,)) for t in ("red", "blue", "green")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for tag, message in out.items():
        assert message["content"][1]["input"] == {"query": tag}
        assert f'"{tag}"' in message["content"][3]["text"]
    assert len(out) == 3
