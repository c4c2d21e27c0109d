"""One fault-injection system per session (tests/faults/harness.py), checked healthy before
each test: every process running (SIGCONT to all), the engine ready, the breaker closed."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest

from anyclaude.tinymodel import ensure_tiny_model

from .harness import FaultSystem, wait_for


@pytest.fixture(scope="session")
def model_dir():
    return ensure_tiny_model()


@pytest.fixture(scope="session")
def fault_system(tmp_path_factory, model_dir):
    system = FaultSystem(tmp_path_factory.mktemp("faults"), model_dir)
    try:
        system.up()
        yield system
    finally:
        system.close()


@pytest.fixture
def system(fault_system):
    """The session's system, healthy: every service ready and the breaker closed."""
    s = fault_system
    for pid in s.pids().values():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)
    s.say(otherwise="ok")
    if s.service("engine-tiny")["state"] == "fatal":    # a failed test left it given up on
        s.write_config()
        s.restart("engine-tiny")
    for name in ("kvstore", "engine-tiny", "optimizer", "websearch", "frontdoor"):
        s.wait_ready(name, timeout=60)

    def door_ok():
        info = s.service("frontdoor")["info"]
        return info.get("breaker") == "closed" and not info.get("running") \
            and not info.get("waiting")
    if not door_ok():      # an open breaker closes after its reset time and one good call
        deadline = time.monotonic() + 30
        while not door_ok() and time.monotonic() < deadline:
            s.post({"model": "tiny", "max_tokens": 8,
                    "messages": [{"role": "user", "content": "warm up"}]}, timeout=20)
            time.sleep(0.5)
        wait_for(door_ok, 5, what="the front door healthy (breaker closed, nothing running)")
    return s
