"""The one circuit breaker (anyclaude/breaker.py), as the front door and websearch use it,
on a clock the test moves by hand."""

import pytest

from anyclaude.breaker import FAILURE, IGNORE, SUCCESS, Breaker
from anyclaude.errors import Overloaded
from anyclaude.services.websearch.bridge import default_breaker


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def opened(clock, threshold=3):
    """A breaker with websearch's growing cooldown (5 s doubling up to 20 s), just opened."""
    b = Breaker(threshold=threshold, cooldown_s=5, max_cooldown_s=20, clock=clock)
    for _ in range(threshold):
        assert b.allow() is False   # closed: the call goes through, not as a trial
        b.record(FAILURE)
    return b


# --- the front door's use: 529 with a retry-after, neutral outcomes ---------------------

def test_opens_half_opens_and_closes():
    clock = Clock()
    breaker = Breaker(threshold=2, cooldown_s=10, clock=clock)
    assert breaker.allow() is False
    breaker.record(FAILURE)
    assert breaker.state == "closed"
    breaker.record(IGNORE)          # a client disconnect does not reset nor count
    breaker.record(FAILURE)
    assert breaker.state == "open"
    with pytest.raises(Overloaded) as info:
        breaker.allow()
    assert info.value.retry_after == pytest.approx(10)
    clock.now += 4
    with pytest.raises(Overloaded) as info:
        breaker.allow()
    assert info.value.retry_after == pytest.approx(6)
    clock.now += 6
    assert breaker.state == "half_open"
    assert breaker.allow() is True             # the one trial
    with pytest.raises(Overloaded):
        breaker.allow()                        # others wait for it
    breaker.record(FAILURE, trial=True)
    assert breaker.state == "open" and breaker.snapshot()["trips"] == 2
    assert breaker.snapshot()["cooldown_s"] == 10   # no max_cooldown_s: it does not grow
    clock.now += 10
    assert breaker.allow() is True
    breaker.record(SUCCESS, trial=True)
    assert breaker.state == "closed" and breaker.allow() is False


def test_trial_released_by_a_neutral_outcome():
    clock = Clock()
    breaker = Breaker(threshold=1, cooldown_s=1, clock=clock)
    breaker.record(FAILURE)
    clock.now += 1
    assert breaker.allow() is True
    breaker.record(IGNORE, trial=True)
    assert breaker.state == "half_open" and breaker.allow() is True


def test_success_resets_the_failure_count():
    breaker = Breaker(threshold=2, clock=Clock())
    breaker.record(FAILURE)
    breaker.record(SUCCESS)
    breaker.record(FAILURE)
    assert breaker.state == "closed"


# --- websearch's use: a cooldown that grows while SearXNG stays down --------------------

def test_opens_after_threshold_failures_then_says_when_to_retry():
    clock = Clock()
    b = opened(clock)
    assert b.state == "open" and b.retry_in() == 5
    with pytest.raises(Overloaded):
        b.allow()


def test_trial_success_closes():
    clock = Clock()
    b = opened(clock)
    clock.now += 5
    assert b.state == "half_open" and b.allow() is True
    b.record(SUCCESS, trial=True)
    assert b.state == "closed" and b.retry_in() == 0 and b.allow() is False


def test_trial_failure_reopens_with_a_longer_cooldown_up_to_the_cap():
    clock = Clock()
    b = opened(clock)
    for expected in (10, 20, 20):
        clock.now += b.retry_in()
        assert b.allow() is True
        b.record(FAILURE, trial=True)
        assert b.state == "open" and b.snapshot()["cooldown_s"] == expected
    clock.now += 20
    assert b.allow() is True
    b.record(SUCCESS, trial=True)
    assert b.snapshot()["cooldown_s"] == 5


def test_late_failures_of_calls_from_before_opening_do_not_extend_it():
    clock = Clock()
    b = opened(clock)
    b.record(FAILURE)
    assert b.snapshot()["cooldown_s"] == 5 and b.retry_in() == 5
    assert b.snapshot()["trips"] == 1


def test_websearch_default_spares_searxng_with_backoff():
    b = default_breaker()
    assert (b.threshold, b.base_cooldown, b.max_cooldown, b.name) == (3, 5.0, 60.0, "SearXNG")


def test_a_threshold_below_one_is_refused_clearly():
    with pytest.raises(ValueError, match="threshold must be at least 1"):
        Breaker(threshold=0)
