"""Shared parts of the search-loop tests: a scripted engine service (one step per engine
call, chosen by how many tool-result turns the conversation has; the plan is the first user
message: ``plan: STEP | STEP | ...``), a fake search, and a door over real waitress and the
real bus."""

from __future__ import annotations

import dataclasses
import json

import httpx2 as httpx
import pytest

from anyclaude import errors
from anyclaude.config import ModelConfig
from anyclaude.messages import Accepted, Delta, Done, Error, Results

from .fd_fake_engine import PROMPT_TOO_LONG, FakeEngine, fake_tokens
from .fd_helpers import Door, make_settings
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
