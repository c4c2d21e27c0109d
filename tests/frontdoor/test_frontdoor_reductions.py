"""The optimizer's reductions reach the client as the anyclaude-reductions header."""

from __future__ import annotations

import anthropic

MODEL = "claude-opus-4-7"


class ReducingOptimizer:
    """Leaves the request as it is and says it ran two tiers (as the real one notes them)."""

    def __init__(self, names):
        self.names = names

    def optimize_noted(self, request):
        notes = [{"route": "default", "model": request["model"], "reason": "default model"}]
        if self.names:
            notes.append({"action": "reductions", "names": list(self.names)})
        return dict(request), notes

    def optimize(self, request):
        return self.optimize_noted(request)[0]


def ask(door, *, stream: bool):
    client = anthropic.Anthropic(base_url=door.url, api_key="sk-test", max_retries=0)
    body = {"model": MODEL, "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        with client.messages.with_streaming_response.create(stream=True, **body) as raw:
            raw.read()
            return raw.headers
    return client.messages.with_raw_response.create(**body).headers


def test_reductions_are_named_in_a_header_streaming_or_not(make_door):
    door = make_door(optimizer=ReducingOptimizer(["tool_descriptions", "core_tools"]))
    for stream in (False, True):
        assert ask(door, stream=stream)["anyclaude-reductions"] == "tool_descriptions,core_tools"


def test_no_header_without_reductions(make_door):
    door = make_door(optimizer=ReducingOptimizer([]))
    assert "anyclaude-reductions" not in ask(door, stream=False)
