"""Clients misbehave (faults rows 5-12): a client that stops reading, one that leaves, bad
bodies of every kind, and more clients than the engine can take - all against the running
system, with the engine's own counters showing what reached it."""

from __future__ import annotations

import json
import re
import threading
import time

import httpx2 as httpx

from .harness import TIMEOUTS, body, stream_text, unique_words, wait_for

LONG = " ".join(f"step {i} of the long answer." for i in range(400))


def health(system) -> dict:
    return httpx.get(system.url + "/health", timeout=10).json()


def error_of(reply, status: int, kind: str) -> str:
    assert reply.status_code == status, reply.text
    data = reply.json()
    assert data["type"] == "error" and data["error"]["type"] == kind, data
    assert "Traceback" not in reply.text
    return data["error"]["message"]


def test_row5_stalled_client_is_cut_off_and_another_client_is_served(system):
    """A client that sends its request and never reads. The first event alone (message_start
    echoes the model id: 200 KB here) is more than the server may hold for one client, so
    the writer blocks; after the write deadline the connection is closed and the engine
    work cancelled. The engine runs slowly meanwhile (throttled), so it is still at work."""
    system.say(("talk slowly", LONG), ("meanwhile", "served meanwhile"))
    before = system.engine_info()
    huge_model = "claude-stalled-" + "x" * 200_000
    stalled = system.raw({**body("talk slowly", stream=True, max_tokens=4000),
                          "model": huge_model}, rcvbuf=2048)
    cut_before = health(system)["clients_cut"]
    result: dict = {}

    def meanwhile():
        started = time.monotonic()
        result["reply"] = system.post(body("meanwhile"), timeout=60)
        result["s"] = time.monotonic() - started
    thread = threading.Thread(target=meanwhile)
    with system.throttled(stop_s=0.5, run_s=0.05):
        wait_for(lambda: system.engine_info()["busy"], 10, what="the stalled request running")
        blocked = time.monotonic()
        # other clients are not held up by it: the API answers at once ...
        models = httpx.get(system.url + "/v1/models", timeout=5)
        assert models.status_code == 200
        # ... and an engine request waits for the slot
        thread.start()
        wait_for(lambda: health(system)["clients_cut"] == cut_before + 1, 20,
                 what="the stalled client cut off")
    print(f"\n[row5] stalled client cut off {time.monotonic() - blocked:.2f} s after its stream "
          f"started (write deadline {TIMEOUTS['idle_s']} s)")
    thread.join(60)                                  # ... then is served
    reply = result["reply"]
    assert reply.status_code == 200 and reply.json()["content"][0]["text"] == "served meanwhile"
    print(f"[row5] the other request was served after {result['s']:.2f} s")
    after = system.engine_info()
    assert after["cancelled"] == before["cancelled"] + 1      # the stalled stream's work
    assert after["completed"] == before["completed"] + 1      # only "meanwhile" completed
    assert health(system)["breaker"]["consecutive_failures"] == 0   # not an engine failure
    # the server closed the connection and dropped what it held: far less than 200 KB came
    data = stalled.read_to_end(timeout=20)
    assert len(data) < 100_000 and b"message_stop" not in data
    stalled.close()


def test_row6_disconnect_cancels_the_engine_and_is_not_a_failure(system):
    system.say(("talk a lot", LONG))
    before = system.engine_info()
    stream = system.raw(body("talk a lot", stream=True, max_tokens=4000))
    stream.read_until(b"text_delta")
    stream.close()
    left = time.monotonic()
    wait_for(lambda: (lambda i: i["cancelled"] == before["cancelled"] + 1 and not i["busy"])(
        system.engine_info()), 10, interval=0.01, what="the engine to stop the generation")
    print(f"\n[row6] engine idle {time.monotonic() - left:.3f} s after the client left")
    state = health(system)["breaker"]
    assert state["state"] == "closed" and state["consecutive_failures"] == 0
    assert system.post(body("next one")).json()["content"][0]["text"] == "ok"


def test_rows7_to_11_bad_bodies_never_reach_the_engine(system):
    before = system.engine_info()["requests"]
    post = lambda content, **kw: httpx.post(system.url + "/v1/messages", content=content,  # noqa: E731
                                            timeout=30, **kw)
    json_type = {"content-type": "application/json"}
    # 7: malformed JSON, saying where
    message = error_of(post(b'{"model": "tiny", "max_tokens": 5,', headers=json_type), 400,
                       "invalid_request_error")
    assert "line 1 column" in message
    # 8: wrong schema, naming the field
    good = body("hi")
    for broken, field in ((lambda b: b.pop("messages"), "messages"),
                          (lambda b: b.pop("max_tokens"), "max_tokens"),
                          (lambda b: b["messages"][0].update(role="robot"), "messages.0.role")):
        payload = json.loads(json.dumps(good))
        broken(payload)
        message = error_of(post(json.dumps(payload).encode(), headers=json_type), 400,
                           "invalid_request_error")
        assert message.startswith(field), message
    # 9: over the body cap -> 413; under it (a big base64 image) -> not a 413
    cap = 32 * 1024 * 1024
    huge = json.dumps({**good, "pad": "x" * (cap + 1024)}).encode()
    error_of(post(huge, headers=json_type), 413, "request_too_large")
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "A" * (cap - 2 * 1024 * 1024)}}
    big = {**good, "messages": [{"role": "user", "content": [image, {"type": "text", "text": "?"}]}]}
    reply = post(json.dumps(big).encode(), headers=json_type)
    assert reply.status_code != 413 and reply.status_code < 500, reply.text[:300]
    # 10: invalid UTF-8 and lone surrogates
    error_of(post(b'{"model": "tiny", "max_tokens": 5, "messages": [{"role": "user", '
                  b'"content": "\xff\xfe"}]}', headers=json_type), 400, "invalid_request_error")
    error_of(post(b'{"model": "tiny", "max_tokens": 5, "messages": [{"role": "user", '
                  b'"content": "\\ud800"}]}', headers=json_type), 400, "invalid_request_error")
    # 11: content types
    error_of(post(json.dumps(good).encode(), headers={"content-type": "text/plain"}), 400,
             "invalid_request_error")
    assert system.engine_info()["requests"] == before          # none of these reached it
    for headers in ({"content-type": "application/json; charset=utf-8"}, {}):
        assert post(json.dumps(good).encode(), headers=headers).status_code == 200
    # 9: a prompt over the context window, with Claude Code's exact wording
    message = error_of(post(json.dumps(body(unique_words(6000, "too-long"))).encode(),
                            headers=json_type), 400, "invalid_request_error")
    assert re.fullmatch(r"prompt is too long: \d+ tokens > \d+ maximum", message), message


def test_row12_bounded_fifo_admission_overflow_and_drop(system, request):
    release = system.home / "row12-release"      # the holder keeps the slot until then
    request.addfinalizer(release.touch)          # also when an assertion fails first
    system.say(("hold the slot", LONG[:1200], {"hold_until": str(release)}),
               ("queued", "served in turn"))
    requests_before = system.engine_info()["requests"]
    rejected_before = health(system)["admission"]["tiny"]["rejected"]
    holder = system.raw(body("hold the slot", stream=True))
    holder.read_until(b"text_delta")
    queued = []
    for i in range(3):                                     # queue_size = 3
        queued.append(system.raw(body(f"queued {i}", stream=True)))
        wait_for(lambda: health(system)["admission"]["tiny"]["waiting"] == i + 1, 5,
                 what=f"{i + 1} waiting")
    # overflow: refused at once with a retry-after estimated from the queue
    results: list = []

    def overflow(i):
        started = time.monotonic()
        reply = system.post(body(f"overflow {i}"), timeout=30)
        results.append((reply, time.monotonic() - started))
    threads = [threading.Thread(target=overflow, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 6
    for reply, _ in results:
        error_of(reply, 529, "overloaded_error")
        assert 1 <= int(reply.headers["retry-after"]) <= 60
    print(f"\n[row12] overflow answered in at most {max(t for _, t in results):.3f} s, "
          f"retry-after {sorted({r.headers['retry-after'] for r, _ in results})}")
    # a client that leaves while queued is dropped before it reaches the engine
    queued[1].close()
    wait_for(lambda: health(system)["admission"]["tiny"]["dropped"] >= 1, 5,
             what="the queued request dropped")
    release.touch()
    started_at: dict = {}

    def read(name, stream):
        stream.read_until(b"text_delta", timeout=60)
        started_at[name] = time.monotonic()
        stream.read_to_end(timeout=60)
    readers = [threading.Thread(target=read, args=(n, s))
               for n, s in (("holder", holder), ("q0", queued[0]), ("q2", queued[2]))]
    for t in readers:
        t.start()
    for t in readers:
        t.join(90)
    assert started_at["holder"] < started_at["q0"] < started_at["q2"]     # in arrival order
    for stream in (holder, queued[0], queued[2]):
        kinds = [k for k, _ in stream.events()]
        assert kinds.count("message_stop") == 1 and "error" not in kinds
        stream.close()
    assert stream_text(queued[0].events()) == "served in turn"
    # what reached the engine: the holder and the two that stayed; no overflow, no dropped one
    assert system.engine_info()["requests"] == requests_before + 3
    lane = health(system)["admission"]["tiny"]
    assert lane["rejected"] == rejected_before + 6 and lane["waiting"] == 0
