"""count_tokens says whether its number is exact: the engine's Counted.estimated travels the
bus and becomes the ``anyclaude-token-count`` header (issue #20: an estimate must never pass
for the upstream's own count)."""

from __future__ import annotations

import json

import httpx2 as httpx

from anyclaude import messages
from anyclaude.token_count import HEADER, Estimate, is_estimate

from .test_frontdoor_fakes import BODY, Engines


def count(door) -> httpx.Response:
    body = {k: v for k, v in BODY.items() if k != "max_tokens"}
    return httpx.post(door.url + "/v1/messages/count_tokens", content=json.dumps(body),
                      timeout=10)


def test_an_exact_count_says_exact(make_door):
    reply = count(make_door(engines=Engines(count=31)))
    assert reply.status_code == 200 and reply.json() == {"input_tokens": 31}
    assert reply.headers[HEADER] == "exact"


def test_an_estimate_says_estimate(make_door):
    reply = count(make_door(engines=Engines(count=Estimate(42))))
    assert reply.status_code == 200 and reply.json() == {"input_tokens": 42}
    assert reply.headers[HEADER] == "estimate"


def test_counted_carries_the_estimate_flag_over_the_wire():
    for flag in (True, False):
        decoded, _ = messages.decode(messages.encode(messages.Counted(42, 2048, estimated=flag),
                                                     b"r1"))
        assert decoded == messages.Counted(42, 2048, estimated=flag)
    old_peer, _ = messages.decode(messages.encode(messages.Counted(5), b"r2"))
    assert old_peer.estimated is False and not is_estimate(old_peer.input_tokens)
    assert is_estimate(Estimate(3)) and Estimate(3) + 1 == 4 and not is_estimate(Estimate(3) + 1)
