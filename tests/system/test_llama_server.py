"""Both remote kinds through the whole system, in front of a real llama.cpp llama-server
(SmolLM2-135M-Instruct Q4_1, ``--jinja``), built by scripts/build_llama_server.

    lo  kind "openai"     -> llama-server's /v1/chat/completions
    la  kind "anthropic"  -> llama-server's native /v1/messages (passthrough)

Both go through tests/system/fault_proxy.py, which passes everything through unchanged and
can break one generation on purpose (an HTTP error, a stream cut mid-way). Counts are checked
against llama-server's own count of the same prompt. Where the binary is missing these tests
skip, and tests/system/llama_report.py says so in red at the end of the run.
"""

from __future__ import annotations

import json
import os
import urllib.request

import anthropic
import pytest

from conftest import System, free_port
from fault_proxy import FaultProxy
from searxng_fake import FakeSearxng
from anyclaude import llamaserver

KINDS = ["lo", "la"]
SYSTEM = "You are a helpful assistant. Answer in one short sentence."
WEATHER = {"name": "get_weather", "description": "Get the current weather for a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    reason = llamaserver.missing()
    if os.environ.get("ANYCLAUDE_LLAMA_TESTS") == "off":
        reason = "turned off by ANYCLAUDE_LLAMA_TESTS=off"
    if reason:
        pytest.skip(reason)
    log = tmp_path_factory.mktemp("llama") / "llama-server.log"
    with llamaserver.LlamaServer(ctx=2048, parallel=2, log_path=log) as server:
        proxy = FaultProxy(server.url)
        yield server, proxy
        proxy.close()


@pytest.fixture(scope="module")
def system(llama, tmp_path_factory):
    server, proxy = llama
    home = tmp_path_factory.mktemp("llama-system")
    searxng = FakeSearxng()
    models = f"""
[models.lo]
kind = "openai"
base_url = "{proxy.url}/v1"
path = "smollm2"
context_window = 2048
max_output_tokens = 128

[models.la]
kind = "anthropic"
base_url = "{proxy.url}"
path = "smollm2"
context_window = 2048
max_output_tokens = 128

[models.gone]
kind = "openai"
base_url = "http://127.0.0.1:{free_port()}/v1"
path = "nothing-listens-here"
context_window = 2048

[routes]
default = "lo"
"""
    system = System(home, free_port(), searxng, home, models=models)
    out = system.cli("up", "--detach", timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    yield system
    system.cli("down", timeout=120)
    searxng.close()


@pytest.fixture
def client(system):
    return anthropic.Anthropic(base_url=system.url, api_key="sk-test", max_retries=0, timeout=120)


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read())


def total_input(usage) -> int:
    return (usage.input_tokens + (usage.cache_read_input_tokens or 0)
            + (usage.cache_creation_input_tokens or 0))


# --- text and streaming --------------------------------------------------------------------

@pytest.mark.parametrize("model", KINDS)
def test_text(client, model):
    reply = client.messages.create(model=model, max_tokens=24, system=SYSTEM,
                                   messages=[{"role": "user", "content": "Say hello."}])
    assert reply.stop_reason in ("end_turn", "max_tokens")
    assert reply.content[0].type == "text" and reply.content[0].text.strip()
    assert reply.usage.output_tokens > 0 and total_input(reply.usage) > 10


@pytest.mark.parametrize("model", KINDS)
def test_streaming(client, model):
    with client.messages.stream(model=model, max_tokens=24, system=SYSTEM,
                                messages=[{"role": "user", "content": "Count to five."}]) as s:
        pieces = list(s.text_stream)
        final = s.get_final_message()
    assert len(pieces) > 1   # it really streamed
    assert "".join(pieces) == "".join(b.text for b in final.content if b.type == "text")
    assert final.stop_reason in ("end_turn", "max_tokens") and final.usage.output_tokens > 0


# --- count_tokens: equal to llama-server's own count ---------------------------------------

def test_count_tokens_openai_kind_equals_llama_servers_count(client, system, llama):
    server, _ = llama
    messages = [{"role": "user", "content": "How many tokens is this question?"}]
    answer = client.messages.with_raw_response.count_tokens(model="lo", system=SYSTEM,
                                                            messages=messages)
    counted = answer.parse().input_tokens
    assert answer.headers["anyclaude-token-count"] == "exact"
    chat = [{"role": "system", "content": SYSTEM}, *messages]
    prompt = post(f"{server.url}/apply-template", {"messages": chat})["prompt"]
    tokens = post(f"{server.url}/tokenize", {"content": prompt, "add_special": True})["tokens"]
    assert counted == len(tokens) > 10
    reply = client.messages.create(model="lo", max_tokens=4, system=SYSTEM, messages=messages)
    assert counted == total_input(reply.usage)   # what the server then really read


def test_count_tokens_anthropic_kind_equals_llama_servers_count(client, llama):
    server, _ = llama
    body = {"model": "la", "system": SYSTEM, "tools": [WEATHER],
            "messages": [{"role": "user", "content": "What is the weather in Oslo?"}]}
    answer = client.messages.with_raw_response.count_tokens(**body)
    counted = answer.parse().input_tokens
    assert answer.headers["anyclaude-token-count"] == "exact"
    own = post(f"{server.url}/v1/messages/count_tokens", {**body, "model": "smollm2"})
    assert counted == own["input_tokens"] > 10


def test_count_tokens_says_when_it_is_an_estimate(client):
    answer = client.messages.with_raw_response.count_tokens(
        model="gone", messages=[{"role": "user", "content": "nobody can tokenize this " * 20}])
    assert answer.parse().input_tokens > 50
    assert answer.headers["anyclaude-token-count"] == "estimate"


# --- tools, thinking, cache ----------------------------------------------------------------

@pytest.mark.parametrize("model", KINDS)
def test_tool_round_trip(client, model):
    # SmolLM2's chat template has no tool-call format: llama-server answers it in text even
    # with tool_choice "required" (checked directly), so the call itself is given here as
    # the history, and the round trip is the tool_use / tool_result pair going upstream.
    first = [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]
    offered = client.messages.create(model=model, max_tokens=16, tools=[WEATHER], messages=first)
    assert offered.stop_reason in ("end_turn", "max_tokens", "tool_use") and offered.content
    use = {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}
    result = {"type": "tool_result", "tool_use_id": "toolu_01", "content": "Sunny, 21 degrees."}
    answer = client.messages.create(
        model=model, max_tokens=24, tools=[WEATHER],
        messages=[*first, {"role": "assistant", "content": [use]},
                  {"role": "user", "content": [result]}])
    assert answer.stop_reason in ("end_turn", "max_tokens", "tool_use") and answer.content
    assert total_input(answer.usage) > total_input(offered.usage)   # the pair was sent


@pytest.mark.parametrize("model", KINDS)
def test_thinking_request_is_answered(client, model):
    # SmolLM2's template has no reasoning: a request that allows thinking still gets its
    # answer, and no thinking block is made up.
    reply = client.messages.create(model=model, max_tokens=64,
                                   thinking={"type": "enabled", "budget_tokens": 32},
                                   messages=[{"role": "user", "content": "Say yes."}])
    assert any(b.type == "text" for b in reply.content)
    assert all(b.type in ("text", "thinking") for b in reply.content)


@pytest.mark.parametrize("model", KINDS)
def test_second_turn_reports_llama_servers_cache(client, model):
    system = f"{model}: you are a patient assistant who answers briefly. " * 30
    first = [{"role": "user", "content": "first question"}]
    a = client.messages.create(model=model, max_tokens=8, system=system, messages=first)
    second = [*first, {"role": "assistant", "content": a.content[0].text or "ok"},
              {"role": "user", "content": "second question"}]
    b = client.messages.create(model=model, max_tokens=8, system=system, messages=second)
    assert b.usage.cache_read_input_tokens > 100   # the system prompt came from its cache


# --- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("model", KINDS)
def test_upstream_4xx_keeps_its_anthropic_shape(client, llama, model):
    _, proxy = llama
    proxy.fail_next(400)
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model=model, max_tokens=8,
                               messages=[{"role": "user", "content": "x"}])
    assert "injected HTTP 400" in info.value.message


@pytest.mark.parametrize("model", KINDS)
def test_upstream_5xx_is_a_retryable_server_error(client, llama, model):
    _, proxy = llama
    proxy.fail_next(500)
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model=model, max_tokens=8,
                               messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code >= 500


def test_a_prompt_over_the_context_is_prompt_too_long(client):
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model="lo", max_tokens=8,
                               messages=[{"role": "user", "content": "word " * 5000}])
    assert "prompt is too long" in info.value.message


def test_an_unreachable_upstream_is_overloaded(client):
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model="gone", max_tokens=8,
                               messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code in (503, 529)


@pytest.mark.parametrize("model", KINDS)
def test_a_stream_cut_midway_ends_in_an_error_event(client, llama, model):
    _, proxy = llama
    proxy.cut_next(after=600)
    with pytest.raises(anthropic.APIError):
        with client.messages.stream(model=model, max_tokens=120,
                                    messages=[{"role": "user", "content": "Tell a story."}]) as s:
            for _ in s.text_stream:
                pass
            s.get_final_message()
    assert proxy.fired and proxy.fired[-1].startswith("cut:600")
