"""Search-loop continuations go through the optimizer (search_loop.py): a continuation that
fits is the request plus appended messages, one that does not is cut, and one that cannot
fit ends the message cleanly. The real optimizer service on the bus counts with the
scripted engine (search_loop_kit.py; its counts are fake_tokens)."""

from __future__ import annotations

import dataclasses
import json
import re
import threading

import httpx2 as httpx
import msgpack
import pytest

from anyclaude import bus, context_notice, errors
from anyclaude.config import ModelConfig
from anyclaude import websearch_text as search_blocks
from anyclaude.services.frontdoor.gateway import BusOptimizer
from anyclaude.services.frontdoor.websearch import result_block, results_as_tool_text
from anyclaude.services.optimizer.service import OptimizerService

from .fd_fake_engine import PROMPT_TOO_LONG
from .fd_helpers import Door, make_settings, wait_for
from .search_loop_kit import BIG, MODEL, RESULTS, WEATHER, WEB_SEARCH, ask, raw_stream, rounds_of
from .search_loop_kit import client, door, engine, fresh_calls, searches  # noqa: F401 (fixtures)


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
            # a cut's notice is the client's only: the model's turn is without it
            text = context_notice.strip([{"role": "assistant", "content": [block]}])[0][0][
                "content"][0]["text"]
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
    notice = message["content"][0]["text"].startswith(context_notice.PREFIX)
    assert notice == bool(history)                         # ... and the client was told
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
