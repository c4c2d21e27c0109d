"""One skeleton for all six processes (anyclaude/service_main.py), and the supervisor's control
socket served by the same dispatch as every bus.Service."""

from __future__ import annotations

import ast
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
import zmq

from anyclaude import bus, messages
from anyclaude.config import RestartPolicy
from anyclaude.services.supervisor.supervisor import Supervisor
from run_dir_env import use_run_dir

ROOT = Path(__file__).resolve().parents[1]
PROCESSES = ("engine", "frontdoor", "kvstore", "optimizer", "supervisor", "websearch")


def _calls_skeleton(tree: ast.AST) -> bool:
    return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
               and node.func.attr == "run" and isinstance(node.func.value, ast.Name)
               and node.func.value.id == "service_main" for node in ast.walk(tree))


def _main_module(tree: ast.AST) -> Path | None:
    """The module a ``from anyclaude.services.<x>.<m> import main`` names, if any."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(a.name == "main" for a in node.names):
            parts = (node.module or "").split(".")
            if parts[:2] == ["anyclaude", "services"]:
                return ROOT.joinpath("services", *parts[2:]).with_suffix(".py")
    return None


@pytest.mark.parametrize("process", PROCESSES)
def test_every_process_starts_through_the_skeleton(process):
    main = ROOT / "services" / process / "__main__.py"
    tree = ast.parse(main.read_text())
    if not _calls_skeleton(tree):
        module = _main_module(tree)
        assert module is not None, f"{main} neither calls service_main.run nor imports a main"
        tree = ast.parse(module.read_text())
    assert _calls_skeleton(tree), f"services/{process} does not start through service_main.run"
    assert len(main.read_text().splitlines()) <= 40, f"{main} is wiring, not a few lines"


def test_no_process_wires_signals_or_logs_itself():
    for path in sorted(ROOT.joinpath("services").rglob("*.py")):
        text = path.read_text()
        assert "signal.signal(" not in text, f"{path}: signals belong to service_main"
        assert "logs.configure(" not in text, f"{path}: logging belongs to service_main"


@pytest.fixture()
def supervisor(tmp_path):
    run_dir = tempfile.mkdtemp(prefix="ac", dir="/tmp")
    with use_run_dir(run_dir):
        sup = Supervisor([], RestartPolicy(), log_dir=tmp_path / "logs", base_env={})
        thread = threading.Thread(target=sup.run, daemon=True)
        thread.start()
        try:
            yield sup
        finally:
            sup.request_stop("test over")
            thread.join(10)
            shutil.rmtree(run_dir, ignore_errors=True)
    assert not thread.is_alive()


def _raw(frames: list[bytes]) -> messages.Message:
    sock = bus.make_socket(zmq.Context.instance(), zmq.DEALER)
    try:
        sock.connect(bus.endpoint("control"))
        sock.send_multipart(frames)
        assert sock.poll(5000), "no answer from the control socket"
        reply, _ = messages.decode(sock.recv_multipart())
        return reply
    finally:
        sock.close(0)


def test_control_socket_answers_through_the_shared_dispatch(supervisor, monkeypatch):
    dispatched: list[str] = []
    original = bus.Service._dispatch

    def spy(self, frames):
        dispatched.append(self.name)
        return original(self, frames)

    monkeypatch.setattr(bus.Service, "_dispatch", spy)
    deadline = time.monotonic() + 10
    while not bus.socket_path("control").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert isinstance(supervisor.service, bus.Service) and supervisor.service.name == "control"

    bad = _raw([b"\x01Search", b"r2", b"\xc1"])                      # not msgpack
    assert isinstance(bad, messages.Error) and bad.type == "bad_frame" and bad.message
    wrong = _raw(messages.encode(messages.Search("x"), b"r3"))      # not a Command
    assert isinstance(wrong, messages.Error) and wrong.type == "bad_frame"
    assert wrong.message == "the supervisor takes Command messages, not Search"

    client = bus.Client("control")
    try:
        reply = client.request(messages.Command("frobnicate"), timeout=5)
        assert not reply.ok
        assert reply.error == "unknown command 'frobnicate'; commands: status, restart, stop, ready"
        status = client.request(messages.Command("status"), timeout=5)
        assert status.ok and status.data["services"] == []
    finally:
        client.close()
    assert dispatched == ["control"] * 4
