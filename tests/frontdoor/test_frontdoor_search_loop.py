"""The model decides to search (search_loop.py), through real waitress, the real bus and a
scripted engine service; the official SDK and sse_validator read what comes back.

The scripted engine plays one step per engine call, chosen by how many tool-result turns
the conversation has; the plan is the first user message: ``plan: STEP | STEP | ...``.
Continuations with an optimizer use the real optimizer service on the bus, counting with
the scripted engine (its counts are fake_tokens).
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import threading

import anthropic
import httpx2 as httpx
import msgpack
import pytest

from anyclaude import bus, errors
from anyclaude.config import ModelConfig
from anyclaude.messages import Accepted, Delta, Done, Error, Results
from anyclaude.services.engine import search_blocks
from anyclaude.services.frontdoor import search_loop
from anyclaude.services.frontdoor.gateway import BusOptimizer
from anyclaude.services.frontdoor.websearch import result_block, results_as_tool_text
from anyclaude.services.optimizer.service import OptimizerService

from .fd_fake_engine import PROMPT_TOO_LONG, FakeEngine, fake_tokens
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
BIG = Results(results=[{"url": f"https://big.example/{n}", "title": f"Big {n}",
                        "snippet": f"snippet {n} " + "words " * 80, "page_age": None}
                       for n in range(40)])


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
    but reports N output tokens), ``toolong`` (the engine's prompt_too_long), ``hang``."""

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
        elif name == "toolong":
            call.send(Error("prompt_too_long", PROMPT_TOO_LONG))
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
        return BIG if query == "big" else RESULTS


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


# --- continuations through the optimizer ----------------------------------------------------

@pytest.fixture
def optimized(engine, searches):
    """factory(window, **routes) -> (door, service): a door whose optimizer is the real
    optimizer service on the bus, for the scripted model with that context window."""
    made = []

    def factory(window: int, **routes):
        base = make_settings()
        settings = dataclasses.replace(base, models={**base.models, MODEL: ModelConfig(
            context_window=window, max_output_tokens=4096)},
            routes=dataclasses.replace(base.routes, **routes))
        service = OptimizerService(settings)
        thread = threading.Thread(target=service.run, daemon=True)
        thread.start()
        assert wait_for(lambda: bus.socket_path("optimizer").exists())
        door = Door(settings, optimizer=BusOptimizer(settings), search=lambda: searches)
        made.append((door, service, thread))
        return door, service
    yield factory
    for door, service, thread in made:
        door.close()
        service.service.stop()
        thread.join(5)


def first_tokens(door, plan: str) -> int:
    """The tokens of the first engine call of ``ask(plan)`` (the optimizer leaves it whole)."""
    body = ask(plan)
    return door.client().messages.count_tokens(model=MODEL, tools=body["tools"],
                                               messages=body["messages"]).input_tokens


def appended(message: dict, rounds: int) -> list[dict]:
    """The messages the loop appends after each search of ``message``, as the client saw it
    (text, server_tool_use, web_search_tool_result, ..., final text)."""
    out, content = [], message["content"]
    text = None
    for block in content:
        if block["type"] == "text":
            text = block["text"]
        elif block["type"] == "server_tool_use":
            turn = [{"type": "text", "text": text}] if text else []
            out.append({"role": "assistant", "content": [*turn, {
                "type": "tool_use", "id": block["id"], "name": "web_search",
                "input": block["input"]}]})
            text = None
        elif block["type"] == "web_search_tool_result":
            out.append({"role": "user", "content": [{
                "type": "tool_result", "tool_use_id": block["tool_use_id"],
                "content": [{"type": "text", "text": search_blocks.result_text(
                    block, out[-1]["content"][-1]["input"]["query"])}],
                "is_error": False}]})
    assert len(out) == 2 * rounds
    return out


OLD_CALL = [
    {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_old", "name": "get_weather",
                                       "input": {"city": "Paris"}}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_old",
                                  "content": "sunny and warm. " * 1500}]},
    {"role": "assistant", "content": "It is sunny."},
    {"role": "user", "content": "now search"}]


@pytest.mark.parametrize("window, history", [(32768, []), (3000, OLD_CALL)],
                         ids=["nothing-cut", "history-cut-by-the-session-plan"])
def test_a_continuation_that_fits_is_the_request_plus_appended_messages(
        optimized, engine, window, history):
    door, service = optimized(window)
    body = ask("unused | search one | search two | echo", tools=[WEB_SEARCH, WEATHER])
    body["messages"] += history
    if not history:   # the plan's step is the number of tool results so far
        body["messages"][0]["content"] = "plan: search one | search two | echo"
    rid, result = raw_stream(door, body)
    message = result["message"]
    assert message["stop_reason"] == "end_turn"
    first, second, third = rounds_of(engine, rid)
    added = appended(message, 2)
    assert service.optimizer.stats["requests"] == 3        # every engine call was fitted
    shortened = "cut by anyclaude" in json.dumps(first["messages"])
    assert shortened == bool(history)                      # the first call's plan cut history
    # byte for byte: the request the engine ran, messages appended, max_tokens what is left
    expected = {**first, "max_tokens": 198, "messages": [*first["messages"], *added[:2]]}
    assert msgpack.packb(second) == msgpack.packb(expected)
    expected = {**second, "max_tokens": 196, "messages": [*second["messages"], *added[2:]]}
    assert msgpack.packb(third) == msgpack.packb(expected)
    # the client's next turn sends the blocks back: the session plan still applies to it
    body["messages"] += [{"role": "assistant", "content": message["content"]},
                         {"role": "user", "content": "thanks"}]
    rid, _ = raw_stream(door, body)
    after = rounds_of(engine, rid)[0]
    assert after["messages"][:len(first["messages"])] == first["messages"]
    assert service.optimizer.stats["cuts"] == 0


def test_results_too_big_for_the_window_are_cut_and_the_message_ends_normally(
        optimized, engine, door):
    # room for the first call and some 600 tokens more: not for 12K characters of results
    small, service = optimized(first_tokens(door, "search big | echo") + 200 + 600)
    rid, result = raw_stream(small, ask("search big | echo"))     # the SSE grammar holds
    assert [kind for kind, _ in result["events"]][-2:] == ["message_delta", "message_stop"]
    message = result["message"]
    assert [b["type"] for b in message["content"]] == [
        "text", "server_tool_use", "web_search_tool_result", "text"]
    assert message["stop_reason"] == "end_turn"
    assert len(message["content"][2]["content"]) == 40             # the client gets them all
    first, second = rounds_of(engine, rid)
    added = appended(message, 1)
    assert second["messages"][:2] == [*first["messages"], added[0]]   # the prefix stays
    full = added[1]["content"][0]["content"][0]["text"]
    assert len(full) < 12_200 and full.endswith("cut by anyclaude]\n")   # capped
    seen = second["messages"][2]["content"][0]["content"][0]["text"]
    assert message["content"][3]["text"] == seen                   # the model read ...
    assert len(seen) < len(full) // 2 and "cut by anyclaude …]" in seen   # ... a shortened one
    assert service.optimizer.stats["prompt_too_long"] == 0
    with small.client().messages.stream(**ask("search big | echo")) as events:
        parsed = events.get_final_message()                         # the SDK reads it
    assert [b.type for b in parsed.content] == [
        "text", "server_tool_use", "web_search_tool_result", "text"]
    assert parsed.stop_reason == "end_turn" and "cut by anyclaude …]" in parsed.content[3].text


def test_when_nothing_fits_the_message_ends_with_an_explanation(optimized, engine, door):
    # max_tokens 20: the first call fits with 8 tokens to spare, the continuation cannot
    small, service = optimized(first_tokens(door, "search q | echo") + 20 + 8)
    body = {**ask("search q | echo", max_tokens=20), "stream": True}
    rid, result = raw_stream(small, body)
    message = result["message"]
    assert [b["type"] for b in message["content"]] == [
        "text", "server_tool_use", "web_search_tool_result", "text"]
    assert message["content"][2]["content"][0]["url"] == "https://example.com/a"
    note = message["content"][3]["text"]
    assert note.startswith("[anyclaude: the web search results did not fit")
    assert re.search(r"prompt is too long: \d+ tokens > \d+ maximum", note)
    assert message["stop_reason"] == "end_turn"
    assert len(rounds_of(engine, rid)) == 1                        # no engine call failed
    assert service.optimizer.stats["prompt_too_long"] == 1
    with small.client().messages.stream(**ask("search q | echo", max_tokens=20)) as events:
        parsed = events.get_final_message()
    assert parsed.content[3].text.startswith("[anyclaude: the web search results did not fit")
    assert parsed.stop_reason == "end_turn"


def test_the_engine_saying_too_long_on_a_continuation_ends_the_message(door, engine, searches):
    rid, result = raw_stream(door, ask("search q | toolong"))
    message = result["message"]
    assert [b["type"] for b in message["content"]] == [
        "text", "server_tool_use", "web_search_tool_result", "text"]
    assert PROMPT_TOO_LONG in message["content"][3]["text"]
    assert message["stop_reason"] == "end_turn"
    assert len(rounds_of(engine, rid)) == 2 and searches.calls == ["q"]
    with httpx.Client(base_url=door.url, timeout=30) as http:     # the first call: a 400
        response = http.post("/v1/messages", json={**ask("toolong"), "stream": True})
    assert response.status_code == 400 and PROMPT_TOO_LONG in response.text


def test_a_continuation_the_optimizer_moves_to_the_long_context_model_runs_there(
        optimized, engine, fake_engines, door):
    small, _ = optimized(first_tokens(door, "search big | echo") + 200 + 600,
                         default=MODEL, long_context="local-main")
    rid, result = raw_stream(small, {**ask("search big | echo"), "model": "claude-sonnet-4-6"})
    message = result["message"]
    assert [b["type"] for b in message["content"]] == [
        "text", "server_tool_use", "web_search_tool_result", "text"]
    assert message["content"][3]["text"] == "got the tool result"   # the fake main engine
    assert message["stop_reason"] == "end_turn"
    assert len(rounds_of(engine, rid)) == 1
    moved = fake_engines["local-main"].request_of(f"{rid}-s1")
    assert moved["model"] == "local-main"
    assert "cut by anyclaude …]" not in json.dumps(moved["messages"])   # room enough there


class OptimizesOnce:
    """Passes the first request through, then fails like ``error``."""

    def __init__(self, error: Exception):
        self.error, self.calls = error, 0

    def optimize(self, request: dict) -> dict:
        self.calls += 1
        if self.calls > 1:
            raise self.error
        return request


@pytest.mark.parametrize("error, why", [
    (errors.Overloaded("the optimizer service is not available"),
     "the optimizer service is not available"),
    (RuntimeError("boom"), "RuntimeError: boom")])
def test_a_failing_optimizer_ends_the_message_cleanly(engine, fake_engines, searches, error,
                                                      why):
    base = make_settings()
    settings = dataclasses.replace(base, models={**base.models, MODEL: ModelConfig()})
    optimizer = OptimizesOnce(error)
    door = Door(settings, optimizer=optimizer, search=lambda: searches)
    try:
        rid, result = raw_stream(door, ask("search q | echo"))
    finally:
        door.close()
    message = result["message"]
    assert [b["type"] for b in message["content"]] == [
        "text", "server_tool_use", "web_search_tool_result", "text"]
    assert message["content"][-1]["text"] == (
        f"[anyclaude: the model could not go on after the web search ({why}).]")
    assert message["stop_reason"] == "end_turn" and optimizer.calls == 2
    assert len(rounds_of(engine, rid)) == 1


def test_one_search_adds_at_most_about_max_result_chars():
    limit = search_blocks.MAX_RESULT_CHARS
    text = search_blocks.result_text(result_block("srvtoolu_x", BIG), "big")
    whole = results_as_tool_text(BIG, "big")
    assert len(whole) > limit
    head, _, note = text.rpartition("[… ")
    assert whole.startswith(head) and head.endswith("\n\n")     # whole results only
    assert limit // 2 < len(head) <= limit
    assert note == f"{len(whole) - len(head):,} more characters of results cut by anyclaude]\n"
    small = search_blocks.result_text(result_block("srvtoolu_y", RESULTS), "q")
    assert small == results_as_tool_text(RESULTS, "q")            # short text is untouched
    # one result too big on its own (a foreign block: no snippet, a huge title) is cut hard
    foreign = {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_z", "content": [
        {"type": "web_search_result", "url": "https://x.example/", "title": "t" * 30_000,
         "encrypted_content": "opaque"}]}
    text = search_blocks.result_text(foreign, "q")
    assert text.startswith('Web search results for "q":\n\n1. ttt')
    assert len(text) < limit + 100 and text.endswith("cut by anyclaude]\n")
