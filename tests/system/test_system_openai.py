"""The openai engine kind through the whole system, in front of a real OpenAI-compatible
server: mlx_lm.server (it ships with mlx-lm) serving the project's tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import anthropic
import pytest

from conftest import System, free_port
from searxng_fake import FakeSearxng
from anyclaude.tinymodel import ensure_tiny_model
from anyclaude import blas


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    model_dir = ensure_tiny_model(tmp_path_factory.mktemp("openai-models"))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlx_lm.server", "--model", str(model_dir),
                             "--host", "127.0.0.1", "--port", str(port)],
                            env=blas.engine_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/v1/models", timeout=2).read()
            break
        except OSError:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "mlx_lm.server did not start"
            time.sleep(0.3)
    yield url, model_dir
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def remote_system(upstream, tmp_path_factory):
    url, model_dir = upstream
    home = tmp_path_factory.mktemp("openai-system")
    searxng = FakeSearxng()
    models = f"""
[models.up]
kind = "openai"
path = "{model_dir}"
base_url = "{url}"
context_window = 8192
max_output_tokens = 64

[routes]
default = "up"
"""
    system = System(home, free_port(), searxng, model_dir, models=models)
    out = system.cli("up", "--detach", timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    yield system
    system.cli("down", timeout=120)
    searxng.close()


@pytest.fixture
def remote(remote_system):
    return anthropic.Anthropic(base_url=remote_system.url, api_key="sk-test", max_retries=0,
                               timeout=120)


def test_streamed_text_through_the_openai_kind(remote):
    with remote.messages.stream(model="claude-sonnet-4-6", max_tokens=16,
                                messages=[{"role": "user", "content": "hello"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.output_tokens > 0
    assert text == "".join(b.text for b in final.content if b.type == "text")


def test_count_tokens_matches_usage_through_the_openai_kind(remote):
    kwargs = dict(model="up", system="Be brief.",
                  messages=[{"role": "user", "content": "count these tokens"}])
    counted = remote.messages.count_tokens(**kwargs).input_tokens
    reply = remote.messages.create(max_tokens=8, **kwargs)
    u = reply.usage
    assert counted == u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens


def test_second_turn_reports_the_upstream_prefix_cache(remote):
    system = "You are a patient assistant. " * 40
    first = [{"role": "user", "content": "first question"}]
    a = remote.messages.create(model="up", max_tokens=8, system=system, messages=first)
    second = first + [{"role": "assistant", "content": a.content[0].text or "ok"},
                      {"role": "user", "content": "second question"}]
    b = remote.messages.create(model="up", max_tokens=8, system=system, messages=second)
    assert b.usage.cache_read_input_tokens > 0  # mlx_lm.server's cached_tokens, passed on


def test_errors_keep_their_anthropic_shape(remote):
    with pytest.raises(anthropic.NotFoundError):
        remote.messages.create(model="nope-model", max_tokens=8,
                               messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError) as info:
        remote.messages.create(model="up", max_tokens=8,
                               messages=[{"role": "user", "content": "word " * 20000}])
    assert "prompt is too long" in info.value.message
