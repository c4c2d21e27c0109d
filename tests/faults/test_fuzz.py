"""Fuzzing the request parser and the SSE encoder (hypothesis).

Thousands of generated and mutated request bodies go through the real falcon app (every
route, middleware and error handler; the engine is an in-process fake that answers with the
request's own text): never a 500, never a traceback - always an Anthropic error body with a
4xx status, or a valid reply (a Message, or an SSE stream that follows the grammar).
Random neutral event sequences through the SSE state machine either form a valid stream or
are refused as MalformedEvents (which the relay turns into an `event: error`).
"""

from __future__ import annotations

import json

import falcon.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anyclaude import messages
from anyclaude.config import ModelConfig, RoutesConfig, ServerConfig, Settings
from anyclaude.services.frontdoor import sse
from anyclaude.services.frontdoor.app import create_app
from anyclaude.breaker import Breaker
from anyclaude.services.frontdoor.upstate import EngineWatch

from .harness import sse_events

SETTINGS = Settings(server=ServerConfig(threads=4),
                    models={"local": ModelConfig(context_window=4096, max_output_tokens=512)},
                    routes=RoutesConfig(default="local"))
FUZZ = settings(max_examples=1000, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class EchoEngines:
    """Answers with the text of the last user message: output depends on the input."""

    def stream(self, model_id, request, *, request_id, client_gone):
        text = ""
        for message in request["messages"]:
            for block in message["content"]:
                if block.get("type") == "text":
                    text = block["text"]
        yield messages.Accepted(0)
        yield messages.Delta([{"type": "text", "text": text[:200]}])
        yield messages.Done("end_turn", None, {"input_tokens": 1, "output_tokens": 1})

    def count(self, model_id, request):
        return 7


APP = create_app(settings=SETTINGS, engines=EchoEngines(), breaker=Breaker(threshold=10**9),
                 watch=EngineWatch([], restart_wait=0, status=lambda: None))
CLIENT = falcon.testing.TestClient(APP)


def check_reply(result) -> None:
    """The one property: a 4xx Anthropic error, or a valid 200 reply."""
    assert result.status_code < 500, (result.status_code, result.text[:500])
    assert "Traceback" not in result.text
    if result.status_code >= 400:
        data = json.loads(result.text)
        assert data["type"] == "error" and set(data["error"]) == {"type", "message"}
        assert isinstance(data["error"]["message"], str) and data["error"]["message"]
        assert data["error"]["type"] == sse.error_type_for(result.status_code)
        return
    assert result.status_code == 200
    if result.headers.get("content-type", "").startswith("text/event-stream"):
        events = sse_events(result.content)
        kinds = [k for k, _ in events]
        assert kinds[0] == "message_start" and kinds[-1] in ("message_stop", "error"), kinds
        assert all(d["type"] == k for k, d in events)
    else:
        data = json.loads(result.text)
        assert data.get("type") == "message" or set(data) == {"input_tokens"}, data


def post(raw: bytes, path: str = "/v1/messages", content_type: str = "application/json"):
    return CLIENT.simulate_post(path, body=raw, headers={"content-type": content_type})


# --- generated bodies --------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | \
    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) |
                           st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
anything = json_values


def maybe(strategy):
    return st.one_of(strategy, anything)


text_block = st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=40)})
blocks = st.lists(st.one_of(
    text_block,
    st.fixed_dictionaries({"type": st.sampled_from(["image", "document", "tool_use",
                                                    "tool_result", "thinking",
                                                    "redacted_thinking", "bogus"])},
                          optional={"source": anything, "id": maybe(st.text(max_size=8)),
                                    "name": maybe(st.text(max_size=8)), "input": anything,
                                    "tool_use_id": maybe(st.text(max_size=8)),
                                    "content": anything, "thinking": anything,
                                    "signature": anything, "data": anything,
                                    "cache_control": anything})), max_size=3)
message = st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from(["user", "assistant", "system"]), anything),
     "content": st.one_of(st.text(max_size=40), blocks, anything)})
tool = st.fixed_dictionaries(
    {"name": maybe(st.text(max_size=10))},
    optional={"input_schema": maybe(st.just({"type": "object"})),
              "description": anything, "type": maybe(st.sampled_from(
                  ["custom", "web_search_20250305", "bash_20250124"])), "max_uses": anything})
request_body = st.fixed_dictionaries(
    {},
    optional={
        "model": maybe(st.sampled_from(["local", "claude-sonnet-4-6", "claude-3-haiku", "nope"])),
        "max_tokens": maybe(st.integers(-5, 10**6)),
        "messages": st.one_of(st.lists(message, max_size=3), anything),
        "system": st.one_of(st.text(max_size=30), st.lists(text_block, max_size=2), anything),
        "tools": st.one_of(st.lists(tool, max_size=2), anything),
        "tool_choice": st.one_of(st.fixed_dictionaries(
            {"type": st.sampled_from(["auto", "any", "tool", "none", "odd"])},
            optional={"name": anything, "disable_parallel_tool_use": anything}), anything),
        "stream": maybe(st.booleans()),
        "thinking": st.one_of(st.fixed_dictionaries(
            {"type": st.sampled_from(["enabled", "disabled", "adaptive", "odd"])},
            optional={"budget_tokens": anything}), anything),
        "temperature": anything, "top_p": anything, "top_k": anything,
        "stop_sequences": anything, "metadata": anything, "cache_control": anything,
        "unknown_field": anything,
    })


# Mostly valid requests (so the deep paths run: routing, the relay, SSE), some broken in
# one or two places, and the free-form ones above.
names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
valid_block = st.one_of(
    text_block.filter(lambda b: b["text"]),
    st.fixed_dictionaries({"type": st.just("tool_use"), "id": names, "name": names,
                           "input": st.dictionaries(names, json_scalars, max_size=2)}),
    st.fixed_dictionaries({"type": st.just("tool_result"), "tool_use_id": names,
                           "content": st.one_of(st.text(max_size=20),
                                                st.lists(text_block.filter(lambda b: b["text"]),
                                                         max_size=2))},
                          optional={"is_error": st.booleans()}),
    st.fixed_dictionaries({"type": st.just("thinking"), "thinking": st.text(max_size=20),
                           "signature": st.just("")}),
    st.fixed_dictionaries({"type": st.just("image"), "source": st.fixed_dictionaries(
        {"type": st.just("base64"), "media_type": st.just("image/png"),
         "data": st.just("iVBORw0KGgo=")})}))
valid_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system"]),
     "content": st.one_of(st.text(min_size=1, max_size=40), st.lists(valid_block, min_size=1,
                                                                     max_size=3))})
valid_tool = st.fixed_dictionaries(
    {"name": st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,10}", fullmatch=True),
     "input_schema": st.just({"type": "object", "properties": {"x": {"type": "string"}}})},
    optional={"description": st.text(max_size=20)})
valid_request = st.fixed_dictionaries(
    {"model": st.sampled_from(["local", "claude-sonnet-4-6", "claude-haiku-4-5"]),
     "max_tokens": st.integers(1, 100_000),
     "messages": st.lists(valid_message, min_size=1, max_size=4)},
    optional={"system": st.one_of(st.text(max_size=30), st.lists(text_block, max_size=2)),
              "tools": st.lists(valid_tool, max_size=2, unique_by=lambda t: t["name"]),
              "tool_choice": st.sampled_from([{"type": "auto"}, {"type": "any"}, {"type": "none"}]),
              "stream": st.booleans(),
              "thinking": st.sampled_from([{"type": "adaptive"}, {"type": "disabled"},
                                           {"type": "enabled", "budget_tokens": 1024}]),
              "temperature": st.floats(0, 1), "stop_sequences": st.lists(names, max_size=2),
              "metadata": st.fixed_dictionaries({"user_id": names}),
              "context_management": anything, "output_config": anything})


@st.composite
def broken(draw, base):
    payload = draw(base)
    for _ in range(draw(st.integers(1, 2))):
        listed = payload.get("messages")
        if draw(st.booleans()) and isinstance(listed, list) and listed and \
                all(isinstance(m, dict) for m in listed):
            message = draw(st.sampled_from(listed))
            message[draw(st.sampled_from(["role", "content", "extra"]))] = draw(anything)
        else:
            payload[draw(st.sampled_from(sorted(payload) + ["stream", "tools"]))] = draw(anything)
    return payload


bodies = st.one_of(valid_request, broken(valid_request), request_body)


@FUZZ
@given(bodies)
def test_generated_request_bodies_never_break_the_front_door(payload):
    check_reply(post(json.dumps(payload).encode()))


@FUZZ
@given(bodies, st.booleans())
def test_generated_count_tokens_bodies(payload, drop_max_tokens):
    if drop_max_tokens:
        payload.pop("max_tokens", None)
    check_reply(post(json.dumps(payload).encode(), "/v1/messages/count_tokens"))


# --- mutated bodies ----------------------------------------------------------------------

VALID = json.dumps({"model": "local", "max_tokens": 64, "stream": True,
                   "system": [{"type": "text", "text": "Be brief."}],
                   "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
                   "messages": [{"role": "user", "content": [{"type": "text", "text": "héllo"}]},
                                {"role": "assistant", "content": "hi"},
                                {"role": "user", "content": "again \\u00e9"}]}).encode()


@st.composite
def mutated(draw):
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=6))
        elif op == "delete" and data:
            del data[at:at + draw(st.integers(1, 6))]
        elif op == "truncate":
            del data[at:]
        elif op == "dup":
            data[at:at] = data[at:at + draw(st.integers(1, 30))]
    return bytes(data)


@FUZZ
@given(mutated(), st.sampled_from(["application/json", "application/json; charset=utf-8", "",
                                   "text/plain", "application/x-www-form-urlencoded"]))
def test_mutated_request_bodies_never_break_the_front_door(raw, content_type):
    check_reply(post(raw, content_type=content_type))


# --- the SSE encoder ---------------------------------------------------------------------

events = st.lists(st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "thinking"]), "text": st.text()}),
    st.fixed_dictionaries({"type": st.just("tool_start"), "id": st.text(max_size=8),
                           "name": st.text(max_size=8)}),
    st.fixed_dictionaries({"type": st.just("tool_args"),
                           "json": st.one_of(st.sampled_from(['{"a": 1}', '{"a":', ' 1}', '[]']),
                                             st.text(max_size=10))}),
    st.just({"type": "tool_end"}),
    st.fixed_dictionaries({"type": st.text(max_size=6)})), max_size=12)


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(st.lists(events, max_size=4), st.booleans(), st.sampled_from(sorted(sse.STOP_REASONS)))
def test_sse_encoder_emits_only_valid_streams(batches, thinking, stop_reason):
    state = sse.StreamState(message_id="msg_1", model="m", thinking=thinking)
    out = state.start()
    try:
        for batch in batches:
            out += state.feed(batch)
        out += state.finish(stop_reason, None, {"output_tokens": 3})
    except sse.MalformedEvents:
        out += state.error("api_error", "the engine produced malformed output", "req_1")
    parsed = sse_events(out)
    assert len(parsed) == out.count(b"\n\n")            # every event parsed: event: + JSON data
    text = out.decode("utf-8")
    assert text.splitlines() == text.split("\n")[:-1]  # even naive line splitting agrees
    kinds = [k for k, _ in parsed]
    assert kinds[0] == "message_start" and kinds[-1] in ("message_stop", "error")
    open_index = None
    for kind, data in parsed:
        assert data["type"] == kind
        if kind == "content_block_start":
            assert open_index is None
            open_index = data["index"]
        elif kind == "content_block_delta":
            assert data["index"] == open_index
        elif kind == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
    if kinds[-1] == "message_stop":
        assert open_index is None
        tool_json = {}
        for kind, data in parsed:
            if kind == "content_block_delta" and data["delta"]["type"] == "input_json_delta":
                tool_json[data["index"]] = tool_json.get(data["index"], "") + \
                    data["delta"]["partial_json"]
        for text in tool_json.values():
            assert isinstance(json.loads(text), dict)
