"""The engine as a process: real mlx-lm on the tiny model, driven over the real bus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from anyclaude import bus, errors, messages
from engine_helpers import BASH_TOOL, make_request


@pytest.fixture(scope="module")
def engine(tiny_model_dir, tmp_path_factory):
    run_dir = tempfile.mkdtemp(prefix="ace", dir="/tmp")
    home = tmp_path_factory.mktemp("engine-home")
    force = home / "force.json"
    force.write_text(json.dumps({"rules": []}))
    (home / "anyclaude.toml").write_text(
        f'[models.tiny]\npath = "{tiny_model_dir}"\ncontext_window = 2048\nmax_output_tokens = 64\n'
        f'concurrency = 2\n'
        f'[engine]\nqueue_size = 2\nprefill_step_size = 64\nforce_file = "{force}"\n'
        f'[logging]\ndir = "{home / "logs"}"\n')
    env = {**os.environ, "ANYCLAUDE_RUN_DIR": run_dir,
           "ANYCLAUDE_CONFIG": str(home / "anyclaude.toml"), "XDG_CACHE_HOME": str(home / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "anyclaude.services.engine", "--model", "tiny"],
                            env=env, stderr=subprocess.PIPE, text=True)
    os.environ["ANYCLAUDE_RUN_DIR"] = run_dir
    client = bus.Client("engine-tiny")
    deadline = time.monotonic() + 120
    while True:  # ready once it answers a Count (the model is loaded)
        try:
            client.request(messages.Count(make_request()), timeout=1.0)
            break
        except errors.AnyclaudeError:
            client.reset()
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "engine did not become ready"
            time.sleep(0.2)
    yield {"client": client, "force": force, "proc": proc}
    client.close()
    proc.terminate()
    proc.wait(10)
    del os.environ["ANYCLAUDE_RUN_DIR"]


def say(engine, text, match=""):
    engine["force"].write_text(json.dumps({"rules": [{"match": match, "say": text}]}))


def collect(client, request):
    return list(client.stream(messages.Generate(request)))


def test_count_equals_usage_input_tokens(engine):
    request = make_request("count me please", tools=[BASH_TOOL])
    counted = engine["client"].request(messages.Count(request), timeout=10)
    frames = collect(engine["client"], request)
    done = frames[-1]
    assert isinstance(done, messages.Done)
    assert counted.input_tokens == (done.usage["input_tokens"] + done.usage["cache_read_input_tokens"]
                                    + done.usage["cache_creation_input_tokens"])
    assert counted.context_window == 2048


def test_forced_tool_call_streams_as_events(engine):
    say(engine, 'Let me look.<tool_call>{"name": "Bash", "arguments": {"command": "ls -la"}}</tool_call>')
    frames = collect(engine["client"], make_request("list files", tools=[BASH_TOOL]))
    assert isinstance(frames[0], messages.Accepted)
    events = [e for f in frames if isinstance(f, messages.Delta) for e in f.events]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "text" and "tool_start" in kinds and kinds[-1] == "tool_end"
    args = "".join(e["json"] for e in events if e["type"] == "tool_args")
    assert json.loads(args) == {"command": "ls -la"}
    assert frames[-1].stop_reason == "tool_use"


def test_progress_frames_during_prefill(engine):
    say(engine, "ok")
    long_text = " ".join(f"word{i}" for i in range(400))
    frames = collect(engine["client"], make_request(long_text))
    progress = [f for f in frames if isinstance(f, messages.Progress)]
    assert len(progress) >= 2
    assert progress[-1].processed == progress[-1].total


def test_cancel_mid_generation_frees_the_engine(engine):
    engine["force"].write_text(json.dumps({"rules": []}))
    client = engine["client"]
    request = make_request("go on and on", max_tokens=64)
    stream = client.stream(messages.Generate(request))
    first = next(stream)
    assert isinstance(first, messages.Accepted)
    stream.close()  # sends Cancel
    say(engine, "after cancel")
    frames = collect(client, make_request("next"))
    text = "".join(e["text"] for f in frames if isinstance(f, messages.Delta) for e in f.events)
    assert text == "after cancel"
    info = client.request(messages.Command("info"), timeout=2).data
    assert info["cancelled"] >= 1


def test_queue_overflow_is_overloaded(engine):
    engine["force"].write_text(json.dumps({"rules": []}))
    request = make_request("fill the queue", max_tokens=64)
    results = []

    def one():
        client = bus.Client("engine-tiny")
        try:
            results.append([f.kind for f in client.stream(messages.Generate(request))][-1])
        except errors.AnyclaudeError as exc:
            results.append(exc.type)
        finally:
            client.close()

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert "overloaded" in results  # queue_size = 2, two running (one batch)
    assert results.count("Done") >= 3


def test_malformed_frames_get_errors_and_the_engine_keeps_serving(engine):
    client = engine["client"]
    client.sock.send_multipart([b"\x01NoSuchKind", b"r1", b"\x80"])
    reply = client.receive(b"r1", 5)
    assert isinstance(reply, messages.Error) and "unknown message kind" in reply.message
    client.sock.send_multipart([b"\x01Generate", b"r2", b"not msgpack \xc1"])
    reply = client.receive(b"r2", 5)
    assert isinstance(reply, messages.Error) and reply.type == "bad_frame"
    say(engine, "still here")
    frames = collect(client, make_request("hi"))
    assert frames[-1].kind == "Done"


def test_second_turn_reads_the_first_turns_cache(engine):
    say(engine, "The answer is forty-two.")
    client = engine["client"]
    system = ["You are a careful assistant. " * 20]
    first = make_request("What is the answer?", system=system, tools=[BASH_TOOL])
    done1 = collect(client, first)[-1]
    second = dict(first, messages=first["messages"] + [
        {"role": "assistant", "content": [{"type": "text", "text": "The answer is forty-two."}]},
        {"role": "user", "content": [{"type": "text", "text": "Why?"}]}])
    done2 = collect(client, second)[-1]
    assert done1.usage["cache_creation_input_tokens"] > 0
    assert done2.usage["cache_read_input_tokens"] >= done1.usage["cache_creation_input_tokens"] // 2
    counted = client.request(messages.Count(second), timeout=10).input_tokens
    assert counted == sum(done2.usage[k] for k in (
        "input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"))
    info = client.request(messages.Command("info"), timeout=2).data
    assert info["cache"]["hits"] >= 1
