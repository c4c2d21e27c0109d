"""Starting and stopping whole systems: failures at start, down, signals, leftovers."""

from __future__ import annotations

import json
from pathlib import Path
import os
import signal
import socket
import subprocess

from .conftest import group_gone, pid_gone, service, wait_for

TWO = service("alpha", "ok") + service("beta", "ok", depends_on=["alpha"])


def _pids(system) -> list[int]:
    data = system.status()
    return [data["supervisor"]["pid"], *(s["pid"] for s in data["services"])]


def _assert_nothing_left(system, pids: list[int]) -> None:
    for pid in pids:
        assert wait_for(lambda: pid_gone(pid), 10, f"pid {pid} to be gone")
        assert wait_for(lambda: group_gone(pid), 10, f"process group {pid} to be gone")
    leftovers = sorted(p.name for p in system.run_dir.iterdir())
    assert leftovers == [], f"left in the run dir: {leftovers}"


def test_service_crashing_on_every_start_ends_fatal_while_others_stay_ready(make_system):
    system = make_system(service("alpha", "ok") + service("crashy", "crash")
                         + service("after_crashy", "ok", depends_on=["crashy"]))
    result = system.cli("up", "--detach")
    assert result.returncode == 1
    assert "crashy is fatal: exited with code 1; gave up after 3 failures within 60 s" in result.stderr
    assert "| crashy: crashing on purpose (mode crash)" in result.stderr
    assert "Traceback" not in result.stderr
    services = {s["name"]: s for s in system.status()["services"]}
    assert services["crashy"]["state"] == "fatal"
    assert services["crashy"]["restarts"] == 2
    assert services["crashy"]["stderr_tail"] == ["crashy: crashing on purpose (mode crash)"]
    assert services["alpha"]["state"] == "ready"
    # a dependency that gave up does not hold its dependents back: they report it instead
    assert services["after_crashy"]["state"] == "ready"
    table = system.cli("status").stdout
    assert "crashy is fatal" in table and "| crashy: crashing on purpose" in table


def test_down_leaves_no_process_and_no_socket(make_system):
    system = make_system(TWO)
    assert system.cli("up", "--detach").returncode == 0
    pids = _pids(system)
    assert (system.run_dir / "control").exists() and (system.run_dir / "alpha").exists()
    result = system.cli("down")
    assert result.returncode == 0 and "anyclaude stopped." in result.stdout
    _assert_nothing_left(system, pids)
    again = system.cli("down")
    assert again.returncode == 0 and "anyclaude is not running." in again.stdout
    status = system.cli("status")
    assert status.returncode == 3 and "anyclaude is not running" in status.stderr


def test_sigterm_to_the_supervisor_stops_everything(make_system):
    system = make_system(TWO)
    assert system.cli("up", "--detach").returncode == 0
    pids = _pids(system)
    os.kill(pids[0], signal.SIGTERM)
    _assert_nothing_left(system, pids)


def test_foreground_up_prints_changes_and_ctrl_c_stops_cleanly(make_system):
    system = make_system(TWO)
    proc = system.popen_cli("up")
    try:
        lines = []
        while not any("anyclaude is ready" in line for line in lines):
            line = proc.stdout.readline()
            assert line, f"up ended early: {lines}"
            lines.append(line)
        assert any("alpha: starting -> ready" in line for line in lines)
        assert any("beta: starting -> ready" in line for line in lines)
        pids = _pids(system)
        # the foreground CLI started the supervisor as its own child and talks to it as a
        # client (it does not run the supervisor's code itself)
        assert pids[0] != proc.pid
        assert _parent_pid(pids[0]) == proc.pid
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "beta: ready -> stopping" in out and out.rstrip().endswith("anyclaude stopped.")
    events = [json.loads(line) for line in (system.log_dir / "supervisor.log").open()]
    order = [(e["event"], e.get("child")) for e in events]
    # reverse dependency order: beta (which needs alpha) is gone before alpha is asked to stop
    assert order.index(("supervisor.child.stopped", "beta")) < order.index(
        ("supervisor.child.stopping", "alpha"))
    _assert_nothing_left(system, pids)


def test_stale_pidfile_and_sockets_are_cleaned_at_start(make_system):
    system = make_system(TWO)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (system.run_dir / "supervisor.pid").write_text(f"{dead.pid}\n")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(system.run_dir / "alpha"))
    stale.close()  # the file stays, as after a crash
    result = system.cli("up", "--detach")
    assert result.returncode == 0, result.stderr
    assert system.supervisor_pid() != dead.pid
    assert system.service("alpha")["state"] == "ready"


def test_config_error_is_one_line(make_system):
    system = make_system(TWO)
    (system.root / "supervisor.toml").write_text("[services.x]\ncommand = 'not a list'\n")
    result = system.cli("up", "--detach")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "services.x.command must be a non-empty list of strings" in result.stderr


def test_port_in_use_is_reported_before_anything_starts(make_system):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        system = make_system(service("frontdoor", "ok"))
        system.env["ANYCLAUDE_SERVER_PORT"] = str(port)
        result = system.cli("up", "--detach")
    assert result.returncode == 1
    assert f"anyclaude: port {port} is in use" in result.stderr
    assert system.supervisor_pid() is None


def _parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])
