#!/usr/bin/env python
"""Bus benchmark: round-trip latency and streaming throughput over ipc.

Two processes: a server (``bus.Service``, or a raw pyzmq ROUTER as the baseline) and this
client (``bus.Client``, or a raw DEALER). Prints p50/p99 round-trip time of many small
requests, and frames/s of one long streamed reply of small Delta frames sent from a worker
thread (as the engine's generation thread does).

    python scripts/bench_bus.py [--requests 5000] [--frames 50000]

Goal: p50 RTT <= 200 us and >= 20,000 streamed frames/s through the bus.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import zmq

from anyclaude import bus, logs, messages

SERVICE = "bench"
EVENTS = [{"type": "text", "text": "tok"}]


# --- servers ----------------------------------------------------------------------------

def serve_bus() -> None:
    def count(call: bus.Call) -> None:
        call.send(messages.Counted(input_tokens=1))

    def generate(call: bus.Call) -> None:
        frames = int(call.message.request["frames"])

        def produce():
            call.send(messages.Accepted())
            delta = messages.Delta(EVENTS)
            for _ in range(frames):
                if call.gone.is_set():
                    break
                call.send(delta)
            call.send(messages.Done("end_turn", usage={"output_tokens": frames}))
            service.close_thread_sockets()
        threading.Thread(target=produce, daemon=True).start()

    service = bus.Service(SERVICE, {messages.Count: count, messages.Generate: generate})
    signal.signal(signal.SIGTERM, lambda *_: service.stop())
    service.run()


def serve_raw() -> None:
    """The baseline: the same frames, no schema checks, no dispatch, no outbox hop."""
    ctx = zmq.Context.instance()
    router = bus.make_socket(ctx, zmq.ROUTER)
    router.bind(bus.endpoint(SERVICE))
    counted = messages.encode(messages.Counted(input_tokens=1), b"")
    delta = messages.encode(messages.Delta(EVENTS), b"")
    done = messages.encode(messages.Done("end_turn"), b"")
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        peer, head, rid, body = router.recv_multipart()
        if head.endswith(b"Count"):
            router.send_multipart([peer, counted[0], rid, counted[2]])
            continue
        frames = int(messages.decode([head, rid, body])[0].request["frames"])
        for _ in range(frames):
            router.send_multipart([peer, delta[0], rid, delta[2]])  # blocks at the HWM
        router.send_multipart([peer, done[0], rid, done[2]])


# --- clients ----------------------------------------------------------------------------

def bus_rtt(n: int) -> list[float]:
    client = bus.Client(SERVICE)
    msg = messages.Count({})
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.request(msg, timeout=5)
        out.append(time.perf_counter() - t0)
    client.close()
    return out


def bus_stream(frames: int) -> float:
    client = bus.Client(SERVICE)
    got = 0
    t0 = time.perf_counter()
    for frame in client.stream(messages.Generate({"frames": frames})):
        if isinstance(frame, messages.Delta):
            got += 1
    elapsed = time.perf_counter() - t0
    client.close()
    assert got == frames, f"received {got} of {frames} frames"
    return got / elapsed


def raw_rtt(n: int) -> list[float]:
    sock = bus.make_socket(zmq.Context.instance(), zmq.DEALER)
    sock.connect(bus.endpoint(SERVICE))
    frames = messages.encode(messages.Count({}), b"r")
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        sock.send_multipart(frames)
        if not sock.poll(5000):
            raise TimeoutError("raw server did not answer")
        messages.decode(sock.recv_multipart())
        out.append(time.perf_counter() - t0)
    sock.close(0)
    return out


def raw_stream(frames: int) -> float:
    sock = bus.make_socket(zmq.Context.instance(), zmq.DEALER)
    sock.connect(bus.endpoint(SERVICE))
    got = 0
    t0 = time.perf_counter()
    sock.send_multipart(messages.encode(messages.Generate({"frames": frames}), b"s"))
    while True:
        if not sock.poll(5000):
            raise TimeoutError("raw stream stalled")
        msg, _ = messages.decode(sock.recv_multipart())
        if isinstance(msg, messages.Done):
            break
        got += 1
    elapsed = time.perf_counter() - t0
    sock.close(0)
    assert got == frames, f"received {got} of {frames} frames"
    return got / elapsed


# --- driver -----------------------------------------------------------------------------

def measure(kind: str, requests: int, frames: int) -> dict:
    server = subprocess.Popen([sys.executable, __file__, "--serve", kind])
    try:
        sock = bus.socket_path(SERVICE)
        deadline = time.monotonic() + 20
        while not sock.exists():
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"{kind} server did not start")
            time.sleep(0.02)
        rtt, stream = (bus_rtt, bus_stream) if kind == "bus" else (raw_rtt, raw_stream)
        rtt(min(500, requests))  # warm up
        times = sorted(rtt(requests))
        rate = statistics.median(stream(frames) for _ in range(3))
        return {"p50_us": times[len(times) // 2] * 1e6,
                "p99_us": times[int(len(times) * 0.99)] * 1e6,
                "frames_per_s": rate}
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--frames", type=int, default=50000)
    parser.add_argument("--serve", choices=("bus", "raw"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        logs.configure(f"bench-{args.serve}", console_level="warning")
        (serve_bus if args.serve == "bus" else serve_raw)()
        return
    run_dir = tempfile.mkdtemp(prefix="acb", dir="/tmp")
    os.environ["ANYCLAUDE_RUN_DIR"] = run_dir
    try:
        results = {kind: measure(kind, args.requests, args.frames) for kind in ("bus", "raw")}
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    print(f"{args.requests} requests, {args.frames} streamed frames per run (median of 3), ipc")
    print(f"{'':24}{'bus':>12}{'raw pyzmq':>12}")
    for key, label in (("p50_us", "RTT p50 (us)"), ("p99_us", "RTT p99 (us)"),
                       ("frames_per_s", "stream (frames/s)")):
        print(f"{label:24}{results['bus'][key]:12,.0f}{results['raw'][key]:12,.0f}")
    ok = results["bus"]["p50_us"] <= 200 and results["bus"]["frames_per_s"] >= 20_000
    print("goal (p50 <= 200 us, >= 20,000 frames/s):", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
