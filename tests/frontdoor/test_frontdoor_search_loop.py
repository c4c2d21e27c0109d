"""The model decides to search (search_loop.py), through real waitress, the real bus and a
scripted engine service (search_loop_kit.py); the official SDK and sse_validator read what
comes back."""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import threading

import anthropic
import pytest

from anyclaude.config import ModelConfig
from anyclaude.services.frontdoor import search_loop

from .fd_fake_engine import fake_tokens
from .fd_helpers import Door, make_settings, wait_for
from .search_loop_kit import MODEL, WEATHER, WEB_SEARCH, ask, raw_stream, rounds_of
from .search_loop_kit import client, door, engine, fresh_calls, searches  # noqa: F401 (fixtures)


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
