"""The run dir's ``supervisor.pid``: who is running, and a lock so two supervisors never
fight over the same sockets. The lock (flock) dies with its process, so a pidfile left
behind by a dead supervisor is simply taken over."""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

NAME = "supervisor.pid"
EXIT_RUNNING = 3          # the supervisor's exit code when another one holds the pidfile


class AlreadyRunning(Exception):
    exit_code = EXIT_RUNNING   # what service_main exits with

    def __init__(self, pid: int | None):
        super().__init__(f"anyclaude is already running (pid {pid})")
        self.pid = pid


def acquire(run_dir: Path) -> int:
    """Lock and write the pidfile; returns the fd to keep open. Raises AlreadyRunning."""
    path = run_dir / NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunning(read_pid(run_dir)) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def release(run_dir: Path, fd: int) -> None:
    try:
        (run_dir / NAME).unlink()
    except FileNotFoundError:
        pass
    os.close(fd)


def read_pid(run_dir: Path) -> int | None:
    try:
        return int((run_dir / NAME).read_text().strip())
    except (OSError, ValueError):
        return None


def running_pid(run_dir: Path) -> int | None:
    """The pid of a live supervisor, or None. A stale pidfile (dead process) is removed."""
    pid = read_pid(run_dir)
    if pid is None:
        return None
    if alive(pid) and _locked(run_dir / NAME):
        return pid
    if read_pid(run_dir) == pid:
        (run_dir / NAME).unlink(missing_ok=True)
    return None


def _locked(path: Path) -> bool:
    """Someone holds the pidfile's lock (a live pid alone could be a reused one)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting for its (adoptive) parent to reap it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not os.path.isdir("/proc/self"):
        return True  # no /proc (macOS): kill(0) is all we have
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
    except IndexError:
        return True


def clean_sockets(run_dir: Path) -> list[str]:
    """Remove socket files left in the run dir; returns their names."""
    removed = []
    for entry in run_dir.iterdir():
        try:
            if stat.S_ISSOCK(entry.lstat().st_mode):
                entry.unlink()
                removed.append(entry.name)
        except FileNotFoundError:
            pass
    return removed


def socket_ready(run_dir: Path) -> bool:
    """The control socket exists (the supervisor has bound it, or one is left over)."""
    return (run_dir / "control").exists()
