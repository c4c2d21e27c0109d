"""A whole anyclaude system for fault injection, started the way a user starts it.

`anyclaude up --detach` in a temporary home: real supervisor, front door, optimizer, MLX
engine on the tiny random-weight model (a force file makes it say exact texts), kvstore
and websearch (against a fake SearXNG on 127.0.0.1). Short deadlines and backoffs (its own
anyclaude.toml and supervisor.toml) keep every fault quick. The KV cache directory sits on
a small tmpfs when we may mount one (disk-full for real), and every process runs with a
socket guard (sitecustomize on PYTHONPATH) that logs each outbound connection and refuses
any that leaves the machine.

Every wait here is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2 as httpx
import zmq
from run_dir_env import use_run_dir

from anyclaude import bus, messages

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "websearch"))
from searxng_fake import FakeSearxng  # noqa: E402

KV_TMPFS_MB = 48

TIMEOUTS = dict(accept_s=0.75, first_frame_s=6.0, idle_s=5.0, total_s=10.0, ping_interval_s=0.5,
                restart_wait_s=15.0)

# Failures: 3 within 8 s is fatal (the crash-loop test); the harness spaces its own kills.
SUPERVISOR_TOML = """
[restart]
backoff_initial = 0.2
backoff_max = 1.0
stable_after = 3.0
max_failures = 3
window = 8.0

[services.kvstore]
command = ["{python}", "-m", "anyclaude.services.kvstore"]
ready_timeout = 30
graceful_timeout = 2

[services.engine]
command = ["{python}", "-m", "anyclaude.services.engine", "--model", "{model}"]
each_model = true
depends_on = ["kvstore"]
ready_timeout = 60
graceful_timeout = 2
heartbeat_timeout = 10

[services.optimizer]
command = ["{python}", "-m", "anyclaude.services.optimizer"]
depends_on = ["engine"]
ready_timeout = 30
graceful_timeout = 2

[services.websearch]
command = ["{python}", "-m", "anyclaude.services.websearch"]
ready_timeout = 30
graceful_timeout = 2

[services.frontdoor]
command = ["{python}", "-m", "anyclaude.services.frontdoor"]
depends_on = ["engine", "optimizer", "websearch"]
ready_timeout = 30
graceful_timeout = 3
"""

# Loaded by every Python process of the system (PYTHONPATH): records outbound connections,
# refuses those to other machines, then runs the interpreter's own sitecustomize if any.
GUARD = r'''
import json, os, socket, sys

_LOG = os.environ.get("ANYCLAUDE_GUARD_LOG")
_real_connect, _real_connect_ex = socket.socket.connect, socket.socket.connect_ex


def _local(host):
    import ipaddress
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _caller():
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename in (__file__, socket.__file__)):
        frame = frame.f_back
    return "?" if frame is None else os.path.basename(frame.f_code.co_filename)


def _check(sock, address):
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not _LOG:
        return
    host, port = address[0], address[1]
    allowed = _local(host)
    with open(_LOG, "a") as fh:
        fh.write(json.dumps({"pid": os.getpid(), "argv": sys.argv[:3], "host": host,
                             "port": port, "allowed": allowed, "caller": _caller()}) + "\n")
    if not allowed:
        raise PermissionError(f"anyclaude fault guard: connection to {host}:{port} refused")


def connect(self, address):
    _check(self, address)
    return _real_connect(self, address)


def connect_ex(self, address):
    _check(self, address)
    return _real_connect_ex(self, address)


socket.socket.connect, socket.socket.connect_ex = connect, connect_ex

_here = os.path.dirname(os.path.abspath(__file__))
for _dir in sys.path:
    _path = os.path.join(_dir or ".", "sitecustomize.py")
    if os.path.abspath(_dir or ".") != _here and os.path.isfile(_path):
        exec(compile(open(_path).read(), _path, "exec"))
        break
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll until predicate() is truthy; return its value, or fail naming what we waited for."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def sse_events(raw: bytes) -> list[tuple[str, dict]]:
    """[(event, data)] of an SSE body; a truncated last event is left out."""
    events = []
    for block in raw.decode("utf-8", "replace").split("\n\n"):
        kind, data = None, None
        for line in block.split("\n"):                # SSE lines end at LF (CR never sent)
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        if kind is not None and data is not None:
            try:
                events.append((kind, json.loads(data)))
            except ValueError:
                pass
    return events


def stream_text(events) -> str:
    return "".join(d["delta"].get("text", "") for k, d in events
                   if k == "content_block_delta" and d["delta"]["type"] == "text_delta")


def body(text: str, *, stream: bool = False, max_tokens: int = 256, **extra) -> dict:
    return {"model": "claude-sonnet-4-6", "max_tokens": max_tokens, "stream": stream,
            "messages": [{"role": "user", "content": text}], **extra}


class RawStream:
    """An HTTP request on a raw socket, read as the test pleases (or not at all)."""

    def __init__(self, port: int, payload: dict, *, rcvbuf: int | None = None,
                 timeout: float = 10.0):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        data = json.dumps(payload).encode()
        self.sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Content-Type: application/json\r\nx-api-key: sk-fault\r\n"
                          + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        self.buffer = b""
        self.opened = time.monotonic()

    def read_until(self, marker: bytes, timeout: float = 10.0) -> float:
        """Read until ``marker`` is in what was received; returns the time it arrived."""
        deadline = time.monotonic() + timeout
        while marker not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {marker!r} within {timeout:g} s; got {self.buffer[-500:]!r}")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed before {marker!r}: {self.buffer[-500:]!r}")
            self.buffer += chunk
        return time.monotonic()

    def read_to_end(self, timeout: float = 20.0) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"stream not closed within {timeout:g} s: {self.buffer[-500:]!r}")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return self.buffer
            self.buffer += chunk
            if self.buffer.endswith(b"0\r\n\r\n"):   # chunked body ended (keep-alive)
                return self.buffer

    def status(self) -> int:
        return int(self.buffer.split(b" ", 2)[1])

    def headers(self) -> dict:
        head = self.buffer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
        return {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in head)}

    def body(self) -> bytes:
        """The response body so far, chunked transfer encoding undone."""
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        if b"chunked" not in head.lower():
            return rest
        out = b""
        while rest:
            size_line, sep, rest = rest.partition(b"\r\n")
            if not sep:
                break
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        return out

    def events(self) -> list[tuple[str, dict]]:
        return sse_events(self.body())

    def request_id(self) -> str:
        return self.headers().get("request-id", "")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class FaultSystem:
    """One system in its own home, run dir, port and (if possible) tmpfs cache."""

    def __init__(self, home: Path, model_dir: Path, *, name: str = "faults", extra: str = "",
                 queue_size: int = 3, timeouts: dict | None = None):
        self.home, self.model_dir, self.name = home, model_dir, name
        self.queue_size, self.timeouts = queue_size, {**TIMEOUTS, **(timeouts or {})}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.searxng = FakeSearxng()
        self.force_file = home / "force.json"
        self.force_file.write_text(json.dumps({"rules": []}))
        self.kv_dir = home / "cache" / "kv"
        self.kv_dir.mkdir(parents=True)
        self.tmpfs = _mount_tmpfs(self.kv_dir, KV_TMPFS_MB)
        self.guard_dir = home / "guard"
        self.guard_dir.mkdir()
        (self.guard_dir / "sitecustomize.py").write_text(GUARD)
        self.guard_log = home / "guard.log"
        self.run_dir = tempfile.mkdtemp(prefix="acf", dir="/tmp")
        self.config = home / "anyclaude.toml"
        self.extra = extra
        self.write_config()
        (home / "supervisor.toml").write_text(SUPERVISOR_TOML)
        path = [str(self.guard_dir), os.environ.get("PYTHONPATH", "")]
        self.env = {**os.environ,
                    "ANYCLAUDE_CONFIG": str(self.config),
                    "ANYCLAUDE_SUPERVISOR_TOML": str(home / "supervisor.toml"),
                    "ANYCLAUDE_RUN_DIR": self.run_dir,
                    "ANYCLAUDE_GUARD_LOG": str(self.guard_log),
                    "PYTHONPATH": os.pathsep.join(p for p in path if p),
                    "XDG_CACHE_HOME": str(home / "xdg-cache"),
                    "XDG_STATE_HOME": str(home / "xdg-state")}
        self._kills: list[float] = []
        self._lock = threading.Lock()

    def write_config(self, *, model_path: str | None = None) -> None:
        t = self.timeouts
        self.config.write_text(f"""
[server]
port = {self.port}
threads = 8
write_buffer_kb = 2

[models.tiny]
path = "{model_path or self.model_dir}"
context_window = 32768
max_output_tokens = 8192
# One slot: these rows are about admission, crashes and clients; they hold "the" slot with
# the force file's hold_until, which would stall a whole batch. Batching: tests/engine.
concurrency = 1

[routes]
default = "tiny"

[engine]
force_file = "{self.force_file}"
prefill_step_size = 32
queue_size = {self.queue_size}

[timeouts]
accept_s = {t['accept_s']}
first_frame_s = {t['first_frame_s']}
idle_s = {t['idle_s']}
total_s = {t['total_s']}
ping_interval_s = {t['ping_interval_s']}
restart_wait_s = {t['restart_wait_s']}

[cache]
dir = "{self.home / 'cache'}"
disk_budget_mb = 32
memory_budget_mb = 64
block_tokens = 32
write_retry_s = 1.0

[search]
searxng_url = "{self.searxng.url}"
timeout_s = 1.0

[logging]
dir = "{self.home / 'logs'}"
{self.extra}
""")

    # -- lifecycle --
    def cli(self, *args: str, timeout: float = 120, env: dict | None = None):
        return subprocess.run([sys.executable, "-m", "anyclaude.cli", *args],
                              env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout)

    def up(self) -> None:
        out = self.cli("up", "--detach", timeout=240)
        if out.returncode != 0:
            logs = "\n".join(f"== {p.name}\n{p.read_text()[-2000:]}"
                             for p in sorted((self.home / "logs").glob("*")))
            self.cli("down")
            raise AssertionError(f"anyclaude up failed: {out.stdout}\n{out.stderr}\n{logs}")

    def close(self) -> None:
        if (Path(self.run_dir) / "control").exists():
            with contextlib.suppress(Exception):
                for pid in self.pids().values():
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGCONT)
            with contextlib.suppress(Exception):
                self.cli("down", timeout=120)
        self.searxng.close()
        if self.tmpfs:
            subprocess.run(["umount", "-l", str(self.kv_dir)], capture_output=True, timeout=30)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- the bus, as the CLI uses it --
    def ask(self, service: str, msg: messages.Message, timeout: float = 5.0):
        with use_run_dir(self.run_dir):
            client = bus.Client(service, ctx=zmq.Context.instance())
        try:
            return client.request(msg, timeout=timeout)
        finally:
            client.close()

    def status(self) -> dict:
        return self.ask("control", messages.Command("status")).data

    def service(self, name: str) -> dict:
        return next(s for s in self.status()["services"] if s["name"] == name)

    def pids(self) -> dict:
        return {s["name"]: s["pid"] for s in self.status()["services"] if s["pid"]}

    def pid(self, name: str = "engine-tiny") -> int:
        return wait_for(lambda: self.service(name)["pid"], 30, what=f"a pid for {name}")

    def wait_ready(self, name: str = "engine-tiny", *, timeout: float = 60,
                   not_pid: int | None = None) -> dict:
        def ready():
            svc = self.service(name)
            return svc if svc["state"] == "ready" and svc["pid"] != not_pid else None
        return wait_for(ready, timeout, 0.05, what=f"{name} ready (not pid {not_pid})")

    def engine_info(self) -> dict:
        return self.ask("engine-tiny", messages.Command("info")).data

    def kv(self, command: str) -> dict:
        return self.ask("kvstore", messages.Command(command)).data

    def settle_cache(self) -> None:
        """Wait until the engine's pending cache writes have landed (the count stops moving)."""
        seen = [len(self.kv("ls")["entries"])]

        def stable():
            time.sleep(0.5)
            seen.append(len(self.kv("ls")["entries"]))
            return seen[-1] == seen[-2]
        wait_for(stable, 15, interval=0, what="the kvstore's entries to settle")

    def restart(self, name: str, timeout: float = 60) -> dict:
        """`anyclaude restart NAME`, through the same control command; waits until ready."""
        old = self.ask("control", messages.Command("restart", {"name": name})).data["old_pid"]
        return self.wait_ready(name, timeout=timeout, not_pid=old)

    # -- faults --
    def space_faults(self) -> None:
        """Call before a test that kills or stops a process: waits (if needed) so that the
        restart policy (3 failures within 8 s -> fatal) never gives up because of tests."""
        now = time.monotonic()
        recent = [t for t in self._kills if now - t < 9.0]
        if len(recent) >= 2:
            time.sleep(9.0 - (now - recent[0]))

    def signal(self, sig: int, name: str = "engine-tiny") -> int:
        pid = self.pid(name)
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            self._kills = [*self._kills[-2:], time.monotonic()]
        os.kill(pid, sig)
        return pid

    @contextlib.contextmanager
    def throttled(self, stop_s: float, run_s: float, name: str = "engine-tiny"):
        """The process runs run_s out of every stop_s + run_s seconds: a slow engine."""
        pid = self.pid(name)
        done = threading.Event()

        def cycle():
            with contextlib.suppress(ProcessLookupError):
                while not done.is_set():
                    os.kill(pid, signal.SIGSTOP)
                    done.wait(stop_s)
                    os.kill(pid, signal.SIGCONT)
                    done.wait(run_s)
        thread = threading.Thread(target=cycle, daemon=True)
        thread.start()
        try:
            yield pid
        finally:
            done.set()
            thread.join(5)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)

    def say(self, *rules: tuple, otherwise: str | None = "ok") -> None:
        """Force file rules: (match, text) or (match, text, {extra keys, e.g. hold_until})."""
        listed = [{"match": r[0], "say": r[1], **(r[2] if len(r) > 2 else {})} for r in rules]
        if otherwise is not None:
            listed.append({"match": "", "say": otherwise})
        tmp = self.force_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rules": listed}))
        os.replace(tmp, self.force_file)

    # -- HTTP --
    def post(self, payload: dict, *, timeout: float = 30.0, path: str = "/v1/messages",
             headers: dict | None = None) -> httpx.Response:
        return httpx.post(self.url + path, json=payload, timeout=timeout,
                          headers={"x-api-key": "sk-fault", **(headers or {})})

    def raw(self, payload: dict, **kwargs) -> RawStream:
        return RawStream(self.port, payload, **kwargs)

    def guard_entries(self) -> list[dict]:
        if not self.guard_log.exists():
            return []
        return [json.loads(line) for line in self.guard_log.read_text().splitlines() if line]


def _mount_tmpfs(path: Path, size_mb: int) -> bool:
    """A real small filesystem for the KV store (we may not be allowed: then a plain dir)."""
    if os.geteuid() != 0 or os.environ.get("ANYCLAUDE_FAULTS_NO_TMPFS"):
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs",
                           str(path)], capture_output=True, timeout=30)
    return done.returncode == 0


def unique_words(n: int, seed: str) -> str:
    """A prompt no earlier request shares (no prefix-cache hit)."""
    import hashlib
    words = []
    for i in range(n):
        words.append(hashlib.blake2b(f"{seed}-{i}".encode(), digest_size=3).hexdigest())
    return " ".join(words)
