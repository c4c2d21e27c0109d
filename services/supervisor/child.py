"""One child process and its state machine.

    stopped -> starting -> ready                       (it said Command("ready"))
    starting|ready -> backoff -> starting              (exit, ready timeout, missed heartbeats)
    backoff -> fatal                                   (max_failures within window)
    any live state -> stopping -> stopped|starting     (stop, restart)

Nothing here blocks: the supervisor loop calls ``tick`` often and the child moves on when
its deadlines pass. Each child runs in its own session, so a signal to its process group
reaches whatever it spawned too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import deque
from pathlib import Path

import structlog

from anyclaude.config import RestartPolicy
from anyclaude.process_table import Planned

log = structlog.get_logger()

STATES = ("stopped", "starting", "ready", "backoff", "fatal", "stopping")
TAIL_LINES = 20
_MARK = b"--- anyclaude: starting "
_ROTATE_BYTES = 5 * 1024 * 1024


class Child:
    def __init__(self, plan: Planned, policy: RestartPolicy, log_dir: Path, env: dict,
                 clock=time.monotonic):
        self.plan, self.policy, self.env, self.clock = plan, policy, env, clock
        self.name = plan.name
        self.stderr_path = log_dir / f"{plan.name}.stderr"
        self.state = "stopped"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.started_at = self.ready_at = self.heartbeat_at = 0.0
        self.moved_at = 0.0       # a model download last made progress (extends ready_timeout)
        self.info: dict = {}
        self.reason = ""
        self.stderr_tail: list[str] = []
        self.failures: deque[float] = deque()
        self.streak = 0           # failures since the last stable run: drives the backoff
        self.next_start = 0.0
        self._kill_at = 0.0
        self._killed = False
        self._then = "stopped"    # after stopping: "stopped", "restart" or a failure reason

    # -- what the supervisor asks --
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.state in ("starting", "ready", "stopping") else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def settled(self) -> bool:
        """Dependents may start: it is ready, or it gave up (they will report it down)."""
        return self.state in ("ready", "fatal")

    def due(self, now: float) -> bool:
        return self.state == "backoff" and now >= self.next_start

    # -- transitions --
    def start(self) -> None:
        now = self.clock()
        self._rotate_stderr()
        with open(self.stderr_path, "ab") as out:
            out.write(_MARK + f"{self.name} at {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode())
            out.flush()
            try:
                self.proc = subprocess.Popen(
                    list(self.plan.command), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                    env=self.env, start_new_session=True, close_fds=True)
            except OSError as exc:
                self.proc = None
                out.write(f"cannot start {self.plan.command[0]}: {exc}\n".encode())
                self.starts += 1
                self._fail(f"cannot start: {exc.strerror or exc}", now)
                return
        self.starts += 1
        self.state, self.reason = "starting", ""
        self.started_at, self.ready_at, self.heartbeat_at, self.info = now, 0.0, 0.0, {}
        self.moved_at = now
        log.info("supervisor.child.started", child=self.name, child_pid=self.proc.pid,
                 restarts=self.restarts)

    def ours(self, pid: int | None) -> bool:
        """The pid is our process or runs in its process group (a wrapper's child)."""
        if self.proc is None or pid is None:
            return False
        if pid == self.proc.pid:
            return True
        try:
            return os.getpgid(pid) == self.proc.pid
        except (ProcessLookupError, PermissionError):
            return False

    def mark_ready(self, pid: int | None) -> bool:
        if self.state != "starting" or not self.ours(pid):
            return False
        self.state = "ready"
        self.ready_at = self.heartbeat_at = self.clock()
        log.info("supervisor.child.ready", child=self.name, child_pid=self.proc.pid)
        return True

    def heartbeat(self, pid: int, info: dict) -> None:
        if self.state in ("starting", "ready") and self.ours(pid):
            self.heartbeat_at = self.clock()
            if self.state == "starting" and _downloaded(info) > _downloaded(self.info):
                self.moved_at = self.heartbeat_at
            self.info = info

    def stop(self, then: str = "stopped") -> None:
        """TERM the process group now, KILL it after the graceful timeout."""
        if self.state in ("starting", "ready") and self.alive:
            log.info("supervisor.child.stopping", child=self.name, child_pid=self.proc.pid,
                     then=then)
            self.state, self._then = "stopping", then
            self._kill_at = self.clock() + self.plan.graceful_timeout
            self._killed = False
            self._signal(signal.SIGTERM)
            self._signal(signal.SIGCONT)  # a stopped (SIGSTOPped) process must see the TERM
        elif self.state == "stopping":
            if then == "stopped":
                self._then = then
        elif self.state in ("backoff", "stopped", "fatal"):
            if then == "restart":
                self.failures.clear()
                self.streak = 0
                self.start()
            elif self.state == "backoff":
                self.state = "stopped"

    def kill_now(self) -> None:
        if self.alive:
            self._signal(signal.SIGKILL)

    def tick(self, now: float) -> None:
        if self.state in ("starting", "ready") and self.proc.poll() is not None:
            self._reap()
            self._fail(_exit_text(self.proc.returncode), now)
        elif self.state == "starting" and now - self.moved_at > self.plan.ready_timeout:
            # a download that keeps moving may take longer; a stalled one may not
            self.stop(f"not ready within {self.plan.ready_timeout:g} s"
                      + (" (its model download stalled)" if self.moved_at > self.started_at else ""))
        elif self.state == "ready" and now - self.heartbeat_at > self.plan.heartbeat_timeout:
            self.stop(f"no heartbeat for {self.plan.heartbeat_timeout:g} s (hung?)")
        elif self.state == "ready" and self.streak and now - self.ready_at >= self.policy.stable_after:
            self.streak = 0
        elif self.state == "stopping":
            if self.proc.poll() is not None:
                self._reap()
                self._after_stop(now)
            elif now >= self._kill_at and not self._killed:
                log.warning("supervisor.child.kill", child=self.name, child_pid=self.proc.pid)
                self._signal(signal.SIGKILL)
                self._killed = True

    # -- internals --
    def _after_stop(self, now: float) -> None:
        then = self._then
        if then == "stopped":
            self.state, self.reason = "stopped", ""
            log.info("supervisor.child.stopped", child=self.name)
        elif then == "restart":
            self.failures.clear()
            self.streak = 0
            self.start()
        else:
            self._fail(then, now)

    def _fail(self, why: str, now: float) -> None:
        policy = self.policy
        self.failures.append(now)
        while self.failures and now - self.failures[0] > policy.window:
            self.failures.popleft()
        self.streak += 1
        self.stderr_tail = self.read_tail()
        if len(self.failures) >= policy.max_failures:
            self.state = "fatal"
            self.reason = (f"{why}; gave up after {len(self.failures)} failures "
                           f"within {policy.window:g} s")
            log.error("supervisor.child.fatal", child=self.name, reason=self.reason)
            return
        delay = min(policy.backoff_max, policy.backoff_initial * 2 ** (self.streak - 1))
        self.state, self.next_start = "backoff", now + delay
        self.reason = f"{why}; restarting in {delay:.1f} s"
        log.warning("supervisor.child.failed", child=self.name, reason=self.reason)

    def _reap(self) -> None:
        # The process is gone; whatever it left in its group goes with it.
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _rotate_stderr(self) -> None:
        try:
            if self.stderr_path.stat().st_size > _ROTATE_BYTES:
                self.stderr_path.replace(self.stderr_path.with_name(self.stderr_path.name + ".1"))
        except FileNotFoundError:
            pass

    def read_tail(self, lines: int = TAIL_LINES) -> list[str]:
        """The last lines the current (or last) run wrote to stdout/stderr."""
        try:
            with open(self.stderr_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 64 * 1024))
                data = fh.read()
        except OSError:
            return []
        mark = data.rfind(_MARK)
        if mark >= 0:
            data = data[data.find(b"\n", mark) + 1:]
        return data.decode("utf-8", "replace").splitlines()[-lines:]

    @property
    def restarts(self) -> int:
        return max(0, self.starts - 1)

    def status(self, now: float) -> dict:
        live = self.state in ("starting", "ready", "stopping")
        return {
            "name": self.name,
            "kind": self.plan.kind,
            "state": self.state,
            "pid": self.pid,
            "uptime_s": round(now - self.started_at, 1) if live else None,
            "restarts": self.restarts,
            "last_heartbeat_age_s": (round(now - self.heartbeat_at, 2)
                                     if live and self.heartbeat_at else None),
            "reason": self.reason,
            "stderr_tail": self.stderr_tail if self.state in ("fatal", "backoff") else [],
            "info": self.info,
            "depends_on": list(self.plan.depends_on),
            "ready_timeout": self.plan.ready_timeout,
        }


def _downloaded(info: dict) -> int:
    """Bytes of model downloads done, from a heartbeat's info (hub.progress())."""
    total = 0
    for d in (info or {}).get("download") or []:
        if isinstance(d, dict) and isinstance(d.get("done"), int):
            total += d["done"]
    return total


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"
