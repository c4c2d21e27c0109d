"""The real engine process with openai-kind models, driven over the real bus:
- "up": mlx_lm.server serving the tiny model (a real OpenAI-compatible server);
- "fake": the scriptable fake upstream, for cancel and concurrency.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import pytest

from anyclaude import bus, errors, messages

from .bk_fake_server import FakeUpstream, Reply, anthropic_sse, delta, json_reply, openai_sse
from .conftest import make_request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"{what} exited: {proc.stderr.read() if proc.stderr else ''}"
        assert time.monotonic() < deadline, f"{what} did not become ready"
        time.sleep(0.2)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return reply.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    from anyclaude.tinymodel import ensure_tiny_model
    model = ensure_tiny_model(tmp_path_factory.mktemp("models"))
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlx_lm", "server", "--model", str(model),
                               "--port", str(port), "--log-level", "WARNING"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    fake = FakeUpstream()
    for path in ("/tokenize", "/apply-template", "/v1/messages/count_tokens"):
        fake.routes[path] = json_reply(404, {"error": "no"})
    home = tmp_path_factory.mktemp("home")
    (home / "anyclaude.toml").write_text(
        f'[models.up]\nkind = "openai"\nbase_url = "http://127.0.0.1:{port}/v1"\npath = "{model}"\n'
        f'context_window = 2048\nmax_output_tokens = 64\n'
        f'[models.fake]\nkind = "openai"\nbase_url = "{fake.url}"\npath = "m"\n'
        f'[models.remote]\nkind = "anthropic"\nbase_url = "{fake.url}"\npath = "claude-x"\n'
        f'[engine]\nqueue_size = 4\n[logging]\ndir = "{home / "logs"}"\n')
    run_dir = tempfile.mkdtemp(prefix="acb", dir="/tmp")
    env = {**os.environ, "ANYCLAUDE_RUN_DIR": run_dir, "ANYCLAUDE_CONFIG": str(home / "anyclaude.toml")}
    engines = [subprocess.Popen([sys.executable, "-m", "anyclaude.services.engine", "--model", name],
                                env=env, stderr=subprocess.PIPE, text=True)
               for name in ("up", "fake", "remote")]
    os.environ["ANYCLAUDE_RUN_DIR"] = run_dir
    clients = {name: bus.Client(f"engine-{name}") for name in ("up", "fake", "remote")}
    try:
        _wait("mlx_lm.server", lambda: _answers(f"http://127.0.0.1:{port}/v1/models"), server)
        for proc, (name, client) in zip(engines, clients.items()):
            def ready(client=client):   # a Count answers once the core is loaded
                try:
                    client.request(messages.Count(make_request()), timeout=5.0)
                    return True
                except errors.AnyclaudeError:
                    client.reset()
                    return False
            _wait(f"engine-{name}", ready, proc)
        yield {"clients": clients, "fake": fake, "model": model}
    finally:
        for client in clients.values():
            client.close()
        for proc in [*engines, server]:
            proc.terminate()
        for proc in [*engines, server]:
            proc.wait(15)
        fake.close()
        del os.environ["ANYCLAUDE_RUN_DIR"]


REQUEST = make_request("hello there", system=["be brief"], max_tokens=12)


def _collect(client, request):
    return list(client.stream(messages.Generate(request)))


def test_a_streamed_text_reply_from_mlx_lm_server(system):
    frames = _collect(system["clients"]["up"], REQUEST)
    assert isinstance(frames[0], messages.Accepted)
    text = "".join(e["text"] for f in frames if isinstance(f, messages.Delta) for e in f.events
                   if e["type"] == "text")
    assert text
    done = frames[-1]
    assert isinstance(done, messages.Done) and done.stop_reason in ("end_turn", "max_tokens")
    assert 1 <= done.usage["output_tokens"] <= 12


def test_count_equals_usage_and_the_second_turn_hits_the_servers_cache(system):
    client = system["clients"]["up"]
    counted = client.request(messages.Count(REQUEST), timeout=30)
    assert counted.context_window == 2048
    usage = _collect(client, REQUEST)[-1].usage
    assert usage["input_tokens"] + usage["cache_read_input_tokens"] == counted.input_tokens
    again = _collect(client, REQUEST)[-1].usage
    assert again["cache_read_input_tokens"] > 0
    assert again["input_tokens"] + again["cache_read_input_tokens"] == counted.input_tokens
    info = client.request(messages.Command("info"), timeout=5).data
    assert info["cache"]["hits"] >= 1 and info["completed"] >= 2


def test_cancel_over_the_bus_stops_the_upstream_read(system):
    fake = system["fake"]
    fake.push(Reply(pieces=openai_sse(*[delta(content=f"w{i} ") for i in range(500)]), pause=0.02))
    stream = system["clients"]["fake"].stream(messages.Generate(make_request()))
    assert isinstance(next(stream), messages.Accepted)
    assert isinstance(next(f for f in stream if isinstance(f, messages.Delta)), messages.Delta)
    stream.close()   # sends Cancel
    deadline = time.monotonic() + 10
    while fake.hangups < 1:
        assert time.monotonic() < deadline, "the upstream never saw the cancel"
        time.sleep(0.05)
    info = system["clients"]["fake"].request(messages.Command("info"), timeout=5).data
    assert info["cancelled"] >= 1


def test_upstream_requests_run_concurrently(system):
    fake = system["fake"]
    slow = Reply(pieces=openai_sse(*[delta(content="x") for _ in range(20)], delta(finish_reason="stop")),
                 pause=0.1)
    fake.push(slow, slow)
    firsts, results = {}, {}

    def one(name):
        client = bus.Client("engine-fake")
        try:
            for frame in client.stream(messages.Generate(make_request(name))):
                if isinstance(frame, messages.Delta) and name not in firsts:
                    firsts[name] = time.monotonic()
                if isinstance(frame, messages.Done):
                    results[name] = time.monotonic()
        finally:
            client.close()

    threads = [threading.Thread(target=one, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert set(results) == {"a", "b"}
    # each began streaming before the other finished: they ran side by side, not queued
    assert firsts["a"] < results["b"] and firsts["b"] < results["a"]


def test_an_anthropic_kind_engine_passes_the_stream_through(system):
    fake = system["fake"]
    fake.push(Reply(pieces=anthropic_sse(
        {"type": "message_start", "message": {"usage": {"input_tokens": 11, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "from afar"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": {"output_tokens": 3}},
        {"type": "message_stop"})))
    frames = _collect(system["clients"]["remote"], make_request("hi", model="remote"))
    assert [e for f in frames if isinstance(f, messages.Delta) for e in f.events] == [
        {"type": "text", "text": "from afar"}]
    assert frames[-1].usage["input_tokens"] == 11 and frames[-1].usage["output_tokens"] == 3
    assert fake.requests("/v1/messages")[-1].body["model"] == "claude-x"
