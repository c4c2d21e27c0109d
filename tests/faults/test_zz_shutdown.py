"""SIGTERM to the whole system (faults row 22), each on a system of its own: stop accepting,
let streams drain for the grace period, end the rest with `event: error`, stop every child
(TERM, then KILL), leave no process, socket, pidfile or port behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .harness import FaultSystem, body, stream_text, wait_for

LONG = " ".join(f"step {i} of the long answer." for i in range(400))


@pytest.fixture
def own_system(tmp_path, model_dir):
    system = FaultSystem(tmp_path, model_dir)
    try:
        system.up()
        yield system
    finally:
        system.close()


def ours(run_dir: str) -> list[int]:
    """Processes whose environment names this system's run dir: its whole process tree."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"ANYCLAUDE_RUN_DIR={run_dir}".encode() in environ and state != "Z":
            found.append(int(entry.name))
    return found


def refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def assert_all_gone(system, pids: list[int]) -> None:
    wait_for(lambda: not ours(system.run_dir), 10, what="no process of the system left")
    assert not set(pids) & set(ours(system.run_dir))   # (a pid may be reused by a stranger)
    left = [p.name for p in Path(system.run_dir).iterdir()]
    assert left == [], left                             # sockets and pidfile removed
    with socket.socket() as s:                          # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", system.port))


def test_row22_down_drains_then_ends_open_streams_with_an_error(own_system):
    system = own_system
    system.say(("longer than the grace", LONG), ("queued at shutdown", "never said"))
    status = system.status()
    pids = [system.status()["supervisor"]["pid"], *system.pids().values()]
    assert len(ours(system.run_dir)) >= len(pids)
    running = system.raw(body("longer than the grace", stream=True, max_tokens=4000))
    running.read_until(b"text_delta")
    queued = system.raw(body("queued at shutdown", stream=True))
    queued.read_until(b"event: ping")
    done: dict = {}
    down = threading.Thread(target=lambda: done.update(out=system.cli("down", timeout=60)))
    started = time.monotonic()
    down.start()
    wait_for(lambda: refused(system.port), 5, what="the listener closed")
    queued.read_until(b"event: error", timeout=10)      # not started: released at once
    error = [d for k, d in queued.events() if k == "error"][0]["error"]
    assert error == {"type": "overloaded_error", "message": "anyclaude is shutting down"}
    running.read_until(b"event: error", timeout=20)     # running: after the grace period
    ended = time.monotonic() - started
    events = running.events()
    error = [d for k, d in events if k == "error"][0]["error"]
    assert error == {"type": "overloaded_error", "message": "anyclaude is shutting down"}
    assert LONG.startswith(stream_text(events)) and "message_stop" not in [k for k, _ in events]
    running.read_to_end(timeout=10)
    print(f"\n[row22] down: the running stream ended with event: error {ended:.2f} s after "
          f"`anyclaude down` (drain 2/3 of the front door's graceful_timeout 3 s)")
    down.join(60)
    assert done["out"].returncode == 0 and "stopped" in done["out"].stdout
    assert_all_gone(system, pids)
    assert status["supervisor"]["run_dir"] == system.run_dir


def test_row22_sigterm_to_the_supervisor_lets_a_short_stream_finish(own_system):
    system = own_system
    answer = "finished within the grace period"
    system.say(("finish me", answer))
    supervisor = system.status()["supervisor"]["pid"]
    pids = [supervisor, *system.pids().values()]
    with system.throttled(stop_s=0.3, run_s=0.1):       # slow enough to be in flight
        stream = system.raw(body("finish me", stream=True))
        stream.read_until(b"event: ping")
        os.kill(supervisor, signal.SIGTERM)
        stream.read_to_end(timeout=10)
    events = stream.events()
    kinds = [k for k, _ in events]
    assert "error" not in kinds and kinds.count("message_stop") == 1
    assert stream_text(events) == answer                # drained: the answer completed
    wait_for(lambda: not ours(system.run_dir), 30, what="the supervisor and its children gone")
    assert_all_gone(system, pids)
    # and the CLI agrees
    out = subprocess.run([sys.executable, "-m", "anyclaude.cli", "status"], env=system.env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 3 and "not running" in out.stderr
