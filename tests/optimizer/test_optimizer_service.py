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
from anyclaude.prompt import handoff
from anyclaude.prompt.template import ChatRenderer
from opt_helpers import BILLING, char_count, exchange, request, text

WINDOW = 4000
FINGERPRINT = "f" * 32


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from anyclaude.tinymodel import build_tiny_model
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def renderer(tiny_model_dir):
    from mlx_lm.utils import load_tokenizer
    return ChatRenderer(load_tokenizer(tiny_model_dir), model_id="main")


class FakeEngine:
    """A bus.Service named engine-main: its info says where the (real, tiny) model's
    tokenizer is, as the MLX engine's does; Count is answered too, and counted, to show
    that the optimizer no longer asks for counts."""

    def __init__(self, model_dir: Path):
        self.counts = 0
        self.model_dir = model_dir
        self.service = bus.Service("engine-main", {messages.Count: self.on_count},
                                   info=lambda: {"model_dir": str(model_dir),
                                                 "fingerprint": FINGERPRINT})
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
def system(monkeypatch, tiny_model_dir):
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
    engine = FakeEngine(tiny_model_dir)
    engine.start()
    proc = subprocess.Popen([sys.executable, "-m", "anyclaude.services.optimizer"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: proc.poll() is not None or ping("optimizer"), "the optimizer")
        assert proc.poll() is None, proc.stdout.read()
        client = bus.Client("optimizer")
        # it loads the tokenizer off the request path at start (importing mlx-lm takes
        # seconds on a busy machine); wait for that so the 10 s request deadlines hold
        wait_for(lambda: client.request(messages.Command("info"), timeout=5)
                 .data["tokenizers"] == ["main"], "the tokenizer", limit=60)
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


def test_optimize_over_the_bus(system, renderer):
    client, engine, home = system
    msgs = [text("user", "task"), *exchange("a", [30000])]
    reply = client.request(messages.Optimize(request(msgs)), timeout=10)
    assert isinstance(reply, messages.Optimized)
    out, notes = reply.request, reply.notes
    prompt = out.pop("prompt")
    assert out["model"] == "main" and BILLING not in out["system"]
    ids = renderer.render_prompt(out).ids            # the engine's own render of the result
    assert len(ids) <= WINDOW - 500
    assert {"route": "default", "model": "main", "reason": "default model"} in notes
    assert any(n.get("action") == "shorten_tool_result" for n in notes)
    fit = next(n for n in notes if n.get("action") == "fit")
    assert fit["exact_counts"] >= 2 and fit["input_tokens"] == len(ids)
    # counted in the optimizer: no Count round trip; the prompt rides along for the engine
    assert engine.counts == 0
    assert handoff.unpack_ids(prompt["ids"]) == ids and prompt["tokens"] == len(ids)
    assert prompt["fingerprint"] == FINGERPRINT and prompt["key"] == handoff.render_key(out)
    info = client.request(messages.Command("info"), timeout=5)
    assert info.ok and info.data["routes"] == {"default": 1} and info.data["requests"] == 1
    assert info.data["last"]["model"] == "main" and info.data["sessions"] == 1
    assert info.data["counts"]["info_asks"] == 1 and info.data["counts"]["engine_counts"] == 0
    assert (home / "logs" / "optimizer.log").read_text().count("optimizer.routed") == 1


def test_engine_is_asked_once_and_again_after_a_restart(system, tiny_model_dir):
    client, engine, _ = system
    for word in ("one", "two"):
        client.request(messages.Optimize(request([text("user", word)])), timeout=10)
    asks = client.request(messages.Command("info"), timeout=5).data["counts"]["info_asks"]
    assert asks == 1
    engine.stop()
    fresh = FakeEngine(tiny_model_dir)     # a new engine process: a new socket
    fresh.start()
    try:
        reply = client.request(messages.Optimize(request([text("user", "three")])), timeout=10)
        assert reply.request["prompt"]["tokens"] > 0
        info = client.request(messages.Command("info"), timeout=5).data["counts"]
        assert info["info_asks"] == 2 and info["engine_counts"] == 0
    finally:
        fresh.stop()


def test_a_prompt_sent_in_is_never_handed_on(system):
    client, _, _ = system
    stale = {"ids": handoff.pack_ids([1, 2, 3]), "tokens": 3, "key": "x",
             "fingerprint": FINGERPRINT, "pin": 0, "starts_in_thinking": False, "prefill": ""}
    reply = client.request(messages.Optimize({**request([text("user", "hi")]),
                                              "prompt": stale}), timeout=10)
    assert reply.request["prompt"]["tokens"] > 3
    assert reply.request["prompt"]["key"] == handoff.render_key(reply.request)


def test_prompt_too_long_over_the_bus(system):
    client, _, _ = system
    msgs = [text("user", " ".join(f"word{i}" for i in range(8000)))]
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
