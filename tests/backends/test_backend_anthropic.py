"""The anthropic kind (passthrough) against a fake Messages API server - never the real one."""

from __future__ import annotations

import json

from anyclaude import messages
from anyclaude.services.engine.backends.anthropic_translate import messages_body
from anyclaude.services.engine.backends.backend_anthropic import AnthropicCore
from anyclaude.token_count import is_estimate

from .bk_fake_server import Reply, anthropic_sse, json_reply
from .conftest import BASH, READ, events_of, make_request, model_config, run, text_of

KEY = "sk-ant-test-0123456789"


def core_for(fake, monkeypatch, **cfg):
    monkeypatch.setenv("BK_ANTHROPIC_KEY", KEY)
    fields = dict(kind="anthropic", base_url=fake.url, path="claude-sonnet-4-5",
                  api_key_env="BK_ANTHROPIC_KEY", context_window=200000, max_output_tokens=16000, **cfg)
    return AnthropicCore("remote", model_config(**fields), delta_interval=0.0)


def stream(*blocks, stop="end_turn", stop_sequence=None, usage=None):
    """A canonical stream: message_start, ping, the given block events, message_delta, stop."""
    start_usage = usage or {"input_tokens": 100, "output_tokens": 1, "cache_read_input_tokens": 50,
                            "cache_creation_input_tokens": 7}
    events = [{"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                                    "content": [], "model": "claude-sonnet-4-5",
                                                    "stop_reason": None, "usage": start_usage}},
              {"type": "ping"}]
    for index, (block, deltas) in enumerate(blocks):
        events.append({"type": "content_block_start", "index": index, "content_block": block})
        events += [{"type": "content_block_delta", "index": index, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": index})
    events += [{"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": stop_sequence},
                "usage": {"output_tokens": 42}},
               {"type": "message_stop"}]
    return Reply(pieces=anthropic_sse(*events))


MIXED_HISTORY = [
    {"role": "user", "content": [
        {"type": "text", "text": "look at this"},
        {"type": "image", "media_type": "image/png", "data": "iVBOR"},
        {"type": "document", "media_type": "text/plain", "data": "notes", "title": "n.txt"}]},
    {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "local thought"},                 # no signature: dropped
        {"type": "thinking", "thinking": "remote", "signature": "sig-abc"},  # kept
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "Running it."},
        {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "ls"}}]},
    {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_01", "is_error": True,
         "content": [{"type": "text", "text": "denied"}]},
        {"type": "text", "text": "try again"}]},
    {"role": "system", "content": [{"type": "text", "text": "be careful"}]},
]


def test_the_request_arrives_as_expected(fake, monkeypatch):
    fake.push(stream(({"type": "text", "text": ""}, [{"type": "text_delta", "text": "ok"}])))
    request = make_request(system=["first", "second"], messages=MIXED_HISTORY, tools=[BASH, READ],
                           tool_choice={"type": "auto", "disable_parallel_tool_use": True},
                           stop_sequences=["###"], temperature=0.3, top_p=0.8, top_k=5, max_tokens=64000)
    run(core_for(fake, monkeypatch), request)
    (seen,) = fake.requests()
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == KEY and seen.headers["anthropic-version"] == "2023-06-01"
    cache = {"type": "ephemeral"}
    assert seen.body == {
        "model": "claude-sonnet-4-5", "max_tokens": 16000, "stream": True,
        "system": [{"type": "text", "text": "first"}, {"type": "text", "text": "second", "cache_control": cache}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "look at this"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                {"type": "document", "title": "n.txt", "cache_control": cache,
                 "source": {"type": "text", "media_type": "text/plain", "data": "notes"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "remote", "signature": "sig-abc"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Running it."},
                {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "ls"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "is_error": True,
                 "content": [{"type": "text", "text": "denied"}]},
                {"type": "text", "text": "try again", "cache_control": cache}]},
            {"role": "system", "content": [{"type": "text", "text": "be careful"}]}],
        "tools": [{"name": "Bash", "description": "Run a shell command.", "input_schema": BASH["input_schema"]},
                  {"name": "Read", "description": "Read a file.", "input_schema": READ["input_schema"],
                   "cache_control": cache}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "stop_sequences": ["###"], "temperature": 0.3, "top_p": 0.8, "top_k": 5}


def test_thinking_is_requested_and_turned_off_in_a_tool_loop_without_a_signed_block(fake, monkeypatch):
    core = core_for(fake, monkeypatch)
    fake.push(stream(), stream())
    run(core, make_request(thinking=True, temperature=0.5, top_k=3, max_tokens=8000))
    first = fake.requests()[0].body
    assert first["thinking"] == {"type": "enabled", "budget_tokens": 4000}
    assert "temperature" not in first and "top_k" not in first
    loop = [{"role": "user", "content": [{"type": "text", "text": "go"}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "local"},
                                              {"type": "tool_use", "id": "t", "name": "Bash", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": []}]}]
    run(core, make_request(thinking=True, messages=loop, max_tokens=8000))
    assert "thinking" not in fake.requests()[1].body


def test_streamed_content_arrives_unchanged(fake, monkeypatch):
    text = "Héllo, wörld! ✓ {\"not\": json}"
    fake.push(stream(
        ({"type": "thinking", "thinking": "", "signature": ""},
         [{"type": "thinking_delta", "thinking": "I should "}, {"type": "thinking_delta", "thinking": "list."},
          {"type": "signature_delta", "signature": "EqQBCg"}]),
        ({"type": "text", "text": ""}, [{"type": "text_delta", "text": text[:7]},
                                        {"type": "text_delta", "text": text[7:]}]),
        ({"type": "tool_use", "id": "toolu_01ABC", "name": "Bash", "input": {}},
         [{"type": "input_json_delta", "partial_json": ""},
          {"type": "input_json_delta", "partial_json": '{"command": "l'},
          {"type": "input_json_delta", "partial_json": 's -la"}'}]),
        ({"type": "tool_use", "id": "toolu_02", "name": "Read", "input": {}}, []),
        stop="tool_use"))
    frames = run(core_for(fake, monkeypatch), make_request(thinking=True, tools=[BASH, READ]))
    assert text_of(frames, "thinking") == "I should list." and text_of(frames) == text
    tools = [e for e in events_of(frames) if e["type"].startswith("tool")]
    assert tools == [{"type": "tool_start", "id": "toolu_01ABC", "name": "Bash"},
                     {"type": "tool_args", "json": '{"command": "ls -la"}'}, {"type": "tool_end"},
                     {"type": "tool_start", "id": "toolu_02", "name": "Read"},
                     {"type": "tool_args", "json": "{}"}, {"type": "tool_end"}]
    done = frames[-1]
    assert done.stop_reason == "tool_use" and done.stop_sequence is None
    assert done.usage == {"input_tokens": 100, "output_tokens": 42, "cache_read_input_tokens": 50,
                          "cache_creation_input_tokens": 7}


def test_thinking_is_dropped_when_not_asked_and_stop_sequences_pass(fake, monkeypatch):
    fake.push(stream(({"type": "thinking", "thinking": ""}, [{"type": "thinking_delta", "thinking": "x"}]),
                     ({"type": "text", "text": "before"}, []), stop="stop_sequence", stop_sequence="###"))
    frames = run(core_for(fake, monkeypatch), make_request())
    assert [e["type"] for e in events_of(frames)] == ["text"] and text_of(frames) == "before"
    assert frames[-1].stop_reason == "stop_sequence" and frames[-1].stop_sequence == "###"


def test_errors_keep_their_meaning(fake, monkeypatch):
    core = core_for(fake, monkeypatch)
    def api_error(status, kind, message, **headers):
        return json_reply(status, {"type": "error", "error": {"type": kind, "message": message}},
                          headers=headers)

    fake.push(api_error(429, "rate_limit_error", "slow", **{"retry-after": "12"}),
              api_error(529, "overloaded_error", "busy"),
              api_error(400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"),
              api_error(404, "not_found_error", "model: claude-x"),
              api_error(401, "authentication_error", "invalid x-api-key"))
    found = [run(core, make_request())[-1] for _ in range(5)]
    assert [(e.type, e.retryable) for e in found] == [
        ("rate_limit", True), ("overloaded", True), ("prompt_too_long", False), ("not_found", False),
        ("authentication", False)]
    assert "retry after 12 s" in found[0].message
    assert found[2].message == "prompt is too long: 210000 tokens > 200000 maximum"
    assert found[3].message == "model: claude-x"
    assert "$BK_ANTHROPIC_KEY" in found[4].message and KEY not in found[4].message


def test_an_error_event_mid_stream(fake, monkeypatch):
    events = [{"type": "message_start", "message": {"usage": {"input_tokens": 3}}},
              {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "par"}},
              {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}]
    fake.push(Reply(pieces=anthropic_sse(*events)))
    frames = run(core_for(fake, monkeypatch), make_request())
    assert text_of(frames) == "par"
    assert frames[-1].type == "overloaded" and not frames[-1].retryable   # text already went out


def test_trace_files_hold_no_key(fake, monkeypatch, tmp_path):
    fake.push(stream(({"type": "text", "text": ""}, [{"type": "text_delta", "text": "traced"}])))
    core = core_for(fake, monkeypatch, trace_dir=str(tmp_path))
    run(core, make_request(f"echo {KEY}"))
    (path,) = tmp_path.iterdir()
    text = path.read_text()
    assert KEY not in text and "traced" in text and "[redacted]" in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["headers"]["x-api-key"] == "[redacted]"
    assert lines[0]["body"]["model"] == "claude-sonnet-4-5" and lines[-1]["kind"] == "end"


def test_count_uses_count_tokens_and_estimates_when_it_fails(fake, monkeypatch):
    core = core_for(fake, monkeypatch)
    fake.routes["/v1/messages/count_tokens"] = json_reply(200, {"input_tokens": 1234})
    exact = core.count(make_request(tools=[BASH]))
    assert exact == 1234 and not is_estimate(exact)
    seen = fake.requests("/count_tokens")[0]
    assert "max_tokens" not in seen.body and "stream" not in seen.body and seen.body["tools"][0]["name"] == "Bash"
    fake.routes["/v1/messages/count_tokens"] = json_reply(500, {"error": {"message": "down"}})
    guessed = core.count(make_request("x" * 700))
    assert guessed > 150 and is_estimate(guessed)


def test_a_stream_that_ends_before_message_stop(fake, monkeypatch):
    fake.push(Reply(pieces=anthropic_sse({"type": "message_start", "message": {"usage": {}}})))
    frames = run(core_for(fake, monkeypatch), make_request())
    assert isinstance(frames[-1], messages.Error) and "message_stop" in frames[-1].message


def test_web_search_blocks_of_the_local_bridge_go_up_as_text():
    """Their encrypted_content is not Anthropic's, so the real API gets titles and URLs."""
    body = messages_body(make_request(messages=[
        {"role": "user", "content": [{"type": "text", "text": "search"}]},
        {"role": "assistant", "content": [
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
             "input": {"query": "q"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [
                {"type": "web_search_result", "url": "https://a", "title": "A",
                 "encrypted_content": "local"}]},
            {"type": "server_tool_use", "id": "srvtoolu_2", "name": "web_search", "input": {}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_2",
             "content": {"type": "web_search_tool_result_error", "error_code": "unavailable"}},
            {"type": "text", "text": "found"}]}]), model_name="m", max_tokens=4000, cache=False)
    assert body["messages"][1]["content"] == [
        {"type": "text", "text": "(searched the web for: q)"},
        {"type": "text", "text": "Web search results:\n- A (https://a)"},
        {"type": "text", "text": "(searched the web for: )"},
        {"type": "text", "text": "(web search failed: unavailable)"},
        {"type": "text", "text": "found"}]
