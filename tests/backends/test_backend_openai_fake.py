"""OpenAICore against a fake OpenAI-compatible server over real HTTP: streaming shapes,
upstream errors, retries with a changed body, cancel, counting and traces."""

from __future__ import annotations

import json
import threading
import time

import pytest

from anyclaude import messages
from anyclaude.services.engine.backends.backend_openai import OpenAICore
from anyclaude.token_count import is_estimate

from .bk_fake_server import Reply, delta, json_reply, openai_sse, usage_chunk
from .conftest import BASH, READ, events_of, make_request, model_config, run, text_of


def core_for(fake, **cfg):
    fields = dict(kind="openai", base_url=fake.url + "/v1", path="served-model",
                  context_window=4096, max_output_tokens=1000, **cfg)
    return OpenAICore("up", model_config(**fields), delta_interval=0.0)


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_text_usage_and_the_request_sent(fake):
    fake.push(Reply(pieces=openai_sse(delta(role="assistant", content="Hel"), delta(content="lo"),
                                      delta(finish_reason="stop"), usage_chunk(120, 2, cached=100))))
    frames = run(core_for(fake), make_request("hi", max_tokens=5000, temperature=0.5))
    assert text_of(frames) == "Hello"
    done = frames[-1]
    assert isinstance(done, messages.Done) and done.stop_reason == "end_turn"
    assert done.usage == {"input_tokens": 20, "output_tokens": 2, "cache_read_input_tokens": 100,
                          "cache_creation_input_tokens": 0}
    (seen,) = fake.requests()
    assert seen.path == "/v1/chat/completions"
    assert seen.body["model"] == "served-model" and seen.body["max_tokens"] == 1000   # clamped
    assert seen.body["temperature"] == 0.5 and seen.body["stream"] is True
    assert "authorization" not in seen.headers


def test_a_chunked_stream_split_mid_line(fake):
    raw = b"".join(openai_sse(delta(content="one "), delta(content="two"), delta(finish_reason="stop"),
                              usage_chunk(5, 2)))
    fake.push(Reply(pieces=[raw[i:i + 7] for i in range(0, len(raw), 7)], chunked=True))
    frames = run(core_for(fake), make_request())
    assert text_of(frames) == "one two" and frames[-1].usage["output_tokens"] == 2


def test_the_key_goes_as_a_bearer_token_and_a_missing_one_is_named(fake, monkeypatch):
    monkeypatch.setenv("BK_TEST_KEY", "sk-secret-123")
    run(core_for(fake, api_key_env="BK_TEST_KEY"), make_request())
    assert fake.requests()[0].headers["authorization"] == "Bearer sk-secret-123"
    monkeypatch.delenv("BK_TEST_KEY")
    frames = run(core_for(fake, api_key_env="BK_TEST_KEY"), make_request())
    assert frames[-1].type == "authentication" and "BK_TEST_KEY" in frames[-1].message


def test_a_split_tool_call_through_http(fake):
    fake.push(Reply(pieces=openai_sse(
        delta(tool_calls=[{"index": 0, "id": "call_1", "type": "function",
                           "function": {"name": "Bash", "arguments": ""}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": '{"command":'}}]),
        delta(tool_calls=[{"function": {"arguments": ' "ls"}'}}]),
        delta(tool_calls=[{"index": 1, "id": "call_2", "function": {"name": "Read", "arguments": '{"path": "a"}'}}]),
        delta(finish_reason="tool_calls"), usage_chunk(50, 9))))
    frames = run(core_for(fake), make_request(tools=[BASH, READ]))
    events = events_of(frames)
    assert [e["type"] for e in events] == ["tool_start", "tool_args", "tool_end"] * 2
    assert [json.loads(e["json"]) for e in events if e["type"] == "tool_args"] == [
        {"command": "ls"}, {"path": "a"}]
    assert frames[-1].stop_reason == "tool_use"


def test_reasoning_is_thinking_when_asked(fake):
    fake.push(Reply(pieces=openai_sse(delta(reasoning_content="why"), delta(reasoning=" not"),
                                      delta(content="done", finish_reason="stop"))))
    frames = run(core_for(fake), make_request(thinking=True))
    assert text_of(frames, "thinking") == "why not" and text_of(frames) == "done"


def test_usage_is_estimated_when_the_server_sends_none(fake):
    fake.push(Reply(pieces=openai_sse(delta(content="x" * 35, finish_reason="stop"))))
    frames = run(core_for(fake), make_request())
    usage = frames[-1].usage
    assert usage["input_tokens"] > 0 and usage["output_tokens"] == 11 and usage["cache_read_input_tokens"] == 0


def test_a_server_that_ignores_stream_and_answers_json(fake):
    fake.push(json_reply(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"},
                                            "finish_reason": "length"}],
                               "usage": {"prompt_tokens": 7, "completion_tokens": 3}}))
    frames = run(core_for(fake), make_request())
    assert text_of(frames) == "whole" and frames[-1].stop_reason == "max_tokens"
    assert frames[-1].usage["input_tokens"] == 7


def test_429_is_rate_limit_with_retry_after(fake):
    fake.push(json_reply(429, {"error": {"message": "slow down"}}, headers={"retry-after": "7"}))
    (error,) = run(core_for(fake), make_request())
    assert isinstance(error, messages.Error)
    assert error.type == "rate_limit" and error.retryable
    assert "retry after 7 s" in error.message and "slow down" in error.message


def test_500_is_a_retryable_engine_error(fake):
    fake.push(json_reply(500, {"error": "boom"}))
    (error,) = run(core_for(fake), make_request())
    assert error.type == "engine" and error.retryable and "boom" in error.message


def test_connection_refused_is_overloaded(fake):
    core = core_for(fake)
    fake.close()
    (error,) = run(core, make_request())
    assert error.type == "overloaded" and error.retryable and "refused" in error.message


def test_401_names_the_key_variable(fake, monkeypatch):
    monkeypatch.setenv("BK_TEST_KEY", "sk-bad-key-9")
    fake.push(json_reply(401, {"error": {"message": "invalid api key"}}))
    (error,) = run(core_for(fake, api_key_env="BK_TEST_KEY"), make_request())
    assert error.type == "authentication" and not error.retryable
    assert "$BK_TEST_KEY" in error.message and "sk-bad-key-9" not in error.message


@pytest.mark.parametrize("payload", [
    {"error": {"message": "This model's maximum context length is 4096 tokens. However, your "
                          "messages resulted in 5000 tokens. Please reduce the length of the messages."}},
    {"error": {"code": 400, "message": "the request exceeds the available context size, try increasing it",
               "type": "exceed_context_size_error", "n_prompt_tokens": 5000, "n_ctx": 4096}},
])
def test_a_context_overflow_becomes_prompt_too_long(fake, payload):
    fake.push(json_reply(400, payload))
    (error,) = run(core_for(fake), make_request())
    assert error.type == "prompt_too_long"
    assert error.message == "prompt is too long: 5000 tokens > 4096 maximum"


def test_prompt_plus_max_tokens_overflow_is_retried_with_the_room_left(fake):
    fake.push(json_reply(400, {"error": {"message": "This model's maximum context length is 4096 tokens. "
                                                    "However, you requested 4600 tokens (3600 in the "
                                                    "messages, 1000 in the completion)."}}))
    frames = run(core_for(fake), make_request(max_tokens=1000))
    assert isinstance(frames[-1], messages.Done)
    first, second = fake.requests()
    assert first.body["max_tokens"] == 1000 and second.body["max_tokens"] == 496


def test_max_completion_tokens_when_the_server_insists(fake):
    fake.push(json_reply(400, {"error": {"message": "Unsupported parameter: 'max_tokens' is not supported "
                                                    "with this model. Use 'max_completion_tokens' instead."}}))
    core = core_for(fake)
    assert isinstance(run(core, make_request())[-1], messages.Done)
    first, second = fake.requests()
    assert "max_tokens" in first.body and second.body["max_completion_tokens"] == 32
    assert "max_tokens" not in second.body
    run(core, make_request())     # remembered: no second refusal needed
    assert "max_completion_tokens" in fake.requests()[2].body


def test_a_template_that_refuses_system_turns_gets_them_merged(fake):
    fake.push(json_reply(400, {"error": "System message must be at the beginning."}))
    request = make_request(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}]},
                                     {"role": "system", "content": [{"type": "text", "text": "b"}]}])
    assert isinstance(run(core_for(fake), request)[-1], messages.Done)
    assert [m["role"] for m in fake.requests()[1].body["messages"]] == ["system", "user"]


def test_other_400s_are_invalid_requests(fake):
    fake.push(json_reply(400, {"detail": "bad tools"}))
    (error,) = run(core_for(fake), make_request())
    assert error.type == "invalid_request" and "bad tools" in error.message


def test_an_error_inside_the_stream(fake):
    fake.push(Reply(pieces=openai_sse(delta(content="part"), {"error": {"message": "oom", "code": 500}},
                                      done=False)))
    frames = run(core_for(fake), make_request())
    assert text_of(frames) == "part"
    assert frames[-1].type == "engine" and not frames[-1].retryable   # output already went out


def test_a_stream_cut_short_is_an_error(fake):
    fake.push(Reply(pieces=openai_sse(delta(content="par"), done=False)))
    frames = run(core_for(fake), make_request())
    assert frames[-1].type == "engine" and "before it finished" in frames[-1].message


def test_cancel_stops_the_upstream_read(fake):
    pieces = openai_sse(*[delta(content=f"w{i} ") for i in range(400)], delta(finish_reason="stop"))
    fake.push(Reply(pieces=pieces, pause=0.02))
    cancel = threading.Event()
    frames = []

    def emit(msg):
        frames.append(msg)
        if isinstance(msg, messages.Delta):
            cancel.set()

    worker = threading.Thread(target=core_for(fake).generate, args=(make_request(), emit, cancel.is_set))
    worker.start()
    worker.join(10)
    assert not worker.is_alive()
    assert frames[-1].type == "cancelled"
    wait_for(lambda: fake.hangups == 1)   # the server saw the client go away mid-stream


def test_keepalives_while_the_server_is_silent(fake):
    fake.push(Reply(pieces=[b": keepalive 5/10\n\n", *openai_sse(delta(content="late", finish_reason="stop"))],
                    pause=0.7))
    core = core_for(fake)
    core.keepalive_s = 0.2
    frames = run(core, make_request())
    progress = [f for f in frames if isinstance(f, messages.Progress)]
    assert messages.Progress(5, 10) in progress        # mlx_lm.server's own keepalive
    assert messages.Progress(0, 0) in progress         # ours while waiting
    assert text_of(frames) == "late"


def test_a_local_stop_sequence_ends_the_stream(fake):
    fake.push(Reply(pieces=openai_sse(delta(content="alpha EN"), delta(content="D beta"),
                                      *[delta(content="more") for _ in range(100)]), pause=0.01))
    frames = run(core_for(fake), make_request(stop_sequences=["END"]))
    assert text_of(frames) == "alpha "
    assert frames[-1].stop_reason == "stop_sequence" and frames[-1].stop_sequence == "END"


# --- count -------------------------------------------------------------------------------

def test_count_with_a_vllm_style_tokenize_endpoint(fake):
    fake.routes["/tokenize"] = json_reply(200, {"count": 321, "max_model_len": 4096, "tokens": []})
    core = core_for(fake)
    assert core.count(make_request(tools=[BASH])) == 321
    seen = fake.requests("/tokenize")[0]
    assert seen.body["add_generation_prompt"] is True and seen.body["tools"][0]["function"]["name"] == "Bash"
    assert core.count(make_request()) == 321 and core.counter.method == "vllm"


def test_count_with_llama_cpp_endpoints(fake):
    def tokenize(body):
        # As the real llama-server does (checked in tests/system/test_llama_server.py): a body
        # without "content" (vLLM's chat-messages form) is tokenized as "", 200 {"tokens": []}.
        # This fake once answered 500 there, which hid that every count came out 0 (#20).
        return json_reply(200, {"tokens": list(range(len(body.get("content", ""))))})

    fake.routes["/v1/chat/completions/input_tokens"] = json_reply(404, {"error": "older server"})
    fake.routes["/tokenize"] = tokenize
    fake.routes["/apply-template"] = lambda body: json_reply(
        200, {"prompt": "<s>" + body["messages"][-1]["content"]})
    core = core_for(fake)
    counted = core.count(make_request("hello"))
    assert counted == len("<s>hello") and not is_estimate(counted)
    assert core.counter.method == "llamacpp"
    assert core.count(make_request("hi!")) == len("<s>hi!")


def test_count_with_llama_server_input_tokens(fake):
    fake.routes["/v1/chat/completions/input_tokens"] = lambda body: json_reply(
        200, {"input_tokens": 7 + len(body["messages"]) + len(body.get("tools", [])),
              "object": "response.input_tokens"})
    core = core_for(fake)
    assert core.count(make_request("hello", tools=[BASH])) == 7 + 2 + 1   # system + user, 1 tool
    assert core.counter.method == "input_tokens" and not fake.requests("/tokenize")


def test_count_falls_back_to_an_estimate_and_stops_asking(fake):
    core = core_for(fake)
    fake.routes["/tokenize"] = json_reply(404, {"error": "not found"})
    fake.routes["/apply-template"] = json_reply(404, {"error": "not found"})
    first = core.count(make_request("x" * 350))
    assert first > 100 and is_estimate(first)
    asked = len(fake.requests())
    core.count(make_request())
    assert core.counter.method == "none" and len(fake.requests()) == asked


# --- traces ------------------------------------------------------------------------------

def test_trace_files_hold_the_exchange_without_the_key(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("BK_TEST_KEY", "sk-very-secret-42")
    fake.push(Reply(pieces=openai_sse(delta(content="traced", finish_reason="stop"))))
    request = make_request("my key is sk-very-secret-42")
    run(core_for(fake, api_key_env="BK_TEST_KEY", trace_dir=str(tmp_path / "traces")), request)
    (path,) = (tmp_path / "traces").iterdir()
    text = path.read_text()
    assert "sk-very-secret-42" not in text and "traced" in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["kind"] == "request" and lines[0]["headers"]["authorization"] == "[redacted]"
    assert lines[-1]["kind"] == "end"
