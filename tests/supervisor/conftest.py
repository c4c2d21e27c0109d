"""Fixtures for the supervisor tests: a short run dir, a log dir and config through the
environment, a process table of placeholder services, and the real `anyclaude` CLI run as
a subprocess. Every wait is bounded; whatever a test started is killed at the end."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from run_dir_env import use_run_dir

PLACEHOLDERS = Path(__file__).with_name("placeholders.py")
_SCRIPT = Path(sys.executable).with_name("anyclaude")
# the installed console script, as a user runs it (or the module, where no script was made)
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "anyclaude.cli"]

FAST_RESTART = """
[restart]
backoff_initial = 0.1
backoff_max = 0.5
stable_after = 30.0
max_failures = 3
window = 60.0
"""


def service(name: str, mode: str, arg: str = "", *, depends_on=(), ready_timeout=10,
            graceful_timeout=2, heartbeat_timeout=2.5) -> str:
    command = ["{python}", str(PLACEHOLDERS), name, mode, *([arg] if arg else [])]
    lines = [f"[services.{name}]", f"command = {json.dumps(command)}",
             f"ready_timeout = {ready_timeout}", f"graceful_timeout = {graceful_timeout}",
             f"heartbeat_timeout = {heartbeat_timeout}"]
    if depends_on:
        lines.append(f"depends_on = {json.dumps(list(depends_on))}")
    return "\n".join(lines) + "\n"


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie still answers kill(0); it has no process group members left to run
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return all(pid_gone(int(p)) for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) == pgid)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


class System:
    """One anyclaude installation in temporary directories, driven through the CLI."""

    def __init__(self, root: Path, services_toml: str):
        self.root = root
        self.run_dir = Path(tempfile.mkdtemp(prefix="ac", dir="/tmp"))
        self.log_dir = root / "logs"
        (root / "supervisor.toml").write_text(FAST_RESTART + "\n" + services_toml)
        (root / "anyclaude.toml").write_text('[logging]\nlevel = "warning"\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANYCLAUDE_")}
        env.update(ANYCLAUDE_RUN_DIR=str(self.run_dir), ANYCLAUDE_LOGGING_DIR=str(self.log_dir),
                   ANYCLAUDE_SUPERVISOR_TOML=str(root / "supervisor.toml"),
                   ANYCLAUDE_CONFIG=str(root / "anyclaude.toml"),
                   XDG_CACHE_HOME=str(root / "cache"), XDG_STATE_HOME=str(root / "state"))
        self.env = env
        self.seen_pids: set[int] = set()

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*CLI, *args], env=self.env, cwd=self.root, timeout=timeout,
                              capture_output=True, text=True)

    def popen_cli(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([*CLI, *args], env=self.env, cwd=self.root, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def status(self) -> dict:
        result = self.cli("status", "--json", timeout=20)
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        self.seen_pids.update(s["pid"] for s in data["services"] if s["pid"])
        self.seen_pids.add(data["supervisor"]["pid"])
        return data

    def service(self, name: str) -> dict:
        return next(s for s in self.status()["services"] if s["name"] == name)

    def wait_state(self, name: str, state: str, timeout: float = 20, **match) -> dict:
        def check():
            s = self.service(name)
            ok = s["state"] == state and all(
                (fn(s[k]) if callable(fn) else s[k] == fn) for k, fn in match.items())
            return s if ok else None
        return wait_for(check, timeout, f"{name} {state} {match}", interval=0.1)

    def supervisor_pid(self) -> int | None:
        try:
            return int((self.run_dir / "supervisor.pid").read_text())
        except (OSError, ValueError):
            return None

    def bus_env(self):
        """Point this test process's bus at the system's run dir for a while."""
        return use_run_dir(self.run_dir)

    def kill_everything(self) -> None:
        """Last resort after a test: no process of ours outlives it."""
        pid = self.supervisor_pid()
        if pid:
            self.seen_pids.add(pid)
        for pid in self.seen_pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.run_dir, ignore_errors=True)


@pytest.fixture
def make_system(tmp_path):
    systems: list[System] = []

    def make(services_toml: str) -> System:
        root = tmp_path / f"sys{len(systems)}"
        root.mkdir()
        system = System(root, services_toml)
        systems.append(system)
        return system

    yield make
    for system in systems:
        if system.supervisor_pid():
            system.cli("down", "--timeout", "20", timeout=30)
        system.kill_everything()
