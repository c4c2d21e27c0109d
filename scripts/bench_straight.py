"""One request's path through the whole system: added TTFB, warm TTFT, count_tokens, and how
fast a hung engine is refused - for comparing two versions on the same machine.

`anyclaude up --detach` in a temporary home (benchlib.BenchSystem) with the tiny model and
the installation of the Python that runs this script, so the "before" is the same script run
by an interpreter that has the older code installed:

    .venv/bin/python scripts/bench_straight.py                 # this checkout
    /path/to/old-venv/bin/python scripts/bench_straight.py     # another version

Measured (medians over --rounds warm requests):
  ttfb        request sent -> message_start (streaming; what the front door, the optimizer
              and the engine's acceptance cost before the first byte)
  ttft        request sent -> first content delta; each warm request is the cold prompt
              (~--tokens, Claude-Code-shaped) + the forced reply + a new ~100-token message
  count       POST /v1/messages/count_tokens of another such request, not seen before (the
              same request is counted too, untimed, to check count_tokens == usage)
  hung        the engine SIGSTOPped: a new request -> its HTTP status (default timeouts)
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import API_KEY, BenchSystem, count_tokens, post, prose, sized_request, sse  # noqa: E402

HEADERS = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}


def timed_stream(url: str, body: dict) -> tuple[float, float, dict]:
    """(ttfb: message_start, ttft: first content delta, usage) of one streamed request."""
    started = time.perf_counter()
    conn, response = post(url, "/v1/messages", {**body, "stream": True}, HEADERS, 600)
    ttfb = ttft = 0.0
    usage: dict = {}
    try:
        for event, data in sse(response):
            now = time.perf_counter() - started
            msg = json.loads(data)
            if event == "message_start":
                ttfb = now
                usage.update(msg["message"].get("usage") or {})
            elif event == "content_block_delta" and not ttft:
                ttft = now
            elif event == "message_delta":
                usage.update(msg.get("usage") or {})
            elif event == "error":
                raise RuntimeError(f"stream error: {data}")
    finally:
        conn.close()
    return ttfb, ttft, usage


def hung_refusal(system: BenchSystem, body: dict) -> tuple[int, float, str]:
    pid = system.engine_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        host, port = system.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        started = time.perf_counter()
        conn.request("POST", "/v1/messages", body=json.dumps(body).encode(),
                     headers={"content-type": "application/json", **HEADERS})
        response = conn.getresponse()
        text = response.read().decode()
        took = time.perf_counter() - started
        conn.close()
    finally:
        with contextlib.suppress(ProcessLookupError):   # the supervisor may have replaced it
            os.kill(pid, signal.SIGCONT)
    message = json.loads(text).get("error", {}).get("message", "") if text else ""
    return response.status, took, message


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--model-dir", default="")
    args = parser.parse_args()
    import anyclaude
    from anyclaude.tinymodel import ensure_tiny_model
    model_dir = Path(args.model_dir) if args.model_dir else ensure_tiny_model(
        Path(tempfile.gettempdir()) / "anyclaude-bench-models")
    home = Path(tempfile.mkdtemp(prefix="bench-straight-"))
    system = BenchSystem(home, model_dir, context_window=32768, max_output_tokens=256)
    print(f"code: {Path(anyclaude.__file__).parent}  load: {os.getloadavg()[0]:.2f}", flush=True)
    system.up()
    try:
        system.say(otherwise="ok")
        base = sized_request(1, args.tokens, lambda b: count_tokens(system.url, b))
        ttfb, ttft, usage = timed_stream(system.url, base)
        print(f"cold: {sum(usage.get(k, 0) for k in ('input_tokens', 'cache_read_input_tokens', 'cache_creation_input_tokens'))} tokens, ttft {ttft:.2f} s", flush=True)
        rows = []
        rng = random.Random(7)

        def turn() -> dict:   # the cached prefix + the forced reply + a new ~100-token message
            return {**base, "messages": [*base["messages"],
                                         {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
                                         {"role": "user", "content": [{"type": "text", "text": prose(rng, 400)}]}]}
        for i in range(args.rounds):
            body = turn()
            ttfb, ttft, usage = timed_stream(system.url, body)
            total = sum(usage.get(k, 0) for k in ("input_tokens", "cache_read_input_tokens",
                                                   "cache_creation_input_tokens"))
            counted = count_tokens(system.url, body)         # untimed: the same request
            other = turn()                                    # timed: a request not seen yet
            t0 = time.perf_counter()
            count_tokens(system.url, other)
            count_s = time.perf_counter() - t0
            rows.append((ttfb, ttft, count_s, counted == total, usage.get("cache_read_input_tokens", 0)))
            print(f"warm {i}: ttfb {ttfb * 1000:.1f} ms  ttft {ttft * 1000:.1f} ms  "
                  f"count_tokens {count_s * 1000:.1f} ms  count==usage {counted == total} "
                  f"({counted}/{total}, read {rows[-1][4]})", flush=True)
        status, took, message = hung_refusal(system, {**base, "messages": [
            *base["messages"], {"role": "user", "content": [{"type": "text", "text": "hung?"}]}]})
        print(f"hung engine: HTTP {status} after {took:.2f} s ({message[:100]})", flush=True)
        med = lambda k: statistics.median(r[k] for r in rows) * 1000  # noqa: E731
        print(json.dumps({"ttfb_ms": round(med(0), 1), "ttft_ms": round(med(1), 1),
                          "count_tokens_ms": round(med(2), 1),
                          "count_equals_usage": all(r[3] for r in rows),
                          "hung_status": status, "hung_s": round(took, 2),
                          "load": round(os.getloadavg()[0], 2)}), flush=True)
    finally:
        system.down()


if __name__ == "__main__":
    main()
