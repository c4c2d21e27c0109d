"""Load test: many concurrent clients against one engine slot, then an engine kill under load.

    .venv/bin/python scripts/load_test.py [--clients 50] [--seconds 20] [--queue-size 8]
                                          [--kill-at 10] [--json out.json]

Starts a whole system in a temporary home (`anyclaude up --detach`, the tiny random-weight
model made to say a short fixed answer; tests/faults/harness.py), then runs CLIENTS threads
for SECONDS. Each client streams one request after another (a short random think time in
between); on 529 it waits the retry-after it was given (capped at 2 s) and tries again, as
the SDK and Claude Code do. At KILL_AT seconds the engine gets kill -9.

It reports, per outcome: admitted and completed, rejected with 529 (immediately, before any
byte), failed by the kill (in flight when the engine died), and other errors (goal: 0);
time to first byte (message_start) and to first token for completed requests, p50/p99; how
long 529s took to arrive; and the recovery after the kill: until the supervisor had the
engine ready again, and until the first request admitted after the kill completed.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from faults.harness import FaultSystem, sse_events  # noqa: E402

from anyclaude.tinymodel import ensure_tiny_model  # noqa: E402

ANSWER = "A short answer from the local engine under load."


@dataclass
class Result:
    started: float
    outcome: str                    # completed | rejected | killed | error
    first_byte: float | None = None
    first_token: float | None = None
    ended: float = 0.0
    detail: str = ""


@dataclass
class Run:
    results: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, result: Result) -> None:
        with self.lock:
            self.results.append(result)


def one_request(client: httpx.Client, url: str, n: int) -> tuple[Result, float]:
    """Stream one request; returns its result and the retry-after to honour (0 if none)."""
    payload = {"model": "claude-sonnet-4-6", "max_tokens": 64, "stream": True,
               "messages": [{"role": "user", "content": f"load request {n}: answer briefly"}]}
    started = time.monotonic()
    result = Result(started, "error")
    try:
        with client.stream("POST", url + "/v1/messages", json=payload,
                           headers={"x-api-key": "sk-load"}) as reply:
            if reply.status_code == 529:
                reply.read()
                result.outcome, result.ended = "rejected", time.monotonic()
                return result, float(reply.headers.get("retry-after", "1"))
            if reply.status_code != 200:
                reply.read()
                result.detail = f"HTTP {reply.status_code}: {reply.text[:200]}"
                result.ended = time.monotonic()
                return result, 0.0
            raw = b""
            for chunk in reply.iter_raw():
                now = time.monotonic()
                if result.first_byte is None:
                    result.first_byte = now - started
                raw += chunk
                if result.first_token is None and b"text_delta" in raw:
                    result.first_token = now - started
    except httpx.HTTPError as exc:
        result.detail, result.ended = f"{exc.__class__.__name__}: {exc}", time.monotonic()
        return result, 0.0
    result.ended = time.monotonic()
    events = sse_events(raw)
    kinds = [k for k, _ in events]
    if kinds and kinds[-1] == "message_stop" and "error" not in kinds:
        result.outcome = "completed"
    else:
        error = next((d["error"] for k, d in events if k == "error"), {"message": "truncated"})
        result.detail = f"{error.get('type')}: {error.get('message')}"
        result.outcome = "killed" if "went away" in result.detail else "error"
    return result, 0.0


def client_loop(url: str, stop_at: float, run: Run, seed: int) -> None:
    rng = random.Random(seed)
    n = 0
    with httpx.Client(timeout=60) as client:
        while time.monotonic() < stop_at:
            n += 1
            result, wait = one_request(client, url, seed * 1000 + n)
            run.add(result)
            time.sleep(min(wait, 2.0) if wait else rng.uniform(0.0, 0.5))


def percentile(values: list, q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def summarize(run: Run, killed_at: float | None, ready_at: float | None,
              clients: int, seconds: float) -> dict:
    results = run.results
    by = {k: [r for r in results if r.outcome == k] for k in ("completed", "rejected", "killed",
                                                              "error")}
    done = by["completed"]
    fb = [r.first_byte for r in done if r.first_byte is not None]
    ft = [r.first_token for r in done if r.first_token is not None]
    rejections = [r.ended - r.started for r in by["rejected"]]
    summary = {
        "clients": clients, "seconds": seconds, "requests": len(results),
        "completed": len(done), "rejected_529": len(by["rejected"]),
        "failed_by_the_kill": len(by["killed"]), "other_errors": len(by["error"]),
        "other_error_samples": sorted({r.detail for r in by["error"]})[:5],
        "throughput_per_s": round(len(done) / seconds, 2),
        "ttfb_p50_s": _r(percentile(fb, 0.5)), "ttfb_p99_s": _r(percentile(fb, 0.99)),
        "first_token_p50_s": _r(percentile(ft, 0.5)), "first_token_p99_s": _r(percentile(ft, 0.99)),
        "rejection_p50_s": _r(percentile(rejections, 0.5)),
        "rejection_p99_s": _r(percentile(rejections, 0.99)),
    }
    if killed_at is not None:
        after = [r for r in done if r.started >= killed_at]
        summary["engine_ready_after_kill_s"] = _r(ready_at - killed_at) if ready_at else None
        summary["first_completion_after_kill_s"] = _r(
            min(r.ended for r in after) - killed_at) if after else None
    return summary


def _r(value):
    return None if value is None else round(value, 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--queue-size", type=int, default=8)
    parser.add_argument("--kill-at", type=float, default=10.0,
                        help="seconds into the run to kill -9 the engine (negative: never)")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument("--keep", action="store_true", help="keep the system's home (logs)")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="acload"))
    system = FaultSystem(home, ensure_tiny_model(), queue_size=args.queue_size,
                         timeouts={"idle_s": 30.0, "first_frame_s": 60.0, "total_s": 120.0})
    print(f"starting a system in {home} ...", flush=True)
    system.up()
    try:
        system.say(otherwise=ANSWER)
        run = Run()
        start = time.monotonic()
        stop_at = start + args.seconds
        threads = [threading.Thread(target=client_loop, args=(system.url, stop_at, run, i),
                                    daemon=True) for i in range(args.clients)]
        for t in threads:
            t.start()
        killed_at = ready_at = None
        if 0 <= args.kill_at < args.seconds:
            time.sleep(max(0.0, start + args.kill_at - time.monotonic()))
            pid = system.signal(9)
            killed_at = time.monotonic()
            print(f"killed the engine (pid {pid}) at {killed_at - start:.1f} s", flush=True)
            system.wait_ready(not_pid=pid, timeout=60)
            ready_at = time.monotonic()
        for t in threads:
            t.join(args.seconds + 120)
        summary = summarize(run, killed_at, ready_at, args.clients, args.seconds)
        summary["frontdoor"] = {k: v for k, v in system.service("frontdoor")["info"].items()
                                if k != "admission"}
    finally:
        system.close()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["other_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
