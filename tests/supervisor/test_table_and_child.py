"""The process table expansion and one child's state machine (real processes, fake clock)."""

from __future__ import annotations

import sys

import pytest

from anyclaude.config import ModelConfig, ProcessTable, RestartPolicy, ServiceSpec, Settings
from anyclaude.errors import ConfigError
from anyclaude.services.supervisor.child import Child
from anyclaude.services.supervisor.supervisor import child_env
from anyclaude.process_table import Planned, expand

from .conftest import wait_for


def _table(*specs: ServiceSpec) -> ProcessTable:
    return ProcessTable(tuple(specs), RestartPolicy(), "test.toml")


SETTINGS = Settings(models={"big": ModelConfig(kind="mlx"), "remote": ModelConfig(kind="openai"),
                            "small": ModelConfig(kind="mlx")})


def test_each_model_services_become_one_per_model_of_the_listed_kinds():
    plans = expand(_table(
        ServiceSpec("frontdoor", ("{python}", "-m", "fd"), depends_on=("engine", "kvstore")),
        ServiceSpec("kvstore", ("{python}", "-m", "kv")),
        ServiceSpec("engine", ("{python}", "-m", "eng", "--model", "{model}"), depends_on=("kvstore",),
                    each_model=True, model_kinds=("mlx",)),
    ), SETTINGS, python="/py")
    assert [p.name for p in plans] == ["kvstore", "engine-big", "engine-small", "frontdoor"]
    engine = plans[1]
    assert engine.kind == "engine" and engine.model == "big"
    assert engine.command == ("/py", "-m", "eng", "--model", "big")
    assert engine.depends_on == ("kvstore",)
    assert plans[3].depends_on == ("engine-big", "engine-small", "kvstore")


def test_python_defaults_to_this_interpreter():
    plans = expand(_table(ServiceSpec("a", ("{python}", "x"))), SETTINGS)
    assert plans[0].command == (sys.executable, "x")


def test_a_dependency_cycle_is_a_config_error():
    with pytest.raises(ConfigError, match="cycle: a -> b -> a"):
        expand(_table(ServiceSpec("a", ("x",), depends_on=("b",)),
                      ServiceSpec("b", ("x",), depends_on=("a",))), SETTINGS)


def test_engine_environment_comes_from_the_engine_blas_module(tmp_path):
    engine = Planned("engine-big", "engine", ("x",), (), 1, 1, 1, "big")
    other = Planned("kvstore", "kvstore", ("x",), (), 1, 1, 1)
    base = {"PATH": "/bin", "ANYCLAUDE_BLAS": "reference"}
    env = child_env(engine, base, tmp_path, None)
    assert env["ANYCLAUDE_RUN_DIR"] == str(tmp_path) and env["PATH"] == "/bin"
    assert "ANYCLAUDE_CONFIG" not in env
    config = tmp_path / "a.toml"
    assert child_env(other, base, tmp_path, config)["ANYCLAUDE_CONFIG"] == str(config.resolve())


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


POLICY = RestartPolicy(backoff_initial=1.0, backoff_max=3.0, stable_after=60.0,
                       max_failures=4, window=100.0)


def _child(tmp_path, command, clock, **timeouts) -> Child:
    plan = Planned("svc", "svc", tuple(command), (), timeouts.get("ready", 10.0),
                   timeouts.get("graceful", 0.5), timeouts.get("heartbeat", 5.0))
    return Child(plan, POLICY, tmp_path, {"PATH": "/usr/bin:/bin"}, clock=clock)


def _settle(child: Child, clock: Clock, state: str) -> None:
    """Tick until the real process has moved the child into ``state``."""
    wait_for(lambda: child.tick(clock.now) or child.state == state, 10, f"state {state}")


def test_backoff_doubles_up_to_the_cap_then_fatal_with_the_output(tmp_path):
    clock = Clock()
    child = _child(tmp_path, ["sh", "-c", "echo boom >&2; exit 3"], clock)
    delays = []
    child.start()
    for _ in range(3):
        _settle(child, clock, "backoff")
        assert child.reason.startswith("exited with code 3; restarting in")
        delays.append(child.next_start - clock.now)
        clock.now = child.next_start
        assert child.due(clock.now)
        child.start()
    _settle(child, clock, "fatal")
    assert delays == [1.0, 2.0, 3.0]
    assert child.reason == "exited with code 3; gave up after 4 failures within 100 s"
    assert child.stderr_tail == ["boom"]
    assert child.status(clock.now)["restarts"] == 3


def test_failures_outside_the_window_do_not_count(tmp_path):
    clock = Clock()
    child = _child(tmp_path, ["sh", "-c", "exit 1"], clock)
    for _ in range(6):
        child.start()
        _settle(child, clock, "backoff")
        clock.now += 101.0
    assert child.state == "backoff" and len(child.failures) == 1


def test_stable_running_resets_the_backoff(tmp_path):
    clock = Clock()
    flag = tmp_path / "flag"
    child = _child(tmp_path, ["sh", "-c", f"test -f {flag} && exec sleep 30; exit 1"], clock,
                   heartbeat=500.0)
    child.start()
    _settle(child, clock, "backoff")
    flag.touch()
    clock.now = child.next_start
    child.start()
    assert child.mark_ready(child.proc.pid)
    assert child.streak == 1
    clock.now += 61.0
    child.tick(clock.now)
    assert child.streak == 0
    child.kill_now()
    _settle(child, clock, "backoff")
    assert child.reason.startswith("killed by SIGKILL; restarting in 1.0 s")


def test_not_ready_in_time_is_a_failure(tmp_path):
    clock = Clock()
    child = _child(tmp_path, ["sleep", "30"], clock, ready=5.0)
    child.start()
    clock.now += 6.0
    child.tick(clock.now)
    assert child.state == "stopping"
    _settle(child, clock, "backoff")
    assert child.reason.startswith("not ready within 5 s")


def test_missed_heartbeats_term_then_kill(tmp_path):
    clock = Clock()
    # ignores SIGTERM, so only the KILL after the graceful timeout ends it
    child = _child(tmp_path, ["sh", "-c", "trap '' TERM; sleep 30"], clock,
                   heartbeat=2.0, graceful=1.0)
    child.start()
    assert child.mark_ready(child.proc.pid)
    child.heartbeat(child.proc.pid, {"n": 1})
    assert child.status(clock.now)["info"] == {"n": 1}
    clock.now += 3.0
    child.tick(clock.now)
    assert child.state == "stopping"
    child.tick(clock.now)
    assert child.state == "stopping"  # TERM is ignored
    clock.now += 1.5
    _settle(child, clock, "backoff")
    assert child.reason.startswith("no heartbeat for 2 s")


def test_heartbeats_and_readiness_from_another_process_are_ignored(tmp_path):
    clock = Clock()
    child = _child(tmp_path, ["sleep", "30"], clock)
    child.start()
    assert not child.mark_ready(1)
    child.heartbeat(1, {"fake": True})
    assert child.info == {} and child.state == "starting"
    child.stop()
    _settle(child, clock, "stopped")


def test_a_missing_program_fails_with_a_reason(tmp_path):
    clock = Clock()
    child = _child(tmp_path, ["/nonexistent/program"], clock)
    child.start()
    assert child.state == "backoff"
    assert child.reason.startswith("cannot start: No such file or directory")


def test_a_moving_model_download_extends_the_ready_timeout_a_stalled_one_does_not(tmp_path):
    clock = Clock()
    child = _child(tmp_path, ["sleep", "30"], clock, ready=5.0)
    child.start()
    pid = child.proc.pid
    for done in (100, 200, 300):           # 12 s of a download that keeps moving
        clock.now += 4.0
        child.heartbeat(pid, {"download": [{"repo": "org/m", "done": done, "total": 1000}]})
        child.tick(clock.now)
        assert child.state == "starting"
    clock.now += 4.0                       # the same bytes again: stalled
    child.heartbeat(pid, {"download": [{"repo": "org/m", "done": 300, "total": 1000}]})
    child.tick(clock.now)
    assert child.state == "starting"
    clock.now += 1.5                       # 5.5 s without progress
    child.tick(clock.now)
    assert child.state == "stopping"
    _settle(child, clock, "backoff")
    assert child.reason.startswith("not ready within 5 s (its model download stalled)")
