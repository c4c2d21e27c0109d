"""The front door as a process: `python -m anyclaude.services.frontdoor`.

It reads anyclaude.toml (through ANYCLAUDE_CONFIG), announces readiness to the supervisor's
control socket once it listens, serves through the real bus (fake engine and optimizer
services in this test process), refuses to start exposed without a key, and leaves on TERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import anthropic
import zmq

from anyclaude import bus, messages
from anyclaude.messages import Optimize, Optimized


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path, port: int) -> str:
    path = tmp_path / "anyclaude.toml"
    path.write_text(f"""
[server]
port = {port}
[models.local-main]
context_window = 32768
max_output_tokens = 2048
[routes]
default = "local-main"
[logging]
dir = "{tmp_path / 'logs'}"
""")
    return str(path)


class Control:
    """Plays the supervisor's control ROUTER: acknowledges `ready` commands."""

    def __init__(self):
        self.ready = threading.Event()
        self.readies: list[dict] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        sock = bus.make_socket(zmq.Context.instance(), zmq.ROUTER)
        sock.bind(bus.endpoint("control"))
        try:
            while not self._stop.is_set():
                if not sock.poll(50):
                    continue
                peer, *frames = sock.recv_multipart()
                msg, rid = messages.decode(frames)
                if isinstance(msg, messages.Command) and msg.name == "ready":
                    self.readies.append(msg.args)
                    sock.send_multipart([peer, *messages.encode(messages.Reply(True), rid)])
                    if msg.args.get("service") == "frontdoor":
                        self.ready.set()
        finally:
            sock.close(0)
            bus.socket_path("control").unlink(missing_ok=True)

    def stop(self):
        self._stop.set()
        self.thread.join(2)


def test_refuses_to_start_exposed_without_a_key(tmp_path, run_dir):
    env = {**os.environ, "ANYCLAUDE_CONFIG": write_config(tmp_path, free_port()),
           "ANYCLAUDE_SERVER_HOST": "0.0.0.0"}
    proc = subprocess.run([sys.executable, "-m", "anyclaude.services.frontdoor"], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "server.api_key" in proc.stderr and "0.0.0.0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_process_serves_announces_ready_and_stops_on_term(tmp_path, fake_engines):
    handed = {"ids": b"\x01\x00\x00\x00", "tokens": 1, "key": "k", "fingerprint": "f"}
    optimizer = bus.Service("optimizer", {Optimize: lambda call: call.send(
        Optimized({**call.message.request, "system": ["optimized"], "prompt": handed}))})
    threading.Thread(target=optimizer.run, daemon=True).start()
    control = Control()
    port = free_port()
    env = {**os.environ, "ANYCLAUDE_CONFIG": write_config(tmp_path, port)}
    proc = subprocess.Popen([sys.executable, "-m", "anyclaude.services.frontdoor"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert control.ready.wait(30), proc.stderr.read() if proc.poll() is not None else ""
        ready = [r for r in control.readies if r["service"] == "frontdoor"]
        assert ready[0]["pid"] == proc.pid
        client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key="k",
                                     max_retries=0, timeout=30)
        raw = client.messages.with_raw_response.create(
            model="claude-opus-4-7", max_tokens=64000,
            messages=[{"role": "user", "content": "fake:text via process"}])
        assert raw.parse().content[0].text == "via process"
        request = fake_engines["local-main"].request_of(raw.headers["request-id"])
        assert request["system"] == ["optimized"]
        # one place clamps max_tokens: the optimizer (this stand-in does not); the front door
        # passes on what it returned, the rendered prompt included
        assert request["max_tokens"] == 64000 and request["prompt"] == handed
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert (tmp_path / "logs" / "frontdoor.log").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        control.stop()
        optimizer.stop()
