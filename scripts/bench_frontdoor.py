"""What the front door adds: HTTP + SSE vs calling the same fake engine service over the bus.

Three processes, so no two share a GIL: the fake engine service (tests/frontdoor/
fd_fake_engine.py), the front door (this script with --serve: the real app, real waitress,
the real bus gateway) and the measuring client (this script).

Measured:
  ttfb          request sent -> first byte of the response (message_start)
  first_content request sent -> first text_delta, vs bus: Generate sent -> first Delta
  relay         one stream of N one-token Deltas: SSE content events per second through the
                front door, vs Delta frames per second read straight off the bus

    .venv/bin/python scripts/bench_frontdoor.py [--requests 200] [--events 20000]
Goals: <= 3 ms added p50 (first content), >= 5,000 relayed events/s on one stream.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FAKE = REPO / "tests" / "frontdoor" / "fd_fake_engine.py"
MODEL = "bench"


def serve(port: int) -> None:
    import logging

    from anyclaude.config import ModelConfig, RoutesConfig, ServerConfig, Settings
    from anyclaude.services.frontdoor.app import create_app
    from anyclaude.breaker import Breaker
    from anyclaude.services.frontdoor.gateway import BusEngines
    from anyclaude.services.frontdoor.server import make_server
    logging.basicConfig(level=logging.WARNING)
    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    settings = Settings(server=ServerConfig(port=port, threads=8),
                        models={MODEL: ModelConfig()}, routes=RoutesConfig(default=MODEL))
    app = create_app(settings=settings, engines=BusEngines(settings), breaker=Breaker())
    server = make_server(app, settings)
    print("listening", flush=True)
    server.run()


def body(text: str, stream: bool = True) -> bytes:
    return json.dumps({"model": MODEL, "max_tokens": 100, "stream": stream,
                       "messages": [{"role": "user", "content": text}]}).encode()


def http_stream(port: int, payload: bytes, *, until: bytes | None = None):
    """(ttfb, time to `until` or None, full raw response, elapsed) for one request."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = (b"POST /v1/messages HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
               + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    start = time.perf_counter()
    sock.sendall(request)
    chunks, ttfb, hit = [], None, None
    while True:
        chunk = sock.recv(1 << 16)
        now = time.perf_counter()
        if not chunk:
            break
        if ttfb is None:
            ttfb = now - start
        chunks.append(chunk)
        if until is not None and hit is None and until in chunk:
            hit = now - start
        if chunk.endswith(b"0\r\n\r\n"):
            break
    sock.close()
    return ttfb, hit, b"".join(chunks), time.perf_counter() - start


def bus_stream(client, text: str):
    from anyclaude import messages
    request = {"model": MODEL, "system": [], "tools": [], "max_tokens": 100, "thinking": False,
               "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]}
    start = time.perf_counter()
    first, count = None, 0
    for frame in client.stream(messages.Generate(request)):
        if isinstance(frame, messages.Delta):
            if first is None:
                first = time.perf_counter() - start
            count += len(frame.events)
    return first, count, time.perf_counter() - start


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", type=int)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--events", type=int, default=20000)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0

    run_dir = tempfile.mkdtemp(prefix="acb", dir="/tmp")
    env = {**os.environ, "ANYCLAUDE_RUN_DIR": run_dir, "PYTHONUNBUFFERED": "1"}
    os.environ["ANYCLAUDE_RUN_DIR"] = run_dir
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = subprocess.Popen([sys.executable, str(FAKE), MODEL], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    door = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        door.stdout.readline()
        from anyclaude import bus
        deadline = time.monotonic() + 10
        while not bus.socket_path(f"engine-{MODEL}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        client = bus.Client(f"engine-{MODEL}")
        for _ in range(20):   # warm up both paths
            bus_stream(client, "fake:text warm")
            http_stream(port, body("fake:text warm"))

        bus_first, door_first, door_ttfb = [], [], []
        for _ in range(args.requests):
            first, _, _ = bus_stream(client, "fake:text hi")
            bus_first.append(first)
            ttfb, hit, raw, _ = http_stream(port, body("fake:text hi"), until=b"text_delta")
            assert b"message_stop" in raw, raw[-300:]
            door_ttfb.append(ttfb)
            door_first.append(hit)

        _, bus_count, bus_elapsed = bus_stream(client, f"fake:burst {args.events}")
        _, _, raw, elapsed = http_stream(port, body(f"fake:burst {args.events}"))
        relayed = raw.count(b"event: content_block_delta")
        assert relayed == args.events and b"message_stop" in raw, (relayed, raw[-300:])

        ms = 1000
        report = {
            "requests": args.requests,
            "ttfb_ms": {"p50": pct(door_ttfb, .5) * ms, "p90": pct(door_ttfb, .9) * ms},
            "first_content_ms": {"frontdoor_p50": pct(door_first, .5) * ms,
                                 "frontdoor_p90": pct(door_first, .9) * ms,
                                 "bus_p50": pct(bus_first, .5) * ms,
                                 "bus_p90": pct(bus_first, .9) * ms,
                                 "added_p50": (statistics.median(door_first)
                                               - statistics.median(bus_first)) * ms},
            "relay": {"events": args.events,
                      "frontdoor_events_per_s": relayed / elapsed,
                      "bus_frames_per_s": bus_count / bus_elapsed,
                      "frontdoor_us_per_event": elapsed / relayed * 1e6,
                      "bus_us_per_frame": bus_elapsed / bus_count * 1e6},
        }
        print(json.dumps(report, indent=2))
        client.close()
    finally:
        for proc in (door, engine):
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
