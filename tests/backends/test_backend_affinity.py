"""Cache affinity across several upstreams: rendezvous order, breaker, and sessions moving
only off a dead upstream (unit level, then through OpenAICore against real HTTP servers)."""

from __future__ import annotations

from collections import Counter

from anyclaude import messages
from anyclaude.services.engine.backends.affinity import Affinity, rendezvous, session_key
from anyclaude.services.engine.backends.backend_openai import OpenAICore

from .bk_fake_server import FakeUpstream
from .conftest import BASH, make_request, model_config, run

URLS = [f"http://10.0.0.{i}:8000/v1" for i in range(1, 5)]


def sessions(n):
    """n different conversations: same system and tools, different first message."""
    return [make_request(f"task number {i}", tools=[BASH]) for i in range(n)]


def test_the_key_ignores_later_turns_and_sampling():
    first = make_request("fix the bug", tools=[BASH])
    later = make_request("fix the bug", tools=[BASH], temperature=0.1, max_tokens=5)
    later["messages"] = first["messages"] + [
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
        {"role": "user", "content": [{"type": "text", "text": "more"}]}]
    assert session_key(first) == session_key(later)
    assert session_key(first) != session_key(make_request("another task", tools=[BASH]))
    assert session_key(first) != session_key(make_request("fix the bug", tools=[]))


def test_rendezvous_is_stable_and_spreads_sessions():
    keys = [session_key(r) for r in sessions(400)]
    firsts = Counter(rendezvous(k, URLS)[0] for k in keys)
    assert set(firsts) == set(URLS) and min(firsts.values()) > 60    # roughly even
    assert all(rendezvous(k, URLS) == rendezvous(k, list(reversed(URLS))) for k in keys[:20])


def test_a_dead_upstream_moves_only_its_own_sessions():
    clock = [0.0]
    affinity = Affinity(URLS, threshold=2, reset_after=10.0, clock=lambda: clock[0])
    keys = [session_key(r) for r in sessions(200)]
    before = {k: affinity.order(k)[0] for k in keys}
    dead = URLS[1]
    affinity.record(dead, False)
    affinity.record(dead, False)
    assert affinity.snapshot()[dead] == "out"
    after = {k: affinity.order(k)[0] for k in keys}
    for k in keys:
        if before[k] == dead:
            assert after[k] == rendezvous(k, URLS)[1]      # the next in its own ranking
        else:
            assert after[k] == before[k]                   # everyone else stays
    assert any(before[k] == dead for k in keys)
    assert all(affinity.order(k)[-1] == dead for k in keys)   # still tried, last


def test_after_the_pause_one_trial_and_then_back():
    clock = [0.0]
    affinity = Affinity(URLS[:2], threshold=1, reset_after=10.0, clock=lambda: clock[0])
    key = next(k for k in (session_key(r) for r in sessions(50)) if rendezvous(k, URLS[:2])[0] == URLS[0])
    affinity.record(URLS[0], False)
    assert affinity.order(key)[0] == URLS[1]
    clock[0] = 11.0
    assert affinity.order(key)[0] == URLS[0]     # the trial
    assert affinity.order(key)[0] == URLS[1]     # nobody else piles on meanwhile
    affinity.record(URLS[0], False)              # the trial failed: out again
    assert affinity.order(key)[0] == URLS[1]
    clock[0] = 22.0
    assert affinity.order(key)[0] == URLS[0]
    affinity.record(URLS[0], True)
    assert affinity.order(key)[0] == URLS[0] and affinity.snapshot()[URLS[0]] == "in"


def test_through_the_core_sessions_stick_and_fail_over():
    fakes = [FakeUpstream() for _ in range(3)]
    try:
        cfg = model_config(kind="openai", base_url="", base_urls=tuple(f.url for f in fakes),
                           path="m", context_window=4096, max_output_tokens=100)
        core = OpenAICore("up", cfg, delta_interval=0.0)
        by_url = {f.url: f for f in fakes}
        requests = sessions(12)

        def home(request):   # the one upstream that served this request (seen lists are reset)
            text = request["messages"][-1]["content"][0]["text"]
            served = [f.url for f in fakes if any(s.body["messages"][-1]["content"] == text for s in f.seen)]
            assert len(served) == 1
            for f in fakes:
                f.seen.clear()
            return served[0]

        first = {}
        for request in requests:
            assert isinstance(run(core, request)[-1], messages.Done)
            first[session_key(request)] = home(request)
        for request in requests:                     # every session goes back to the same one
            run(core, request)
            assert home(request) == first[session_key(request)]
        dead_url = first[session_key(requests[0])]
        by_url[dead_url].close()
        for request in requests:
            assert isinstance(run(core, request)[-1], messages.Done)   # failover, no error
            key = session_key(request)
            if first[key] == dead_url:
                assert home(request) != dead_url
            else:
                assert home(request) == first[key]
    finally:
        for fake in fakes:
            try:
                fake.close()
            except OSError:
                pass
