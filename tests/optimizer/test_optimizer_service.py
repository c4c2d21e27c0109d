"""The real optimizer process over the real bus, counting with a fake engine service."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from anyclaude import bus, errors, messages
from opt_helpers import BILLING, char_count, exchange, request, text

WINDOW = 4000


class FakeEngine:
    """A bus.Service named engine-main that answers Count with the char counter."""

    def __init__(self):
        self.counts = 0
        self.service = bus.Service("engine-main", {messages.Count: self.on_count})
        self.thread = threading.Thread(target=self.service.run, daemon=True)

    def on_count(self, call: bus.Call) -> None:
        self.counts += 1
        call.send(messages.Counted(char_count(call.message.request), WINDOW))

    def start(self) -> None:
        self.thread.start()
        wait_for(lambda: bus.socket_path("engine-main").exists(), "the fake engine")

    def stop(self) -> None:
        self.service.stop()
        self.thread.join(5)
        assert not self.thread.is_alive()


def wait_for(predicate, what: str, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come up within {limit:g} s")
        time.sleep(0.05)


def ping(name: str) -> bool:
    client = bus.Client(name)
    try:
        reply = client.request(messages.Command("ping"), timeout=0.5)
        return isinstance(reply, messages.Reply) and reply.ok
    except errors.AnyclaudeError:
        return False
    finally:
        client.close()


@pytest.fixture()
def system(monkeypatch):
    run_dir = tempfile.mkdtemp(prefix="ac", dir="/tmp")
    home = Path(tempfile.mkdtemp(prefix="acopt"))
    config = home / "anyclaude.toml"
    config.write_text(f"""
[models.main]
context_window = {WINDOW}
max_output_tokens = 500

[logging]
dir = "{home / 'logs'}"
""")
    monkeypatch.setenv("ANYCLAUDE_RUN_DIR", run_dir)
    env = {**os.environ, "ANYCLAUDE_RUN_DIR": run_dir, "ANYCLAUDE_CONFIG": str(config)}
    engine = FakeEngine()
    engine.start()
    proc = subprocess.Popen([sys.executable, "-m", "anyclaude.services.optimizer"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: proc.poll() is not None or ping("optimizer"), "the optimizer")
        assert proc.poll() is None, proc.stdout.read()
        client = bus.Client("optimizer")
        yield client, engine, home
        client.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if engine.thread.is_alive():
            engine.stop()


def test_optimize_over_the_bus(system):
    client, engine, home = system
    msgs = [text("user", "task"), *exchange("a", [30000])]
    reply = client.request(messages.Optimize(request(msgs)), timeout=10)
    assert isinstance(reply, messages.Optimized)
    out, notes = reply.request, reply.notes
    assert out["model"] == "main" and BILLING not in out["system"]
    assert char_count(out) <= WINDOW - 500
    assert {"route": "default", "model": "main", "reason": "default model"} in notes
    assert any(n.get("action") == "shorten_tool_result" for n in notes)
    assert engine.counts >= 2
    info = client.request(messages.Command("info"), timeout=5)
    assert info.ok and info.data["routes"] == {"default": 1} and info.data["requests"] == 1
    assert info.data["last"]["model"] == "main" and info.data["sessions"] == 1
    assert (home / "logs" / "optimizer.log").read_text().count("optimizer.routed") == 1


def test_prompt_too_long_over_the_bus(system):
    client, _, _ = system
    msgs = [text("user", "q" * 40000)]
    with pytest.raises(errors.AnyclaudeError) as info:
        client.request(messages.Optimize(request(msgs)), timeout=10)
    assert info.value.type == "prompt_too_long"
    assert re.fullmatch(r"prompt is too long: \d+ tokens > 3500 maximum", info.value.message)


def test_engine_gone_is_unavailable_and_bad_input_is_invalid(system):
    client, engine, _ = system
    with pytest.raises(errors.InvalidRequest, match="messages: at least one message"):
        client.request(messages.Optimize({"model": "main", "messages": [], "max_tokens": 5}),
                       timeout=10)
    engine.stop()
    with pytest.raises(errors.ServiceUnavailable, match="engine-main is not running"):
        client.request(messages.Optimize(request([text("user", "hi")])), timeout=10)
    assert ping("optimizer")  # still serving
