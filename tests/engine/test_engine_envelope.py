"""The error envelope both kinds of engine core run ``generate`` in (envelope.py)."""

from __future__ import annotations

import pytest

from anyclaude import errors
from anyclaude.messages import Delta, Done, Error
from anyclaude.services.engine.envelope import run_generate

DONE = Done(stop_reason="end_turn", stop_sequence=None,
            usage={"input_tokens": 1, "output_tokens": 1})


def run(produce, **kw):
    sent = []
    run_generate(sent.append, produce, model_id="m", **kw)
    return sent


def text(send):
    send(Delta(events=[{"type": "text", "text": "hi"}]))


def raising(exc):
    def produce(send):
        raise exc
    return produce


def test_done_goes_out_after_what_produce_sent():
    def produce(send):
        text(send)
        return DONE
    sent = run(produce)
    assert isinstance(sent[0], Delta) and sent[1:] == [DONE]


@pytest.mark.parametrize("after_output", [False, True])
def test_a_crash_is_an_engine_error_retryable_only_before_output(after_output):
    def produce(send):
        if after_output:
            text(send)
        raise KeyError("boom")
    last = run(produce)[-1]
    assert isinstance(last, Error) and last.type == "engine" and "KeyError" in last.message
    assert last.retryable is not after_output


def test_a_cancel_is_the_cancelled_error_whatever_exception_the_core_signals_it_with():
    class Stop(Exception):
        pass

    cancelled = [Error("cancelled", "request cancelled", False)]
    assert run(raising(Stop()), cancelled=Stop) == cancelled
    assert run(raising(errors.Cancelled("gone"))) == cancelled
    assert run(raising(Stop()))[-1].type == "engine"    # not the core's signal: a crash


def test_anyclaude_errors_go_through_to_error_with_whether_output_went_out():
    seen = []

    def to_error(exc, sent):
        seen.append(sent)
        return Error(exc.type, exc.message, exc.retryable and not sent)

    def produce(send):
        text(send)
        raise errors.Overloaded("busy")
    last = run(produce, to_error=to_error)[-1]
    assert seen == [True] and last == Error("overloaded", "busy", False)
    plain = run(raising(errors.Overloaded("busy")))[-1]
    assert plain == Error("overloaded", "busy", errors.Overloaded("busy").retryable)
