"""The front door's pure parts: parsing, the SSE state machine, assembly, guard
(the breaker's tests are in tests/test_breaker.py)."""

from __future__ import annotations

import json
import threading

import pytest

from anyclaude.errors import AuthenticationFailed, ConfigError, InvalidRequest, NotFound
from anyclaude.services.frontdoor import auth, parse, sse
from anyclaude.services.frontdoor.assemble import Assembler
from anyclaude.services.frontdoor.catalog import Catalog
from anyclaude.services.frontdoor.inflight import InFlight, request_key

from .fd_helpers import make_settings
from .sse_validator import SSEError, is_partial_json, validate

BASE = {"model": "claude-opus-4-7", "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}]}


def parsed(**changes):
    return parse.parse_request({**BASE, **changes}).request


def bad(payload, *, count=False) -> str:
    with pytest.raises(InvalidRequest) as info:
        parse.parse_request(payload, count=count)
    return info.value.message


# --- parse ------------------------------------------------------------------------------

def test_minimal_request_builds_the_internal_shape():
    req = parsed()
    assert req == {"model": "claude-opus-4-7", "system": [], "tools": [], "server_tools": [],
                   "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                   "tool_choice": None, "max_tokens": 100, "temperature": None, "top_p": None,
                   "top_k": None, "stop_sequences": [], "thinking": False}


def test_every_input_block_is_accepted():
    content = [
        {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
        {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                        "data": "JVBE"}, "title": "T"},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}},
        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "c"}]}},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "42"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
         "content": [{"type": "text", "text": "no"},
                     {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                  "data": "B"}}]},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
    ]
    assistant = [
        {"type": "thinking", "thinking": "hmm", "signature": ""},
        {"type": "redacted_thinking", "data": "xyz"},
        {"type": "text", "text": "calling"},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
    ]
    req = parsed(messages=[{"role": "user", "content": "q"},
                           {"role": "assistant", "content": assistant},
                           {"role": "system", "content": "mid-conversation system note"},
                           {"role": "user", "content": content}])
    user = req["messages"][3]["content"]
    assert user[0] == {"type": "text", "text": "look"}
    assert user[1] == {"type": "image", "media_type": "image/png", "data": "AAA"}
    assert user[2] == {"type": "image", "url": "https://x/y.png"}
    assert user[3] == {"type": "image", "file_id": "file_1"}
    assert user[4] == {"type": "document", "media_type": "application/pdf", "data": "JVBE", "title": "T"}
    assert user[5] == {"type": "document", "media_type": "text/plain", "data": "doc"}
    assert user[6] == {"type": "document", "media_type": "text/plain", "data": "c"}
    assert user[7] == {"type": "tool_result", "tool_use_id": "toolu_1",
                       "content": [{"type": "text", "text": "42"}], "is_error": False}
    assert user[8]["is_error"] is True and user[8]["content"][1]["type"] == "image"
    assert user[9]["type"] == "web_search_tool_result"
    out = req["messages"][1]["content"]
    assert out[0] == {"type": "thinking", "thinking": "hmm"}
    assert out[1] == {"type": "redacted_thinking", "data": "xyz"}
    assert out[3] == {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}
    assert req["messages"][2] == {"role": "system", "content": [
        {"type": "text", "text": "mid-conversation system note"}]}


def test_optional_fields_and_unknown_fields():
    req = parsed(system=[{"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
                         {"type": "text", "text": "b"}],
                 tools=[{"name": "f", "description": "d", "input_schema": {"type": "object"},
                         "strict": True, "cache_control": {"type": "ephemeral"}},
                        {"name": "g", "type": "custom", "input_schema": {}},
                        {"type": "web_search_20250305", "name": "web_search", "max_uses": 8}],
                 tool_choice={"type": "any", "disable_parallel_tool_use": True},
                 temperature=0.5, top_p=0.9, top_k=40, stop_sequences=["END"],
                 thinking={"type": "adaptive"}, metadata={"user_id": "{\"x\":1}"},
                 output_config={"effort": "high"}, context_management={"edits": []},
                 service_tier="auto", container=None, speed="fast", diagnostics={},
                 cache_control={"type": "ephemeral"}, stream=False)
    assert req["system"] == ["a", "b"]
    assert req["tools"] == [{"name": "f", "description": "d", "input_schema": {"type": "object"}},
                            {"name": "g", "description": "", "input_schema": {}}]
    assert req["server_tools"] == [{"type": "web_search_20250305", "name": "web_search",
                                    "max_uses": 8}]
    assert req["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert (req["temperature"], req["top_p"], req["top_k"]) == (0.5, 0.9, 40)
    assert req["stop_sequences"] == ["END"] and req["thinking"] is True


@pytest.mark.parametrize("thinking,expected", [
    (None, False), ({"type": "enabled", "budget_tokens": 1024}, True),
    ({"type": "adaptive"}, True), ({"type": "disabled"}, False)])
def test_thinking_modes(thinking, expected):
    assert parsed(thinking=thinking)["thinking"] is expected


def test_system_string_and_count_without_max_tokens():
    assert parsed(system="be brief")["system"] == ["be brief"]
    body = {k: v for k, v in BASE.items() if k != "max_tokens"}
    assert parse.parse_request(body, count=True).request["max_tokens"] == 1


@pytest.mark.parametrize("payload,message", [
    ({k: v for k, v in BASE.items() if k != "model"}, "model: field required"),
    ({k: v for k, v in BASE.items() if k != "max_tokens"}, "max_tokens: field required"),
    ({k: v for k, v in BASE.items() if k != "messages"}, "messages: field required"),
    ({**BASE, "model": 5}, "model: expected a string"),
    ({**BASE, "max_tokens": "10"}, "max_tokens: expected an integer"),
    ({**BASE, "max_tokens": 0}, "max_tokens: must be at least 1"),
    ({**BASE, "max_tokens": True}, "max_tokens: expected an integer"),
    ({**BASE, "messages": []}, "messages: at least one message is required"),
    ({**BASE, "messages": "hi"}, "messages: expected an array"),
    ({**BASE, "messages": [{"content": "x"}]}, "messages.0.role: field required"),
    ({**BASE, "messages": [{"role": "user"}]}, "messages.0.content: field required"),
    ({**BASE, "messages": [{"role": "tool", "content": "x"}]}, "messages.0.role: must be one of"),
    ({**BASE, "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                           {"role": "user", "content": [{"type": "foo"}]}]},
     "messages.2.content.0.type: unknown block type 'foo'"),
    ({**BASE, "messages": [{"role": "user", "content": [{"text": "x"}]}]},
     "messages.0.content.0.type: field required"),
    ({**BASE, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
     "messages.0.content.0.text: field required"),
    ({**BASE, "messages": [{"role": "user", "content": [{"type": "image", "source": {
        "type": "base64", "data": "x"}}]}]}, "messages.0.content.0.source.media_type: field required"),
    ({**BASE, "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
     "messages.0.content.0.tool_use_id: field required"),
    ({**BASE, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                         "content": [{"type": "tool_use"}]}]}]},
     "messages.0.content.0.content.0.type: unknown block type 'tool_use' inside tool_result"),
    ({**BASE, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t"}]}]},
     "messages.0.content.0.name: field required"),
    ({**BASE, "system": [{"type": "image"}]}, "system.0.type: system blocks must be text"),
    ({**BASE, "tools": [{"description": "x"}]}, "tools.0.name: field required"),
    ({**BASE, "tools": [{"name": "f"}]}, "tools.0.input_schema: field required"),
    ({**BASE, "tools": [{"name": "f", "input_schema": {}}, {"name": "f", "input_schema": {}}]},
     "tools.1.name: tool names must be unique"),
    ({**BASE, "tool_choice": {"type": "maybe"}}, "tool_choice.type: must be one of"),
    ({**BASE, "tool_choice": {"type": "tool"}}, "tool_choice.name: field required"),
    ({**BASE, "thinking": {"type": "sometimes"}}, "thinking.type: must be enabled"),
    ({**BASE, "stream": "yes"}, "stream: expected a boolean"),
    ({**BASE, "temperature": "hot"}, "temperature: expected a number"),
    ({**BASE, "stop_sequences": [1]}, "stop_sequences.0: expected a string"),
])
def test_schema_errors_name_the_field(payload, message):
    assert bad(payload).startswith(message)


@pytest.mark.parametrize("body,message", [
    (b"", "request body is empty"),
    (b"{\"model\": ", "request body is not valid JSON"),
    (b"[1, 2]", "request body must be a JSON object, got an array"),
    (b"\xff\xfe{}", "request body is not valid UTF-8 (byte 0)"),
    (b'{"a": NaN}', "request body is not valid JSON"),
    (b'{"model": "\\ud800"}', "model: string contains a lone UTF-16 surrogate"),
    (b'{"messages": [{"content": "\\udfff x"}]}', "messages.0.content: string contains a lone"),
    (b"[" * 100000 + b"]" * 100000, "request body is not valid JSON"),
])
def test_body_errors(body, message):
    with pytest.raises(InvalidRequest) as info:
        parse.decode_body(body)
    assert info.value.message.startswith(message)


def test_surrogate_pairs_are_fine():
    assert parse.decode_body(b'{"t": "\\ud83d\\ude00"}') == {"t": "\U0001F600"}


@pytest.mark.parametrize("value,ok", [
    (None, True), ("application/json", True), ("application/json; charset=utf-8", True),
    ("Application/JSON;charset=UTF-8", True), ("text/plain", False),
    ("application/x-www-form-urlencoded", False)])
def test_content_type(value, ok):
    if ok:
        parse.check_content_type(value)
    else:
        with pytest.raises(InvalidRequest, match="content-type must be application/json"):
            parse.check_content_type(value)


# --- the SSE state machine --------------------------------------------------------------

def run_stream(events_batches, *, thinking=False, keepalive_at=()):
    state = sse.StreamState(message_id="msg_1", model="m", thinking=thinking)
    out = [state.start()]
    for i, batch in enumerate(events_batches):
        if i in keepalive_at:
            out.append(state.keepalive())
        out.append(state.feed(batch))
    out.append(state.finish("end_turn", None, {"input_tokens": 3, "output_tokens": 2}))
    return validate(b"".join(out))


def test_blocks_are_sequential_and_complete():
    result = run_stream([
        [{"type": "thinking", "text": "a"}, {"type": "thinking", "text": "b"}],
        [{"type": "text", "text": "hi"}, {"type": "text", "text": ""}],
        [{"type": "tool_start", "id": "toolu_1", "name": "f"}, {"type": "tool_args", "json": '{"x"'},
         {"type": "tool_args", "json": ": [1, 2]}"}, {"type": "tool_end"}],
        [{"type": "tool_start", "id": "toolu_2", "name": "g"}, {"type": "tool_end"}],
        [{"type": "text", "text": "done"}]])
    content = result["message"]["content"]
    assert [b["type"] for b in content] == ["thinking", "text", "tool_use", "tool_use", "text"]
    assert content[0]["thinking"] == "ab" and content[0]["signature"] == sse.SIGNATURE
    assert content[2]["input"] == {"x": [1, 2]} and content[3]["input"] == {}
    assert result["message"]["usage"]["input_tokens"] == 3


def test_keepalive_opens_thinking_only_when_thinking_was_requested():
    with_thinking = run_stream([[], [{"type": "text", "text": "x"}]], thinking=True,
                               keepalive_at=(0, 1))
    assert [b["type"] for b in with_thinking["message"]["content"]] == ["thinking", "text"]
    without = run_stream([[], [{"type": "tool_start", "id": "t", "name": "f"},
                               {"type": "tool_end"}]], keepalive_at=(0, 1))
    blocks = without["message"]["content"]
    assert [b["type"] for b in blocks] == ["text", "tool_use"] and blocks[0]["text"] == ""
    continued = run_stream([[{"type": "text", "text": "answer"}]], keepalive_at=(0,))
    assert continued["message"]["content"] == [{"type": "text", "text": "answer"}]


def test_keepalive_events_are_not_pings():
    state = sse.StreamState(message_id="m", model="m", thinking=False)
    state.start()
    first, second = state.keepalive(), state.keepalive()
    assert b"event: content_block_start" in first
    assert b'"text_delta","text":""' in second


@pytest.mark.parametrize("events", [
    [{"type": "tool_args", "json": "{}"}],
    [{"type": "tool_end"}],
    [{"type": "mystery"}],
    [{"type": "tool_start", "id": "t", "name": "f"}, {"type": "tool_args", "json": "[1]"},
     {"type": "tool_end"}],
])
def test_malformed_engine_events_are_refused(events):
    state = sse.StreamState(message_id="m", model="m", thinking=False)
    with pytest.raises(sse.MalformedEvents):
        state.feed(events)
    with pytest.raises(sse.MalformedEvents):
        Assembler(message_id="m", model="m").feed(events)
        Assembler(message_id="m", model="m").finish("end_turn", None, {})


def test_unknown_stop_reason_becomes_end_turn_and_usage_is_complete():
    state = sse.StreamState(message_id="m", model="m", thinking=False)
    raw = state.start() + state.finish(None, None, None)
    message = validate(raw)["message"]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"] == {"input_tokens": 0, "output_tokens": 0,
                                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def test_error_event_ends_the_stream():
    state = sse.StreamState(message_id="m", model="m", thinking=False)
    raw = state.start() + state.feed([{"type": "text", "text": "x"}]) + \
        state.error("overloaded_error", "busy", "req_1")
    result = validate(raw)
    assert result["error"] == {"type": "overloaded_error", "message": "busy"}


def test_validator_catches_grammar_violations():
    good = sse.event("message_start", {"type": "message_start", "message": {
        "id": "m", "type": "message", "role": "assistant", "model": "x", "content": [],
        "stop_reason": None, "usage": sse.usage({})}})
    with pytest.raises(SSEError, match="no event: line"):
        validate(good + b'data: {"type":"ping"}\n\n')
    with pytest.raises(SSEError, match="without message_stop"):
        validate(good)
    with pytest.raises(SSEError, match="index 1 after -1"):
        validate(good + sse.event("content_block_start", {
            "type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}))
    assert is_partial_json('{"a": [1, {"b": "c') and not is_partial_json('{"a": }')


# --- assembly ---------------------------------------------------------------------------

def test_assembler_builds_the_same_content():
    asm = Assembler(message_id="msg_1", model="claude-x")
    asm.feed([{"type": "thinking", "text": "t1"}, {"type": "thinking", "text": "t2"},
              {"type": "text", "text": "a"}, {"type": "text", "text": "b"},
              {"type": "tool_start", "id": "toolu_1", "name": "f"},
              {"type": "tool_args", "json": '{"k"'}, {"type": "tool_args", "json": ': "v"}'},
              {"type": "tool_end"}, {"type": "text", "text": "c"}])
    body = asm.finish("tool_use", None, {"input_tokens": 5, "output_tokens": 7})
    assert body["content"] == [
        {"type": "thinking", "thinking": "t1t2", "signature": sse.SIGNATURE},
        {"type": "text", "text": "ab"},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"k": "v"}},
        {"type": "text", "text": "c"}]
    assert body["stop_reason"] == "tool_use" and body["model"] == "claude-x"
    assert body["usage"]["cache_read_input_tokens"] == 0


# --- duplicate guard --------------------------------------------------------------------

def test_inflight_supersedes_and_waits_for_the_first_copy():
    guard = InFlight(wait_s=5)
    key = request_key("k", b"body")
    first = guard.enter(key, "req_1")
    entered = threading.Event()

    def second():
        guard.enter(key, "req_2")
        entered.set()
    threading.Thread(target=second, daemon=True).start()
    assert first.superseded.wait(2)
    assert not entered.wait(0.1)          # still waiting for the first copy to stop
    guard.leave(first)
    assert entered.wait(2)
    assert len(guard) == 1


def test_request_key_depends_on_body_and_key():
    assert request_key("a", b"x") == request_key("a", b"x")
    assert request_key("a", b"x") != request_key("b", b"x")
    assert request_key("a", b"x") != request_key("a", b"y")


# --- catalog and auth -------------------------------------------------------------------

def test_model_routing():
    catalog = Catalog(make_settings())
    assert catalog.resolve("claude-opus-4-7") == "local-main"
    assert catalog.resolve("claude-sonnet-4-6") == "local-main"
    assert catalog.resolve("claude-haiku-4-5-20251001") == "local-small"
    assert catalog.resolve("local-small") == "local-small"
    with pytest.raises(NotFound, match="model:"):
        catalog.resolve("gpt-4o")
    no_small = Catalog(make_settings(routes={"small": ""}))
    assert no_small.resolve("claude-haiku-4-5") == "local-main"


def test_model_listing():
    listing = Catalog(make_settings()).listing()
    assert [m["id"] for m in listing["data"]] == ["local-main", "local-small"]
    main = listing["data"][0]
    assert main["max_input_tokens"] == 32768 and main["max_tokens"] == 4096
    assert main["display_name"] == "Local Main" and main["created_at"].endswith("Z")
    assert listing["first_id"] == "local-main" and listing["last_id"] == "local-small"


def test_auth_headers_and_exposure():
    settings = make_settings(server={"api_key": "sekret"})
    headers = {"x-api-key": "sekret"}
    assert auth.check(settings, headers.get) == "sekret"
    assert auth.check(settings, {"authorization": "Bearer sekret"}.get) == "sekret"
    with pytest.raises(AuthenticationFailed, match="invalid API key"):
        auth.check(settings, {"authorization": "Bearer nope"}.get)
    with pytest.raises(AuthenticationFailed, match="missing API key"):
        auth.check(settings, {}.get)
    assert auth.check(make_settings(), {}.get) == ""
    with pytest.raises(ConfigError, match="server.api_key"):
        auth.check_exposure(make_settings(server={"host": "0.0.0.0"}))
    auth.check_exposure(make_settings(server={"host": "0.0.0.0", "api_key": "k"}))
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        auth.check_exposure(make_settings(server={"host": host}))


def test_sse_event_format():
    raw = sse.event("ping", {"type": "ping"})
    assert raw == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert json.loads(sse.event("x", {"t": "é"}).split(b"data: ")[1]) == {"t": "é"}
