"""The engine process misbehaves (faults rows 1-4) and the deadlines: kill -9 mid-stream and
before any output, SIGSTOP (hang), a slow engine (SIGSTOP/SIGCONT duty cycle), each
deadline's expiry. What the client saw, that the system recovered, nothing lost or doubled.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from anyclaude.kvfiles import read_header, verify_crc

from .harness import TIMEOUTS, body, stream_text, unique_words, wait_for

LONG = " ".join(f"step {i} of the long answer." for i in range(400))   # ~2500 tokens


def events_of(kinds, events):
    return [d for k, d in events if k in kinds]


def retry_until_ok(system, payload, timeout=30.0):
    """Post until 200; every refusal on the way must be a fast 529 with a retry-after."""
    deadline = time.monotonic() + timeout
    refusals = []
    while True:
        reply = system.post(payload, timeout=30)
        if reply.status_code == 200:
            return reply, refusals
        assert reply.status_code == 529, reply.text
        assert reply.json()["error"]["type"] == "overloaded_error"
        assert int(reply.headers["retry-after"]) >= 1
        refusals.append(reply.json()["error"]["message"])
        assert time.monotonic() < deadline, f"no success within {timeout} s: {refusals[-3:]}"
        time.sleep(0.2)


def test_row1_kill_mid_stream_error_within_a_second_restart_and_rewarm(system):
    prefix = unique_words(120, "row1-prefix")          # ~770 tokens: 24 blocks of 32
    system.space_faults()
    system.say(("kill me mid-stream", LONG), otherwise="ok")
    first = system.post(body(prefix + " first question"))
    assert first.status_code == 200, first.text
    wait_for(lambda: any(e["tokens"] >= 512 for e in system.kv("ls")["entries"]), 15,
             what="the prefix written to the kvstore")
    system.settle_cache()
    stored = {e["path"] for e in system.kv("ls")["entries"]}

    stream = system.raw(body("kill me mid-stream", stream=True, max_tokens=4000))
    stream.read_until(b"text_delta")
    pid = system.signal(signal.SIGKILL)
    killed = time.monotonic()
    errored = stream.read_until(b"event: error")
    stream.read_to_end(timeout=10)                      # and the stream ends
    events = stream.events()
    print(f"\n[row1] kill -9 -> event: error after {errored - killed:.3f} s")
    error = events_of({"error"}, events)[0]["error"]
    assert error["type"] in ("api_error", "overloaded_error") and "went away" in error["message"]
    assert events[-1][0] == "error" and not events_of({"message_stop"}, events)
    assert LONG.startswith(stream_text(events))         # what came before is intact, once
    stream.close()

    # no half-written cache entry: the killed stream added none, every indexed file checks out
    entries = system.kv("ls")["entries"]
    assert {e["path"] for e in entries} <= stored
    for entry in entries:
        verify_crc(entry["path"], read_header(entry["path"]))

    started = time.monotonic()
    svc = system.wait_ready(not_pid=pid, timeout=60)
    print(f"[row1] engine ready again {time.monotonic() - started:.2f} s after the kill was seen "
          f"(restarts={svc['restarts']})")
    reply, refusals = retry_until_ok(system, body(prefix + " second question"))
    assert reply.json()["content"][0]["text"] == "ok"
    usage = reply.json()["usage"]
    assert usage["cache_read_input_tokens"] >= 512       # the prefix came back from disk
    assert system.engine_info()["cache"]["disk_hits"] >= 1


def test_row2_kill_before_any_output_is_retried_once_transparently(system):
    system.space_faults()
    prompt = unique_words(700, "row2") + " retry me"      # ~4500 tokens: over a second of prefill
    system.say(("retry me", "answered after one retry"))
    retries = system.service("frontdoor")["info"]["retries"]
    stream = system.raw(body(prompt, stream=True))
    stream.read_until(b"event: ping")                    # accepted, prefilling, nothing said
    pid = system.signal(signal.SIGKILL)
    stream.read_to_end(timeout=90)   # restart (backoff, load) + a cold prefill
    events = stream.events()
    kinds = [k for k, _ in events]
    assert kinds.count("message_start") == 1 and kinds.count("message_stop") == 1, kinds
    assert "error" not in kinds
    assert stream_text(events) == "answered after one retry"     # said once, not twice
    assert system.service("engine-tiny")["pid"] != pid
    fresh = system.engine_info()
    assert fresh["requests"] == 1 and fresh["completed"] == 1    # the fresh engine ran it once
    assert system.service("frontdoor")["info"]["retries"] == retries + 1


def test_row3_hang_mid_stream_idle_deadline_then_queued_request_accept_deadline(system):
    system.space_faults()
    system.say(("hang in the middle", LONG), ("queued behind the hang", "never said"))
    running = system.raw(body("hang in the middle", stream=True, max_tokens=4000))
    running.read_until(b"text_delta")
    queued: dict = {}

    def post_queued():
        queued["reply"] = system.post(body("queued behind the hang"), timeout=40)
    thread = threading.Thread(target=post_queued)
    thread.start()
    wait_for(lambda: system.service("frontdoor")["info"]["waiting"] == 1, 5,
             what="the second request waiting in the admission queue")
    time.sleep(0.3)                                      # (its optimizer pass is long done)
    replaced_before = heartbeat_replacements(system)
    pid = system.signal(signal.SIGSTOP)
    stopped = time.monotonic()
    running.read_until(b"event: error", timeout=15)
    print(f"\n[row3] SIGSTOP -> event: error after {time.monotonic() - stopped:.2f} s "
          f"(idle deadline {TIMEOUTS['idle_s']} s)")
    error = events_of({"error"}, running.events())[0]["error"]
    assert error["type"] == "timeout_error", error
    running.close()
    # the queued request reaches the stopped engine: no Accepted within the accept deadline
    thread.join(40)
    reply = queued["reply"]
    assert reply.status_code == 529, reply.text
    assert reply.json()["error"]["type"] == "overloaded_error"
    # refused at the accept deadline (the hung process takes no request, not even a connection)
    assert f"within {TIMEOUTS['accept_s']:g} s" in reply.json()["error"]["message"]
    assert int(reply.headers["retry-after"]) >= 1
    # missed heartbeats: the supervisor stops the hung process and starts a fresh one
    svc = system.wait_ready(not_pid=pid, timeout=60)
    print(f"[row3] hung engine replaced {time.monotonic() - stopped:.2f} s after SIGSTOP")
    wait_for(lambda: not _alive(pid), 10, what="the hung process gone")
    assert svc["restarts"] >= 1
    assert heartbeat_replacements(system) == replaced_before + 1
    reply, _ = retry_until_ok(system, body("fine again"))
    assert reply.json()["content"][0]["text"] == "ok"


def test_hung_idle_engine_refuses_a_new_request_within_the_accept_deadline(system):
    """SIGSTOP an idle engine: a new request is a 529 within accept_s (one deadline for the
    try and its resend together), not after a token-count timeout - the optimizer counts
    with its own tokenizer and asks the hung engine nothing."""
    system.space_faults()
    system.say(("to a hung engine", "never said"))
    retry_until_ok(system, body("before the hang"))
    assert system.service("optimizer")["info"]["tokenizers"] == ["tiny"]
    pid = system.signal(signal.SIGSTOP)
    try:
        replies = []
        for stream in (False, True):   # streaming too: an HTTP status, not an event: error
            started = time.monotonic()
            reply = system.post(body("to a hung engine", stream=stream), timeout=30)
            replies.append((stream, reply, time.monotonic() - started))
    finally:
        os.kill(pid, signal.SIGCONT)
    for stream, reply, took in replies:
        print(f"\n[hung] SIGSTOPped engine, stream={stream} -> HTTP {reply.status_code} after "
              f"{took:.2f} s (accept deadline {TIMEOUTS['accept_s']} s)")
        assert reply.status_code == 529, reply.text
        assert reply.json()["error"]["type"] == "overloaded_error"
        assert f"within {TIMEOUTS['accept_s']:g} s" in reply.json()["error"]["message"]
        assert int(reply.headers["retry-after"]) >= 1
        assert took < TIMEOUTS["accept_s"] + 1.0
    retry_until_ok(system, body("fine after SIGCONT"))


def test_deadline_before_headers_is_an_http_504(system):
    """Non-streaming: the engine stops answering during the prefill -> 504 timeout_error."""
    system.space_faults()
    prompt = unique_words(700, "nonstream-hang")
    result: dict = {}

    def post():
        result["reply"] = system.post(body(prompt), timeout=30)
    thread = threading.Thread(target=post)
    thread.start()
    wait_for(lambda: system.engine_info()["busy"], 10, interval=0.02, what="the engine busy")
    pid = system.signal(signal.SIGSTOP)
    try:
        thread.join(20)
    finally:
        os.kill(pid, signal.SIGCONT)
    reply = result["reply"]
    assert reply.status_code == 504, reply.text
    assert reply.json()["error"]["type"] == "timeout_error"
    assert reply.headers["x-should-retry"] == "true"
    wait_for(lambda: not system.engine_info()["busy"], 10, what="the engine idle (cancelled)")
    assert system.post(body("after the pause")).status_code == 200


def test_row4_slow_engine_pings_flow_no_false_timeout(system):
    prompt = unique_words(150, "row4") + " slowly"        # ~1000 tokens, Progress all along
    answer = "a slow but complete answer"
    system.say(("slowly", answer))
    restarts = system.service("engine-tiny")["restarts"]
    stream = system.raw(body(prompt, stream=True), timeout=30)
    stream.read_until(b"event: ping")
    with system.throttled(stop_s=1.0, run_s=0.15):       # below the idle deadline of 5 s
        stream.read_to_end(timeout=TIMEOUTS["total_s"])
    events = stream.events()
    assert "error" not in [k for k, _ in events]
    assert stream_text(events) == answer
    pings = [k for k, _ in events].count("ping")
    assert pings >= 3, pings
    assert system.service("engine-tiny")["restarts"] == restarts     # not taken for hung


def test_first_frame_deadline_with_progress_flowing_is_an_error_event(system):
    prompt = unique_words(1100, "first-frame")           # ~7000 tokens: a long prefill
    stream = system.raw(body(prompt, stream=True), timeout=30)
    stream.read_until(b"event: ping")
    started = time.monotonic()
    with system.throttled(stop_s=0.8, run_s=0.2):        # Progress keeps the idle deadline off
        stream.read_until(b"event: error", timeout=20)
    print(f"\n[deadlines] first frame: event: error {time.monotonic() - started:.2f} s into the "
          f"stream (first_frame_s {TIMEOUTS['first_frame_s']})")
    events = stream.events()
    error = events_of({"error"}, events)[0]["error"]
    assert error["type"] == "timeout_error" and "first output" in error["message"]
    assert not events_of({"content_block_start"}, events)
    stream.close()
    wait_for(lambda: not system.engine_info()["busy"], 10, what="the engine work cancelled")


def test_total_deadline_ends_a_stream_that_is_still_producing(system):
    system.say(("never-ending", LONG))
    stream = system.raw(body("never-ending", stream=True, max_tokens=4000), timeout=30)
    stream.read_until(b"text_delta")
    started = time.monotonic()
    with system.throttled(stop_s=0.5, run_s=0.05):
        stream.read_until(b"event: error", timeout=30)
    print(f"\n[deadlines] total: event: error {time.monotonic() - started:.2f} s after the first "
          f"text (total_s {TIMEOUTS['total_s']})")
    events = stream.events()
    error = events_of({"error"}, events)[0]["error"]
    assert error["type"] == "timeout_error"
    text = stream_text(events)
    assert text and LONG.startswith(text) and text != LONG
    stream.close()
    wait_for(lambda: not system.engine_info()["busy"], 10, what="the engine work cancelled")


def heartbeat_replacements(system) -> int:
    log = (system.home / "logs" / "supervisor.log").read_text().splitlines()
    return sum(1 for line in log if "supervisor.child.stopping" in line and "no heartbeat" in line)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
