"""The official SDK against the whole running system (supervisor, front door, optimizer,
real MLX engine on the tiny model, kvstore, websearch)."""

from __future__ import annotations

import json

import anthropic
import pytest

BASH = {"name": "Bash", "description": "Run a shell command.",
        "input_schema": {"type": "object", "properties": {"command": {"type": "string"}},
                         "required": ["command"]}}


def test_all_services_ready(system):
    states = {s["name"]: s["state"] for s in system.status()["services"]}
    assert states == {"kvstore": "ready", "engine-tiny": "ready", "optimizer": "ready",
                      "websearch": "ready", "frontdoor": "ready"}


def test_text_reply_non_streaming(system, client):
    system.say(("greet me", "Hello from the local engine."))
    reply = client.messages.create(model="claude-sonnet-4-6", max_tokens=64,
                                   messages=[{"role": "user", "content": "greet me"}])
    assert reply.content[0].text == "Hello from the local engine."
    assert reply.model == "claude-sonnet-4-6"
    assert reply.stop_reason == "end_turn"


def test_streamed_tool_call_and_round_trip(system, client):
    system.say(("tool output: 42", "The file has 42 lines."),
               ("count the lines", '<tool_call>{"name": "Bash", "arguments": {"command": "wc -l f.txt"}}</tool_call>'))
    messages = [{"role": "user", "content": "count the lines of f.txt"}]
    with client.messages.stream(model="tiny", max_tokens=128, tools=[BASH], messages=messages) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "Bash" and call.input == {"command": "wc -l f.txt"}
    messages += [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                               "content": "tool output: 42"}]}]
    second = client.messages.create(model="tiny", max_tokens=128, tools=[BASH], messages=messages)
    assert second.content[0].text == "The file has 42 lines."
    assert second.usage.cache_read_input_tokens > 0  # the first turn's prefix was reused


def test_count_tokens_equals_usage(system, client):
    system.say(("count this", "ok"))
    kwargs = dict(model="tiny", tools=[BASH], system="You are terse.",
                  messages=[{"role": "user", "content": "count this"}])
    counted = client.messages.count_tokens(**kwargs).input_tokens
    reply = client.messages.create(max_tokens=16, **kwargs)
    u = reply.usage
    assert counted == u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens


def test_thinking_streams_as_thinking_blocks(system, client):
    system.say(("think first", "<think>Two plus two is four.</think>It is 4."))
    reply = client.messages.create(model="tiny", max_tokens=128,
                                   thinking={"type": "enabled", "budget_tokens": 1024},
                                   messages=[{"role": "user", "content": "think first: 2+2?"}])
    kinds = [b.type for b in reply.content]
    assert kinds == ["thinking", "text"]
    assert reply.content[0].thinking == "Two plus two is four."
    assert reply.content[1].text == "It is 4."


def test_unknown_model_is_404_with_model_in_message(client):
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(model="gpt-nonexistent", max_tokens=8,
                               messages=[{"role": "user", "content": "hi"}])
    assert "model:" in info.value.message


def test_status_shows_engine_cache_and_blas(system):
    engine = system.service("engine-tiny")
    assert engine["info"]["blas"] in ("openblas", "reference")
    assert "cache" in engine["info"]
