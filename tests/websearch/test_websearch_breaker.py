"""The breaker, on a clock the test moves by hand."""

from anyclaude.services.websearch.breaker import Breaker


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def opened(clock, threshold=3):
    b = Breaker(threshold=threshold, cooldown_s=5, max_cooldown_s=20, clock=clock)
    for _ in range(threshold):
        assert b.allow()
        b.failure()
    return b


def test_opens_after_threshold_failures_in_a_row():
    clock = Clock()
    b = Breaker(threshold=3, cooldown_s=5, clock=clock)
    for _ in range(2):
        assert b.allow()
        b.failure()
    assert b.state == "closed"
    b.failure()
    assert b.state == "open" and not b.allow()
    assert b.retry_in() == 5


def test_a_success_resets_the_count():
    b = Breaker(threshold=2, clock=Clock())
    b.failure()
    b.success()
    b.failure()
    assert b.state == "closed"


def test_half_open_lets_exactly_one_trial_through():
    clock = Clock()
    b = opened(clock)
    clock.now += 5
    assert b.state == "half_open"
    assert b.allow()
    assert not b.allow()  # a second caller waits for the trial's verdict


def test_trial_success_closes():
    clock = Clock()
    b = opened(clock)
    clock.now += 5
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.allow()


def test_trial_failure_reopens_with_a_longer_cooldown_up_to_the_cap():
    clock = Clock()
    b = opened(clock)
    for expected in (10, 20, 20):
        clock.now += b.retry_in()
        assert b.allow()
        b.failure()
        assert b.state == "open" and b.snapshot()["cooldown_s"] == expected
    clock.now += 20
    assert b.allow()
    b.success()
    assert b.snapshot()["cooldown_s"] == 5


def test_late_failures_of_calls_from_before_opening_do_not_extend_it():
    clock = Clock()
    b = opened(clock)
    b.failure()
    assert b.snapshot()["cooldown_s"] == 5 and b.retry_in() == 5
