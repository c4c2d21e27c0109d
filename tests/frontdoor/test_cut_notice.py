"""A reply to a conversation the optimizer cut says so, its usage and count_tokens count the
conversation the client sent, and a refusal is still an HTTP status (issue 15, item 5)."""

from __future__ import annotations

import json

import httpx2 as httpx

from anyclaude import context_notice, errors
from anyclaude.messages import Accepted, Delta, Done, Progress

from .sse_validator import validate
from .test_frontdoor_fakes import BODY, Engines

CUT = {"client_tokens": 40000, "prompt_tokens": 12000, "left_out_tokens": 28000,
       "window": 16384, "dropped_messages": 6, "placeholder_tool_results": 0,
       "shortened_tool_results": 0}
USAGE = {"input_tokens": 0, "cache_read_input_tokens": 11000,
         "cache_creation_input_tokens": 1000, "output_tokens": 2}


class CuttingOptimizer:
    def optimize(self, request):
        return {**request, context_notice.CUT_KEY: dict(CUT)}


def post(door, body, path="/v1/messages"):
    return httpx.post(door.url + path, content=json.dumps(body), timeout=10)


def test_the_reply_starts_with_the_notice_and_counts_what_the_client_sent(make_door):
    engines = Engines([Accepted(0), Progress(10, 100),
                       Delta([{"type": "text", "text": "Fixed."}]), Done("end_turn", None, USAGE)])
    door = make_door(engines=engines, optimizer=CuttingOptimizer())
    plain = post(door, BODY)
    assert plain.status_code == 200, plain.text
    body = plain.json()
    assert body["content"] == [{"type": "text", "text": context_notice.render(CUT) + "Fixed."}]
    usage = body["usage"]
    assert usage["input_tokens"] == 28000
    assert (usage["input_tokens"] + usage["cache_read_input_tokens"]
            + usage["cache_creation_input_tokens"]) == 40000
    assert plain.headers["anyclaude-context-cut"].startswith("left_out_tokens=28000")
    streamed = validate(post(door, {**BODY, "stream": True}).content)
    assert streamed["message"]["content"][0]["text"].startswith(context_notice.PREFIX)
    assert streamed["message"]["usage"]["input_tokens"] == 28000
    counted = post(door, {k: v for k, v in BODY.items() if k != "max_tokens"},
                   "/v1/messages/count_tokens")
    assert counted.json() == {"input_tokens": 7 + 28000}


def test_a_refusal_stays_an_http_status(make_door):
    door = make_door(engines=Engines([errors.PromptTooLong(20000, 16383)]),
                     optimizer=CuttingOptimizer())
    response = post(door, {**BODY, "stream": True})
    assert response.status_code == 400
    assert "prompt is too long" in response.json()["error"]["message"]
