"""Conformance through the official anthropic SDK 2.x, against real waitress and the real
bus to a fake engine service. Raw bytes of the same streams go through sse_validator."""

from __future__ import annotations

import dataclasses
import threading

import anthropic
import httpx2 as httpx
import pytest

from .fd_fake_engine import PROMPT_TOO_LONG, fake_tokens
from .fd_helpers import make_settings, wait_for
from .sse_validator import validate

MODEL = "claude-opus-4-7"
TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"$schema": "https://json-schema.org/draft/2020-12/schema",
                           "type": "object", "additionalProperties": False,
                           "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


def user(text):
    return [{"role": "user", "content": text}]


def raw_stream(door, body, headers=None) -> tuple[httpx.Response, bytes]:
    with httpx.Client(base_url=door.url, timeout=30) as http:
        response = http.post("/v1/messages", json={"model": MODEL, "max_tokens": 100,
                                                   "stream": True, **body},
                             headers=headers or {})
        return response, response.content


# --- messages ---------------------------------------------------------------------------

def test_create_text(client, fake_engines):
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=100,
                                                   messages=user("hello"))
    message = raw.parse()
    assert raw.headers["request-id"].startswith("req_")
    assert message.model == MODEL and message.role == "assistant"
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello from the fake engine."
    assert message.stop_reason == "end_turn"
    request = fake_engines["local-main"].request_of(raw.headers["request-id"])
    assert message.usage.input_tokens == fake_tokens(request) and message.usage.output_tokens == 6


def test_stream_text(client, door):
    with client.messages.stream(model=MODEL, max_tokens=100, messages=user("fake:text a b c")) as s:
        kinds = [event.type for event in s]
        final = s.get_final_message()
    assert final.content[0].text == "a b c" and final.stop_reason == "end_turn"
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    response, body = raw_stream(door, {"messages": user("fake:text a b c")})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert validate(body)["message"]["content"] == [{"type": "text", "text": "a b c"}]


def test_stream_tool_use(client, door):
    text = 'fake:tool get_weather {"city": "Paris", "days": [1, 2]}'
    with client.messages.stream(model=MODEL, max_tokens=100, tools=TOOLS,
                                messages=user(text)) as s:
        final = s.get_final_message()
    tool = final.content[1]
    assert final.stop_reason == "tool_use"
    assert (tool.type, tool.id, tool.name) == ("tool_use", "toolu_fake01", "get_weather")
    assert tool.input == {"city": "Paris", "days": [1, 2]}
    _, body = raw_stream(door, {"messages": user(text), "tools": TOOLS})
    result = validate(body)
    deltas = [e[1]["delta"]["partial_json"] for e in result["events"]
              if e[0] == "content_block_delta" and e[1]["delta"]["type"] == "input_json_delta"]
    assert len(deltas) == 3 and "".join(deltas) == '{"city": "Paris", "days": [1, 2]}'


def test_stream_thinking(client, door):
    with client.messages.stream(model=MODEL, max_tokens=100, messages=user("fake:thinking"),
                                thinking={"type": "adaptive"}) as s:
        final = s.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "Let me think. Two plus two is four."
    assert final.content[0].signature
    _, body = raw_stream(door, {"messages": user("fake:thinking"),
                                "thinking": {"type": "enabled", "budget_tokens": 1024}})
    validate(body)


def test_non_streaming_tool_and_thinking(client):
    message = client.messages.create(model=MODEL, max_tokens=100, tools=TOOLS,
                                     messages=user('fake:tool get_weather {"city": "Rome"}'))
    assert message.stop_reason == "tool_use" and message.content[1].input == {"city": "Rome"}
    message = client.messages.create(model=MODEL, max_tokens=100, messages=user("fake:thinking"))
    assert message.content[0].type == "thinking" and message.content[0].signature


def test_tool_round_trip(client, fake_engines):
    first = client.messages.create(model=MODEL, max_tokens=100, tools=TOOLS,
                                   messages=user('fake:tool get_weather {"city": "Oslo"}'))
    tool = first.content[1]
    history = [*user('fake:tool get_weather {"city": "Oslo"}'),
               {"role": "assistant", "content": [b.model_dump(exclude_none=True)
                                                 for b in first.content]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id,
                                             "content": "12 degrees"}]}]
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=100, tools=TOOLS,
                                                   messages=history)
    assert raw.parse().content[0].text == "got the tool result"
    request = fake_engines["local-main"].request_of(raw.headers["request-id"])
    assert request["messages"][1]["content"][1] == {
        "type": "tool_use", "id": "toolu_fake01", "name": "get_weather", "input": {"city": "Oslo"}}
    assert request["messages"][2]["content"][0] == {
        "type": "tool_result", "tool_use_id": "toolu_fake01",
        "content": [{"type": "text", "text": "12 degrees"}], "is_error": False}


def test_count_tokens_equals_usage_input_tokens(client):
    kwargs = dict(model=MODEL, system="be brief", tools=TOOLS,
                  messages=[{"role": "user", "content": "how big am I?"},
                            {"role": "assistant", "content": "Quite."},
                            {"role": "user", "content": "really?"}])
    counted = client.messages.count_tokens(**kwargs)
    message = client.messages.create(max_tokens=50, **kwargs)
    assert counted.input_tokens > 10
    usage = message.usage
    total = usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
    assert counted.input_tokens == total
    with client.messages.stream(max_tokens=50, **kwargs) as s:
        assert s.get_final_message().usage.input_tokens == counted.input_tokens


def test_models_list_and_retrieve(client):
    listing = client.models.list()
    assert [m.id for m in listing.data] == ["local-main", "local-small"]
    one = client.models.retrieve("local-main")
    assert one.max_input_tokens == 32768 and one.max_tokens == 4096
    assert one.display_name == "Local Main" and one.created_at.year >= 2025
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("claude-opus-4-7")


def test_haiku_routes_to_the_small_model(client, fake_engines):
    raw = client.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=10,
                                                   messages=user("hi"))
    assert raw.parse().model == "claude-haiku-4-5"
    assert fake_engines["local-small"].request_of(raw.headers["request-id"])["model"] == "local-small"


class InProcessOptimizer:
    """The real Optimizer behind the front door's optimize(request) -> request."""

    def __init__(self, settings):
        from anyclaude.services.optimizer.core import Optimizer
        # a fixed count: this test is about who clamps max_tokens, not about counting
        self.optimizer = Optimizer(settings, lambda request: 10)

    def optimize(self, request: dict) -> dict:
        return self.optimizer.optimize(request)[0]


def test_max_tokens_is_clamped(make_door, fake_engines):
    """One place clamps: the optimizer (it knows the prompt's size); the front door and
    the engine pass it on."""
    door = make_door(optimizer=InProcessOptimizer(make_settings()))
    client = door.client()
    raw = client.messages.with_raw_response.create(model=MODEL, max_tokens=64000,
                                                   messages=user("hi"))
    assert raw.parse().stop_reason == "end_turn"
    assert fake_engines["local-main"].request_of(raw.headers["request-id"])["max_tokens"] == 4096


def test_claude_code_shaped_request(client, fake_engines):
    """Roles "system" mid-conversation, thinking echoed with signature "", betas, unknown
    fields, server tools kept out of the custom tools."""
    tools = TOOLS + [{"name": f"tool_{i}", "description": "x" * 200,
                      "input_schema": {"type": "object", "properties": {}}} for i in range(25)]
    tools.append({"type": "web_search_20250305", "name": "web_search", "max_uses": 8})
    raw = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=32000,
        system=[{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1"},
                {"type": "text", "text": "You are Claude Code.",
                 "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "env"}],
        messages=[{"role": "user", "content": "first"},
                  {"role": "assistant", "content": [
                      {"type": "thinking", "thinking": "hmm", "signature": ""},
                      {"type": "text", "text": "ok"}]},
                  {"role": "system", "content": "a reminder"},
                  {"role": "user", "content": [{"type": "text", "text": "fake:text fine",
                                                "cache_control": {"type": "ephemeral"}}]}],
        tools=tools, thinking={"type": "adaptive"}, metadata={"user_id": '{"session":"s"}'},
        extra_body={"context_management": {"edits": []}, "output_config": {"effort": "high"},
                    "speed": "normal", "some_future_field": {"x": 1}},
        extra_headers={"anthropic-beta": "claude-code-20250219,made-up-beta-2099",
                       "anthropic-version": "2023-06-01"})
    assert raw.parse().content[0].text == "fine"
    request = fake_engines["local-main"].request_of(raw.headers["request-id"])
    assert request["thinking"] is True and len(request["tools"]) == 27
    assert request["tools"][-1]["name"] == "web_search"   # offered to the model (search_loop)
    assert request["server_tools"] == [{"type": "web_search_20250305", "name": "web_search",
                                        "max_uses": 8}]
    assert request["messages"][2]["role"] == "system"
    assert request["messages"][1]["content"][0] == {"type": "thinking", "thinking": "hmm"}


def test_four_concurrent_streams_do_not_mix(door):
    results, errors = {}, []

    def run(tag):
        try:
            client = door.client()
            with client.messages.stream(model=MODEL, max_tokens=100,
                                        messages=user(f"fake:long 150 {tag}")) as s:
                results[tag] = s.get_final_message().content[0].text
        except Exception as exc:  # reported below
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(tag,)) for tag in "ABCD"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    for tag in "ABCD":
        assert results[tag] == " ".join(f"{tag}{i}" for i in range(150)) + " "


# --- errors through the SDK -------------------------------------------------------------

def test_unknown_model_is_404_with_model_prefix(client, fake_engines):
    before = len(fake_engines["local-main"].generated)
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(model="gpt-4o", max_tokens=10, messages=user("hi"))
    assert "model:" in info.value.message and info.value.body["error"]["type"] == "not_found_error"
    assert info.value.response.headers["x-should-retry"] == "false"
    assert len(fake_engines["local-main"].generated) == before


def test_validation_error_is_400(client):
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model=MODEL, max_tokens=0, messages=user("hi"))
    assert info.value.body["error"] == {"type": "invalid_request_error",
                                        "message": "max_tokens: must be at least 1, got 0"}
    assert info.value.body["request_id"] == info.value.response.headers["request-id"]


def test_prompt_too_long_is_400_with_the_exact_message(client):
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model=MODEL, max_tokens=10, messages=user("fake:error prompt_too_long"))
    assert info.value.body["error"]["message"] == PROMPT_TOO_LONG
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.count_tokens(model=MODEL, messages=user("fake:error prompt_too_long"))
    assert info.value.body["error"]["message"] == PROMPT_TOO_LONG


def test_unsupported_content_is_400(client):
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model=MODEL, max_tokens=10,
                               messages=user("fake:error unsupported_content"))
    assert info.value.body["error"]["type"] == "invalid_request_error"


def test_engine_error_is_500_and_rate_limit_429(make_door):
    door = make_door()
    client = door.client()
    with pytest.raises(anthropic.InternalServerError) as info:
        client.messages.create(model=MODEL, max_tokens=10, messages=user("fake:error engine"))
    assert info.value.status_code == 500 and info.value.body["error"]["type"] == "api_error"
    with pytest.raises(anthropic.InternalServerError) as info:
        client.messages.create(model=MODEL, max_tokens=10, messages=user("fake:bad_tool_json"))
    assert "malformed" in info.value.message
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model=MODEL, max_tokens=10, messages=user("fake:error rate_limit"))
    assert info.value.response.headers["retry-after"] == "1"
    assert info.value.response.headers["retry-after-ms"] == "1000"


def test_midstream_error_is_an_sdk_error(client, door):
    with pytest.raises(anthropic.APIStatusError) as info:
        with client.messages.stream(model=MODEL, max_tokens=10,
                                    messages=user("fake:error_mid")) as s:
            for _ in s:
                pass
    assert info.value.body["error"]["type"] == "api_error"
    assert "mid-stream" in info.value.body["error"]["message"]
    _, body = raw_stream(door, {"messages": user("fake:error_mid")})
    result = validate(body)
    assert result["error"]["type"] == "api_error"
    assert result["message"]["content"] == [{"type": "text", "text": "partial "}]


def test_first_frame_timeout_is_504(make_door, fake_engines):
    door = make_door(make_settings(timeouts={"first_frame_s": 0.5}))
    client = door.client()
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model=MODEL, max_tokens=10, messages=user("fake:hang"))
    assert info.value.status_code == 504
    assert info.value.body["error"]["type"] == "timeout_error"
    rid = info.value.response.headers["request-id"]
    assert wait_for(lambda: fake_engines["local-main"].was_cancelled(rid))
    with pytest.raises(anthropic.APIStatusError) as info:
        with client.messages.stream(model=MODEL, max_tokens=10, messages=user("fake:hang")) as s:
            for _ in s:
                pass
    assert info.value.body["error"]["type"] == "timeout_error"


def test_engine_down_is_529(make_door):
    settings = make_settings(timeouts={"accept_s": 0.3})
    settings = dataclasses.replace(
        settings, models={**settings.models, "local-ghost": settings.models["local-main"]},
        routes=dataclasses.replace(settings.routes, default="local-ghost"))
    client = make_door(settings).client()
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model=MODEL, max_tokens=10, messages=user("hi"))
    assert info.value.status_code == 529
    assert info.value.body["error"]["type"] == "overloaded_error"
    assert "engine-local-ghost" in info.value.message
    assert info.value.response.headers["x-should-retry"] == "true"
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.count_tokens(model=MODEL, messages=user("hi"))
    assert info.value.status_code == 529


def test_open_breaker_is_529_with_retry_after(make_door):
    from anyclaude.breaker import Breaker
    door = make_door(breaker=Breaker(threshold=2, cooldown_s=30))
    client = door.client()
    for _ in range(2):
        with pytest.raises(anthropic.InternalServerError):
            client.messages.create(model=MODEL, max_tokens=10, messages=user("fake:error engine"))
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model=MODEL, max_tokens=10, messages=user("hi"))
    assert info.value.status_code == 529
    assert "circuit breaker open" in info.value.message
    assert 25 <= int(info.value.response.headers["retry-after"]) <= 30
    with pytest.raises(anthropic.APIStatusError) as info:
        with client.messages.stream(model=MODEL, max_tokens=10, messages=user("hi")) as s:
            for _ in s:
                pass
    assert info.value.status_code == 529          # refused before any byte: an HTTP status
    health = httpx.get(door.url + "/health").json()
    assert health["breaker"]["state"] == "open" and health["state"] == "degraded"


def test_client_errors_do_not_trip_the_breaker(make_door):
    from anyclaude.breaker import Breaker
    door = make_door(breaker=Breaker(threshold=1, cooldown_s=30))
    client = door.client()
    for text in ("fake:error prompt_too_long", "fake:error unsupported_content"):
        with pytest.raises(anthropic.BadRequestError):
            client.messages.create(model=MODEL, max_tokens=10, messages=user(text))
    assert client.messages.create(model=MODEL, max_tokens=10, messages=user("hi")).content
    assert door.breaker.state == "closed"


def test_optimizer_is_used_and_its_absence_is_529(make_door, fake_engines):
    from anyclaude.services.frontdoor.gateway import BusOptimizer

    class Optimizer:
        def optimize(self, request):
            request = dict(request)
            request["system"] = [s for s in request["system"] if "billing" not in s]
            return request
    client = make_door(optimizer=Optimizer()).client()
    raw = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=10, system=[{"type": "text", "text": "billing: x"},
                                            {"type": "text", "text": "keep"}],
        messages=user("hi"))
    assert fake_engines["local-main"].request_of(raw.headers["request-id"])["system"] == ["keep"]
    settings = make_settings()
    client = make_door(settings, optimizer=BusOptimizer(settings, timeout=0.3)).client()
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model=MODEL, max_tokens=10, messages=user("hi"))
    assert info.value.status_code == 529 and "optimizer" in info.value.message


def test_auth_when_a_key_is_set(make_door):
    door = make_door(make_settings(server={"api_key": "sk-right"}))
    with pytest.raises(anthropic.AuthenticationError) as info:
        door.client(api_key="sk-wrong").messages.create(model=MODEL, max_tokens=10,
                                                        messages=user("hi"))
    assert info.value.body["error"]["type"] == "authentication_error"
    assert door.client(api_key="sk-right").messages.create(
        model=MODEL, max_tokens=10, messages=user("hi")).content
    for headers in ({"x-api-key": "sk-right"}, {"authorization": "Bearer sk-right"}):
        response = httpx.post(door.url + "/v1/messages/count_tokens", headers=headers,
                              json={"model": MODEL, "messages": user("hi")})
        assert response.status_code == 200 and response.json()["input_tokens"] > 0
    response = httpx.get(door.url + "/v1/models")
    assert response.status_code == 401 and response.headers["request-id"].startswith("req_")
    assert httpx.head(door.url + "/").status_code == 200
