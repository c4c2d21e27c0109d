"""Behaviour where a small in-process fake engine is the point: crashes that are not ours,
engines that break the protocol, and the breaker's clock through the HTTP surface."""

from __future__ import annotations

import json

import httpx2 as httpx
import pytest

from anyclaude import errors
from anyclaude.messages import Accepted, Delta, Done
from anyclaude.breaker import Breaker

from .fd_helpers import wait_for
from .sse_validator import validate

BODY = {"model": "claude-opus-4-7", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}]}


class Engines:
    """Replays a script: messages are yielded, exceptions raised."""

    def __init__(self, script=(), count=7):
        self.script, self.count_value, self.calls = list(script), count, 0

    def stream(self, model_id, request, *, request_id, client_gone):
        self.calls += 1
        for item in self.script:
            if isinstance(item, BaseException):
                raise item
            yield item

    def count(self, model_id, request):
        if isinstance(self.count_value, BaseException):
            raise self.count_value
        return self.count_value


OK = [Accepted(0), Delta([{"type": "text", "text": "ok"}]), Done("end_turn", None, {})]


def post(door, body=BODY, path="/v1/messages"):
    return httpx.post(door.url + path, content=json.dumps(body), timeout=10)


def test_a_foreign_crash_is_a_clean_500(make_door):
    door = make_door(engines=Engines([Accepted(0), RuntimeError("secret detail")]))
    response = post(door)
    assert response.status_code == 500
    assert response.json()["error"] == {"type": "api_error",
                                        "message": "internal error (RuntimeError)"}
    assert "Traceback" not in response.text and "secret" not in response.text
    # at the start of a stream: still an HTTP status
    response = post(door, {**BODY, "stream": True})
    assert response.status_code == 500 and "secret" not in response.text
    # after content went out: an error event
    door.engines.script = [Accepted(0), Delta([{"type": "text", "text": "x"}]),
                           RuntimeError("secret detail")]
    result = validate(post(door, {**BODY, "stream": True}).content)
    assert result["error"]["message"] == "internal error (RuntimeError)"
    assert door.breaker.snapshot()["consecutive_failures"] == 3
    assert wait_for(lambda: len(door.app.inflight) == 0)


def test_stream_without_done_is_an_error(make_door):
    door = make_door(engines=Engines([Accepted(0)]))
    response = post(door, {**BODY, "stream": True})
    assert response.status_code == 500 and "without Done" in response.json()["error"]["message"]
    door.engines.script = [Accepted(0), Delta([{"type": "text", "text": "x"}])]
    response = post(door)
    assert response.status_code == 500 and "without Done" in response.json()["error"]["message"]
    result = validate(post(door, {**BODY, "stream": True}).content)
    assert "without Done" in result["error"]["message"]
    assert result["message"]["content"] == [{"type": "text", "text": "x"}]


def test_an_engine_that_raises_before_its_first_frame_releases_everything(make_door):
    class Broken(Engines):
        def stream(self, *args, **kwargs):
            raise errors.ServiceUnavailable("engine-x is not running")
    door = make_door(engines=Broken())
    response = post(door)
    assert response.status_code == 529
    assert response.headers["retry-after"] == "1"
    assert len(door.app.inflight) == 0 and door.breaker.snapshot()["consecutive_failures"] == 1


def test_count_tokens_errors_and_value(make_door):
    door = make_door(engines=Engines(count=123))
    body = {k: v for k, v in BODY.items() if k != "max_tokens"}
    assert post(door, body, "/v1/messages/count_tokens").json() == {"input_tokens": 123}
    door = make_door(engines=Engines(count=ValueError("boom")))
    response = post(door, body, "/v1/messages/count_tokens")
    assert response.status_code == 500 and response.json()["error"]["type"] == "api_error"


def test_count_tokens_of_a_rendered_prompt_needs_no_engine(make_door):
    """The optimizer rendered the prompt (a local model): its token count is the answer,
    with no Count hop to the engine; the same request's Generate carries that prompt."""
    class Optimizer:
        def optimize(self, request):
            return {**request, "prompt": {"ids": b"\0" * 4 * 41, "tokens": 41}}

    class NoCount(Engines):
        def count(self, model_id, request):
            raise AssertionError("count_tokens asked the engine")

    door = make_door(engines=NoCount(OK), optimizer=Optimizer())
    body = {k: v for k, v in BODY.items() if k != "max_tokens"}
    assert post(door, body, "/v1/messages/count_tokens").json() == {"input_tokens": 41}


def test_optimizer_crash_is_a_clean_500(make_door):
    class Optimizer:
        def optimize(self, request):
            raise KeyError("system")
    door = make_door(engines=Engines(OK), optimizer=Optimizer())
    response = post(door)
    assert response.status_code == 500 and "KeyError" in response.json()["error"]["message"]


def test_breaker_half_open_trial_through_http(make_door):
    class Clock:
        now = 0.0

        def __call__(self):
            return self.now
    clock = Clock()
    engines = Engines([Accepted(0), errors.EngineFailed("crashed")])
    door = make_door(engines=engines, breaker=Breaker(threshold=1, cooldown_s=5, clock=clock))
    assert post(door).status_code == 500
    refused = post(door)
    assert refused.status_code == 529 and refused.headers["retry-after"] == "5"
    assert engines.calls == 1                       # refused without calling the engine
    clock.now = 5.0
    engines.script = OK
    assert post(door).json()["content"] == [{"type": "text", "text": "ok"}]   # the trial
    assert door.breaker.state == "closed"


@pytest.mark.parametrize("events", [
    [{"type": "tool_end"}], [{"type": "nonsense"}],
    [{"type": "tool_start", "id": "t", "name": "f"}, {"type": "tool_args", "json": "[1]"},
     {"type": "tool_end"}]])
def test_malformed_engine_events_become_errors(make_door, events):
    door = make_door(engines=Engines([Accepted(0), Delta(events), Done("end_turn")]))
    assert "malformed" in post(door).json()["error"]["message"]
    result = validate(post(door, {**BODY, "stream": True}).content)
    assert "malformed" in result["error"]["message"]
