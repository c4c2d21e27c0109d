"""The system as a whole: the circuit breaker, a service that crashes on every start (faults
row 21), and the security defaults (loopback, exposure refused without a key, a private run
dir, nothing sent off the machine). Runs last on the session's system: the crash loop
rewrites its config (and puts it back)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2 as httpx

from anyclaude import messages

from .harness import REPO, body, free_port, wait_for


def health(system) -> dict:
    return httpx.get(system.url + "/health", timeout=10).json()


def test_breaker_opens_on_engine_failures_refuses_fast_then_closes(system):
    rules = [{"match": "make it fail", "say": "partial", "fail": True}, {"match": "", "say": "ok"}]
    system.force_file.write_text(json.dumps({"rules": rules}))
    assert system.post(body("a success first")).status_code == 200    # no failures carried over
    for _ in range(5):                                   # the front door's threshold
        reply = system.post(body("make it fail"))
        assert reply.status_code == 500 and reply.json()["error"]["type"] == "api_error"
    state = health(system)
    assert state["breaker"]["state"] == "open" and state["state"] == "degraded"
    requests = system.engine_info()["requests"]
    refused = system.post(body("anything"))
    assert refused.status_code == 529 and "circuit breaker open" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 10
    assert system.engine_info()["requests"] == requests  # refused without calling the engine
    info = wait_for(lambda: (lambda i: i if i.get("breaker") == "open" else None)(
        system.service("frontdoor")["info"]), 5, what="the breaker in `anyclaude status`")
    assert info["breaker_trips"] >= 1
    assert "breaker=open" in system.cli("status").stdout
    # after the cooldown (10 s) one trial goes through; its success closes the breaker
    reply = wait_for(lambda: (lambda r: r if r.status_code == 200 else None)(
        system.post(body("trial"))), 15, interval=0.5, what="the half-open trial")
    assert reply.json()["content"][0]["text"] == "ok"
    assert health(system)["breaker"]["state"] == "closed"


def test_row21_crash_loop_backs_off_goes_fatal_and_requests_say_why(system):
    system.write_config(model_path=str(system.home / "no-such-model"))
    try:
        system.ask("control", messages.Command("restart", {"name": "engine-tiny"}))
        seen: list = []
        fatal = None
        deadline = time.monotonic() + 60
        while fatal is None and time.monotonic() < deadline:
            svc = system.service("engine-tiny")
            if svc["state"] == "fatal":
                fatal = svc
                break
            started = time.monotonic()
            reply = system.post(body("while it crashes"), timeout=30)
            seen.append((svc["state"], reply.status_code, reply.json()["error"]["message"],
                         time.monotonic() - started))
            time.sleep(0.1)
        assert fatal is not None, seen[-5:]
        assert "gave up after 3 failures" in fatal["reason"] and "code 2" in fatal["reason"]
        assert any(line.strip() for line in fatal["stderr_tail"])
        for state, code, message, _ in seen:             # restarting: 529, given up: 503
            assert (code, message[:14]) in ((529, "engine-tiny is"), (503, "engine-tiny is")), \
                (state, code, message)
        print(f"\n[row21] during the crash loop: {[(c, m[:30]) for _, c, m, _ in seen]}, "
              f"slowest {max(t for *_, t in seen):.2f} s")
        time.sleep(0.5)             # the front door caches the supervisor's word for 0.25 s
        started = time.monotonic()
        reply = system.post(body("after it gave up"))
        took = time.monotonic() - started
        assert reply.status_code == 503, reply.text
        error = reply.json()["error"]
        assert error["type"] == "api_error" and error["message"].startswith("engine-tiny is fatal: ")
        assert "gave up after 3 failures" in error["message"]
        assert "anyclaude restart engine-tiny" in error["message"]
        assert reply.headers["x-should-retry"] == "false"
        print(f"[row21] fatal engine: 503 in {took:.3f} s: {error['message'][:160]}")
        status = system.cli("status")
        assert "engine-tiny is fatal" in status.stdout
    finally:
        system.write_config()
        system.restart("engine-tiny")
    assert system.post(body("fixed")).json()["content"][0]["text"] == "ok"


def test_listens_on_loopback_only(system):
    port = f"{system.port:04X}"
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if local.endswith(":" + port) and state == "0A":      # LISTEN
                    listening.append(local.split(":")[0])
    assert listening == ["0100007F"]                     # 127.0.0.1, nothing else


def test_up_refuses_to_expose_the_api_without_a_key(system):
    run_dir = tempfile.mkdtemp(prefix="acx", dir="/tmp")
    out = system.cli("up", "--detach", timeout=60, env={
        "ANYCLAUDE_SERVER_HOST": "0.0.0.0", "ANYCLAUDE_SERVER_PORT": str(free_port()),
        "ANYCLAUDE_RUN_DIR": run_dir})
    assert out.returncode != 0
    assert "server.api_key" in out.stderr and "0.0.0.0" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert not (Path(run_dir) / "supervisor.pid").exists()        # nothing was started


def test_run_dir_is_private(system):
    info = os.stat(system.run_dir)
    assert info.st_mode & 0o777 == 0o700 and info.st_uid == os.geteuid()
    assert (Path(system.run_dir) / "frontdoor").is_socket()
    loose = tempfile.mkdtemp(prefix="acl", dir="/tmp")
    os.chmod(loose, 0o755)
    assert system.cli("status", env={"ANYCLAUDE_RUN_DIR": loose}).returncode == 3   # not running
    assert os.stat(loose).st_mode & 0o777 == 0o700      # tightened on first use
    if os.geteuid() == 0:
        foreign = tempfile.mkdtemp(prefix="acf", dir="/tmp")
        os.chown(foreign, 65534, 65534)
    else:
        foreign = "/tmp"                                 # owned by root
    out = system.cli("status", env={"ANYCLAUDE_RUN_DIR": foreign})
    assert out.returncode != 0 and "belongs to another user" in out.stderr


NET_MODULES = {"http.client", "urllib.request", "httpx", "httpx2", "requests", "aiohttp",
               "urllib3", "websocket", "websockets"}
NET_CALLS = {"create_connection", "urlopen", "HTTPConnection", "HTTPSConnection"}
ALLOWED = {"services/websearch/searxng.py", "services/websearch/probe.py",
           "services/engine/backends/upstream_http.py",
           # starts a llama-server on 127.0.0.1 for the llama tests and bench_llama.py, and
           # polls its /health there; no service imports it
           "anyclaude/llamaserver.py"}


def network_users() -> set[str]:
    """Modules of ours that import an HTTP client or open a TCP connection themselves."""
    found = set()
    for root in ("anyclaude", "services"):
        for path in (REPO / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = set()
                if isinstance(node, ast.Import):
                    names = {a.name for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
                    names |= {a.name for a in node.names} & NET_CALLS
                elif isinstance(node, ast.Attribute):
                    names = {node.attr} & NET_CALLS
                elif isinstance(node, ast.Name):
                    names = {node.id} & NET_CALLS
                if any(n in NET_MODULES or n.split(".")[0] in NET_MODULES - {"http", "urllib"}
                       or n in NET_CALLS for n in names):
                    found.add(str(path.relative_to(REPO)))
    return found


def test_nothing_leaves_the_machine(system, tmp_path):
    """Every Python process of the system ran under a socket guard during this whole session:
    the only outbound TCP connections were websearch's, to the configured SearXNG."""
    entries = system.guard_entries()
    assert entries, "the guard saw no connection at all (was it loaded?)"
    assert all(e["allowed"] for e in entries), [e for e in entries if not e["allowed"]]
    assert {e["port"] for e in entries} == {system.searxng.port}
    assert all("websearch" in " ".join(e["argv"]) for e in entries)
    # the guard is real: in the system's environment a connection off the machine is refused
    log = tmp_path / "guard.log"
    probe = subprocess.run(
        [sys.executable, "-c", "import socket; socket.create_connection(('192.0.2.1', 80), 1)"],
        env={**system.env, "ANYCLAUDE_GUARD_LOG": str(log)}, capture_output=True, text=True,
        timeout=30)
    assert probe.returncode != 0 and "fault guard" in probe.stderr
    assert json.loads(log.read_text())["allowed"] is False
    # and in the code: only the SearXNG client and the remote-backend client connect anywhere
    found = network_users()
    assert "services/websearch/searxng.py" in found          # the scan does see them
    assert found <= ALLOWED, found - ALLOWED
