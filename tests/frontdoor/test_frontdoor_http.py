"""The front door at the HTTP level: raw bytes in, raw bytes out, checked by sse_validator.

Covers the fault rows 5-12 of spec/faults.md that belong to the front door: stalled and
disconnecting clients, malformed bodies, schema errors, huge bodies, odd content types,
plus pings and keepalives during long prefills and the duplicate-request guard.
"""

from __future__ import annotations

import json
import re
import socket
import threading

import httpx2 as httpx
import pytest

from .fd_helpers import make_settings, wait_for
from .sse_validator import validate

MODEL = "claude-opus-4-7"


def body_for(text: str, **extra) -> dict:
    return {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": text}],
            **extra}


def post(door, body, *, path="/v1/messages", headers=None, raw: bytes | None = None):
    content = raw if raw is not None else json.dumps(body).encode()
    hdrs = {"content-type": "application/json", **(headers or {})}
    return httpx.post(door.url + path, content=content, headers=hdrs, timeout=30)


def error_of(response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind
    assert body["request_id"] == response.headers["request-id"]
    return body["error"]["message"]


class RawStream:
    """A raw socket client, to stall or vanish mid-response."""

    def __init__(self, door, body: dict, *, rcvbuf: int | None = None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", door.port))
        data = json.dumps(body).encode()
        self.sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Type: application/json\r\n"
                          + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        self.received = b""

    def read_until(self, marker: bytes, limit: int = 1 << 20) -> bytes:
        self.sock.settimeout(10)
        while marker not in self.received and len(self.received) < limit:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.received += chunk
        return self.received

    def read_all(self) -> bytes:
        self.sock.settimeout(20)
        while chunk := self.sock.recv(65536):
            self.received += chunk
        return self.received

    def request_id(self) -> str:
        return re.search(rb"[Rr]equest-[Ii]d: (req_\w+)", self.received).group(1).decode()

    def sse_body(self) -> bytes:
        """The de-chunked body of a chunked response."""
        rest = self.received.split(b"\r\n\r\n", 1)[1]
        out = b""
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        return out

    def close(self):
        self.sock.close()


# --- malformed input: 400 naming the problem, engine never called ----------------------

@pytest.mark.parametrize("raw,message", [
    (b'{"model": "x", "max_tokens": 1,', "request body is not valid JSON"),
    (b'{"model": "\xff\xfe"}', "request body is not valid UTF-8"),
    (b'{"model": "\\ud800", "max_tokens": 1, "messages": []}', "model: string contains a lone"),
    (b"", "request body is empty"),
    (b'"just a string"', "request body must be a JSON object"),
])
def test_malformed_bodies_are_400(door, fake_engines, raw, message):
    before = len(fake_engines["local-main"].generated)
    response = post(door, None, raw=raw)
    assert error_of(response, 400, "invalid_request_error").startswith(message)
    assert response.headers["x-should-retry"] == "false"
    assert len(fake_engines["local-main"].generated) == before


@pytest.mark.parametrize("field", ["model", "max_tokens", "messages"])
def test_each_missing_required_field_is_named(door, field):
    body = body_for("hi")
    del body[field]
    message = error_of(post(door, body), 400, "invalid_request_error")
    assert message == f"{field}: field required"


def test_count_tokens_needs_no_max_tokens_but_the_rest(door):
    body = body_for("hi")
    del body["max_tokens"]
    assert post(door, body, path="/v1/messages/count_tokens?beta=true").json()["input_tokens"] > 0
    del body["messages"]
    message = error_of(post(door, body, path="/v1/messages/count_tokens"), 400,
                       "invalid_request_error")
    assert message == "messages: field required"


def test_bad_role_and_block_are_named(door):
    body = body_for("hi")
    body["messages"] = [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]
    assert error_of(post(door, body), 400, "invalid_request_error").startswith("messages.1.role:")
    body["messages"] = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                        {"role": "user", "content": [{"type": "foo"}]}]
    assert error_of(post(door, body), 400, "invalid_request_error") == \
        "messages.2.content.0.type: unknown block type 'foo'"


@pytest.mark.parametrize("content_type,ok", [
    ("application/json", True), ("application/json; charset=utf-8", True),
    ("application/json;charset=UTF-8", True), (None, True),
    ("text/plain", False), ("application/x-www-form-urlencoded", False)])
def test_content_types(door, content_type, ok):
    headers = {} if content_type is None else {"content-type": content_type}
    with httpx.Client() as http:
        request = http.build_request("POST", door.url + "/v1/messages",
                                     content=json.dumps(body_for("hi")).encode(), headers=headers)
        assert ("content-type" in request.headers) == (content_type is not None)
        response = http.send(request)
    if ok:
        assert response.status_code == 200, response.text
    else:
        assert "content-type must be application/json" in error_of(response, 400,
                                                                    "invalid_request_error")


def test_huge_bodies_are_413_in_the_anthropic_format(make_door, fake_engines):
    door = make_door(make_settings(server={"max_body_mb": 1}))
    big = body_for("x" * 1_200_000)
    message = error_of(post(door, big), 413, "request_too_large")
    assert "1048576" in message

    def chunks():   # no content-length: the app counts what it reads
        data = json.dumps(big).encode()
        for i in range(0, len(data), 100_000):
            yield data[i:i + 100_000]
    response = httpx.post(door.url + "/v1/messages", content=chunks(), timeout=30)
    error_of(response, 413, "request_too_large")
    # far beyond the cap, waitress itself refuses: still the Anthropic body
    response = post(door, body_for("x" * 4_000_000))
    assert "1048576" in error_of(response, 413, "request_too_large")
    # just under the cap is served
    assert post(door, body_for("fake:text fits " + "y" * 900_000)).status_code == 200


def test_default_body_cap_is_at_least_32_mb():
    from anyclaude.config import Settings
    assert Settings().server.max_body_mb >= 32


# --- routes and headers -----------------------------------------------------------------

def test_root_health_and_unknown_routes(door):
    head = httpx.head(door.url + "/")
    assert head.status_code == 200 and head.headers["request-id"].startswith("req_")
    assert httpx.get(door.url + "/").status_code == 200
    health = httpx.get(door.url + "/health").json()
    assert health["state"] == "ok" and health["breaker"]["state"] == "closed"
    assert health["engines"] == {"local-main": True, "local-small": True}
    assert "not found" in error_of(httpx.get(door.url + "/v2/nothing"), 404, "not_found_error")
    response = httpx.delete(door.url + "/v1/messages")
    assert response.status_code == 405 and response.json()["type"] == "error"
    assert response.headers["request-id"].startswith("req_")


def test_health_reports_an_unreachable_engine(make_door):
    import dataclasses
    settings = make_settings(timeouts={"accept_s": 0.2})
    settings = dataclasses.replace(settings, models={**settings.models,
                                                     "local-ghost": settings.models["local-main"]})
    health = httpx.get(make_door(settings).url + "/health").json()
    assert health["state"] == "degraded" and health["engines"]["local-ghost"] is False


def test_query_string_is_ignored_and_request_id_everywhere(door):
    response = post(door, body_for("fake:text q"), path="/v1/messages?beta=true")
    assert response.status_code == 200 and response.json()["content"][0]["text"] == "q"
    assert response.headers["request-id"].startswith("req_")
    response = post(door, body_for("fake:text q", stream=True), path="/v1/messages?beta=true")
    assert response.headers["request-id"].startswith("req_")
    validate(response.content)


@pytest.mark.parametrize("script", [
    "hello", "fake:text one two", 'fake:tool get_weather {"a": {"b": [1, "x\\"y"]}}',
    "fake:thinking", "fake:echo", "fake:error_mid", "fake:bad_tool_json", "fake:long 40 Z"])
def test_every_script_streams_valid_sse(door, script):
    thinking = {"type": "adaptive"} if "thinking" in script else None
    response = post(door, body_for(script, stream=True, thinking=thinking))
    assert response.status_code == 200
    result = validate(response.content)
    if "error" in script or "bad_tool" in script:
        assert result["error"] is not None
    else:
        assert result["error"] is None and result["message"]["stop_reason"]


@pytest.mark.parametrize("kind,status,anthropic_type", [
    ("prompt_too_long", 400, "invalid_request_error"),
    ("unsupported_content", 400, "invalid_request_error"),
    ("overloaded", 529, "overloaded_error"), ("engine", 500, "api_error")])
def test_an_immediate_refusal_of_a_stream_is_an_http_status(make_door, kind, status,
                                                            anthropic_type):
    door = make_door()
    response = post(door, body_for(f"fake:error {kind}", stream=True))
    message = error_of(response, status, anthropic_type)
    if kind == "prompt_too_long":
        assert message == "prompt is too long: 50000 tokens > 32768 maximum"
    if status == 529:
        assert response.headers["retry-after"] == "1"


def test_a_later_error_is_an_event_with_the_same_mapping(make_door):
    door = make_door(early_grace_s=0.05)
    response = post(door, body_for("fake:late_error 0.3 prompt_too_long", stream=True))
    assert response.status_code == 200
    result = validate(response.content)
    assert result["error"] == {"type": "invalid_request_error",
                               "message": "prompt is too long: 50000 tokens > 32768 maximum"}
    result = validate(post(door, body_for("fake:late_error 0.3 overloaded", stream=True)).content)
    assert result["error"]["type"] == "overloaded_error"


# --- prefill: pings and keepalives ------------------------------------------------------

def ping_count_before_content(events) -> int:
    count = 0
    for kind, _ in events[1:]:
        if kind != "ping":
            break
        count += 1
    return count


def test_pings_flow_during_a_slow_prefill(make_door):
    door = make_door(make_settings(timeouts={"ping_interval_s": 5.0}), progress_ping_s=0.1)
    result = validate(post(door, body_for("fake:progress 0.8", stream=True)).content)
    assert ping_count_before_content(result["events"]) >= 3      # from Progress frames
    assert result["message"]["content"][0]["text"] == "done after a long prefill"


def test_pings_flow_while_the_engine_is_silent(make_door):
    door = make_door(make_settings(timeouts={"ping_interval_s": 0.15}))
    result = validate(post(door, body_for("fake:silent 1.2", stream=True)).content)
    assert ping_count_before_content(result["events"]) >= 3      # from the ping timer


def test_long_silence_gets_an_honest_keepalive(make_door):
    door = make_door(make_settings(timeouts={"ping_interval_s": 0.1}), stall_after_s=0.25)
    result = validate(post(door, body_for("fake:silent 1.0", stream=True,
                                          thinking={"type": "adaptive"})).content)
    kinds = [k for k, _ in result["events"] if k != "ping"]
    assert kinds[1] == "content_block_start"          # before the model said anything
    blocks = result["message"]["content"]
    assert [b["type"] for b in blocks] == ["thinking", "text"] and blocks[0]["thinking"] == ""
    # without thinking: an empty text block that the answer continues
    result = validate(post(door, body_for("fake:silent 1.0", stream=True)).content)
    empty = [e for k, e in result["events"]
             if k == "content_block_delta" and e["delta"] == {"type": "text_delta", "text": ""}]
    assert empty                                       # the later stalls: empty deltas
    assert result["message"]["content"] == [{"type": "text", "text": "done after a long prefill"}]
    # the SDK accepts such a stream
    with door.client().messages.stream(**body_for("fake:silent 0.6")) as s:
        assert s.get_final_message().content[0].text == "done after a long prefill"


# --- disconnects, stalls, duplicates ----------------------------------------------------

def test_disconnect_mid_stream_cancels_the_engine(door, fake_engines):
    engine = fake_engines["local-main"]
    stream = RawStream(door, body_for("fake:hang", stream=True))
    stream.read_until(b"event: ping")
    rid = stream.request_id()
    assert wait_for(lambda: rid.encode() in [r for r, _ in engine.generated])
    stream.close()
    assert wait_for(lambda: engine.was_cancelled(rid))
    assert door.breaker.snapshot()["consecutive_failures"] == 0
    assert wait_for(lambda: len(door.app.inflight) == 0)
    assert post(door, body_for("fake:text still fine")).json()["content"][0]["text"] == "still fine"


def test_disconnect_during_a_non_streaming_request_cancels_the_engine(door, fake_engines):
    engine = fake_engines["local-main"]
    marker = "fake:hang nonstream-disconnect"
    stream = RawStream(door, body_for(marker))

    def started():
        return [rid for rid, req in engine.generated
                if req["messages"][0]["content"][0]["text"] == marker]
    assert wait_for(lambda: started())
    stream.close()
    rid = started()[0]
    assert wait_for(lambda: rid in engine.cancelled)
    assert door.breaker.snapshot()["consecutive_failures"] == 0


def test_stalled_client_is_cut_off_and_others_are_unaffected(make_door, fake_engines):
    door = make_door(write_deadline_s=0.5)
    engine = fake_engines["local-main"]
    stalled = RawStream(door, body_for("fake:burst 300000", stream=True), rcvbuf=4096)
    stalled.read_until(b"event: ping", limit=2048)
    rid = stalled.request_id()
    response = post(door, body_for("fake:text meanwhile"))      # another client, served
    assert response.json()["content"][0]["text"] == "meanwhile"
    # the stalled stream's generation stops: Cancel reaches the engine (or the engine saw
    # its reply queue overflow first and stopped on its own: either way, not forever)
    assert wait_for(lambda: engine.was_cancelled(rid), timeout=20)
    assert door.breaker.snapshot()["consecutive_failures"] == 0
    stalled.close()


def test_identical_request_cancels_the_first_copy_then_runs(door, fake_engines):
    engine = fake_engines["local-main"]
    body = body_for("fake:silent 0.5 duplicate-check", stream=True)
    first = RawStream(door, body)
    first.read_until(b"event: ping")
    rid1 = first.request_id()
    assert wait_for(lambda: ("generate", rid1.encode()) in engine.log)
    second = RawStream(door, body)
    second.read_all()
    rid2 = second.request_id()
    result = validate(second.sse_body())
    assert result["message"]["content"][0]["text"] == "done after a long prefill"
    first.read_all()
    first_result = validate(first.sse_body())
    assert "identical request" in first_result["error"]["message"]
    log = [entry for entry in engine.log if entry[1] in (rid1.encode(), rid2.encode())]
    assert log.index(("cancel", rid1.encode())) < log.index(("generate", rid2.encode()))
    assert len([e for e in log if e[0] == "generate"]) == 2


def test_same_body_with_another_key_is_not_a_duplicate(door, fake_engines):
    engine = fake_engines["local-main"]
    body = body_for("fake:silent 0.4 two-keys")
    results = {}

    def run(key):
        results[key] = post(door, body, headers={"x-api-key": key})
    threads = [threading.Thread(target=run, args=(k,)) for k in ("key-a", "key-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert [results[k].status_code for k in ("key-a", "key-b")] == [200, 200]
    rids = [results[k].headers["request-id"].encode() for k in ("key-a", "key-b")]
    assert not any(r in engine.cancelled for r in rids)


def test_identical_non_streaming_request_supersedes(door, fake_engines):
    engine = fake_engines["local-main"]
    body = body_for("fake:silent 0.5 duplicate-nonstream")
    out = {}

    def run(name):
        out[name] = post(door, body)
    first = threading.Thread(target=run, args=("first",))
    first.start()
    assert wait_for(lambda: any(req["messages"][0]["content"][0]["text"].endswith(
        "duplicate-nonstream") for _, req in engine.generated))
    run("second")
    first.join(20)
    assert out["second"].json()["content"][0]["text"] == "done after a long prefill"
    message = error_of(out["first"], 499, "api_error")
    assert "identical request" in message
    assert engine.was_cancelled(out["first"].headers["request-id"])


def test_malformed_http_gets_the_anthropic_body_from_waitress(door):
    with socket.create_connection(("127.0.0.1", door.port)) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"\r\nZZZ\r\nnot a chunk\r\n\r\n")
        sock.settimeout(10)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    body = json.loads(payload)
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["request_id"].startswith("req_")
