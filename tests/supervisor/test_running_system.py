"""A running system of placeholder services, driven through the real CLI and bus."""

from __future__ import annotations

import json
import os
import signal

import pytest
import zmq

from anyclaude import bus, errors, messages

from .conftest import System, pid_gone, service, wait_for

SERVICES = (service("alpha", "ok")
            + service("beta", "slow", "1.0")
            + service("gamma", "after", "beta", depends_on=["beta"]))


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    sys_ = System(tmp_path_factory.mktemp("running"), SERVICES)
    result = sys_.cli("up", "--detach", timeout=60)
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        sys_.up_output = result.stdout
        yield sys_
    finally:
        sys_.cli("down", "--timeout", "20", timeout=30)
        sys_.kill_everything()


def test_up_detach_waits_until_all_are_ready(system):
    assert "anyclaude is ready (3 services)" in system.up_output
    data = system.status()
    assert [s["name"] for s in data["services"]] == ["alpha", "beta", "gamma"]
    for s in data["services"]:
        assert s["state"] == "ready"
        assert s["pid"] and not pid_gone(s["pid"])
        assert s["last_heartbeat_age_s"] is not None


def test_dependent_starts_only_after_its_dependency_is_ready(system):
    # gamma pinged beta over the bus the moment it started and wrote down what it saw
    seen = (system.log_dir / "gamma.deps").read_text().splitlines()
    assert seen == ["beta ready"]
    assert system.service("gamma")["restarts"] == 0


def test_status_table_is_readable(system):
    result = system.cli("status")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["SERVICE", "STATE", "PID", "UPTIME", "RESTARTS", "HEARTBEAT", "INFO"]
    assert any(line.split()[:2] == ["alpha", "ready"] for line in lines)


def test_heartbeat_info_is_reported_in_status(system):
    with system.bus_env():
        client = bus.Client("alpha")
        try:
            for _ in range(3):
                reply = client.request(messages.Search("hello"), timeout=5)
                assert isinstance(reply, messages.Results)
        finally:
            client.close()
    wait_for(lambda: system.service("alpha")["info"].get("searches", 0) >= 3, 10,
             "the heartbeat to carry the new counter")


def test_kill_9_is_restarted_and_counted(system):
    before = system.wait_state("alpha", "ready")
    os.kill(before["pid"], signal.SIGKILL)
    after = system.wait_state("alpha", "ready", pid=lambda p: p != before["pid"])
    assert after["restarts"] == before["restarts"] + 1


def test_hung_service_is_replaced_after_missed_heartbeats(system):
    before = system.wait_state("alpha", "ready")
    os.kill(before["pid"], signal.SIGSTOP)
    try:
        after = system.wait_state("alpha", "ready", timeout=30,
                                  pid=lambda p: p != before["pid"])
    finally:
        if not pid_gone(before["pid"]):
            os.kill(before["pid"], signal.SIGCONT)
    assert wait_for(lambda: pid_gone(before["pid"]), 10, "the hung process to be gone")
    assert after["restarts"] == before["restarts"] + 1
    log = (system.log_dir / "supervisor.log").read_text()
    assert "no heartbeat for 2.5 s" in log


def test_restart_command_gives_a_new_pid(system):
    before = system.wait_state("beta", "ready")
    result = system.cli("restart", "beta")
    assert result.returncode == 0, result.stderr
    after = system.service("beta")
    assert after["state"] == "ready" and after["pid"] != before["pid"]
    assert f"beta restarted (pid {after['pid']})" in result.stdout
    assert pid_gone(before["pid"])


def test_restart_unknown_name_lists_the_names(system):
    result = system.cli("restart", "nope")
    assert result.returncode == 1
    assert "unknown service 'nope'; services: alpha, beta, gamma" in result.stderr
    assert "Traceback" not in result.stderr


def test_second_up_says_one_is_running(system):
    pid = system.supervisor_pid()
    for args in (["up", "--detach"], ["up"]):
        result = system.cli(*args, timeout=30)
        assert result.returncode == 1
        assert f"anyclaude is already running (pid {pid})" in result.stderr
    assert system.supervisor_pid() == pid
    assert all(s["state"] == "ready" for s in system.status()["services"])


def test_logs_show_the_supervisor_log(system):
    result = system.cli("logs", "supervisor", "-n", "200")
    assert result.returncode == 0
    assert "supervisor.child.ready" in result.stdout
    result = system.cli("logs", "nope")
    assert result.returncode == 1 and "no logs for 'nope'" in result.stderr


def _raw_exchange(name: str, frames: list[bytes]) -> list[bytes]:
    ctx = zmq.Context.instance()
    sock = bus.make_socket(ctx, zmq.DEALER)
    try:
        sock.connect(bus.endpoint(name))
        sock.send_multipart(frames)
        assert sock.poll(5000), f"{name} did not answer {frames!r}"
        return sock.recv_multipart()
    finally:
        sock.close(0)


BAD_FRAMES = [
    [b"just one frame"],
    [b"\x09Search", b"r1", b"\x80"],                      # wrong wire version
    [b"\x01Search", b"r2", b"\xc1"],                      # not msgpack
    [b"\x01Bogus", b"r3", b"\x80"],                       # unknown kind
    [b"\x01Search", b"r4", b"\x81\xa5query\x07"],         # wrong field type
    [*messages.encode(messages.Generate({}), b"r5")],    # a kind this service does not handle
]


@pytest.mark.parametrize("target", ["alpha", "control"])
def test_bad_frames_get_an_error_and_the_service_keeps_serving(system, target):
    with system.bus_env():
        for frames in BAD_FRAMES:
            reply, _ = messages.decode(_raw_exchange(target, frames))
            assert isinstance(reply, messages.Error), (frames, reply)
            assert reply.type == "bad_frame" and reply.message
        client = bus.Client(target)
        try:
            if target == "alpha":
                assert isinstance(client.request(messages.Search("still there"), timeout=5),
                                  messages.Results)
            else:
                reply = client.request(messages.Command("status"), timeout=5)
                assert reply.ok and len(reply.data["services"]) == 3
                reply = client.request(messages.Command("frobnicate"), timeout=5)
                assert not reply.ok and "unknown command 'frobnicate'" in reply.error
                reply = client.request(messages.Command("ready", {"service": "alpha", "pid": 1}),
                                       timeout=5)
                assert not reply.ok and "not the starting process" in reply.error
        finally:
            client.close()


def test_unknown_kind_error_is_raised_by_the_client(system):
    with system.bus_env():
        client = bus.Client("alpha")
        try:
            with pytest.raises(errors.BadFrame, match="does not handle Count"):
                client.request(messages.Count({}), timeout=5)
        finally:
            client.close()


def test_status_json_is_machine_readable(system):
    result = system.cli("status", "--json")
    data = json.loads(result.stdout)
    assert set(data["services"][0]) >= {"name", "state", "pid", "uptime_s", "restarts",
                                        "last_heartbeat_age_s", "reason", "info"}
