"""Property tests of context fitting over generated conversations, with fake counters."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from anyclaude.errors import PromptTooLong
from anyclaude.optimizer_config import OptimizerConfig
from anyclaude.services.optimizer.core import Optimizer, prompt_limit
from opt_helpers import (BILLING, char_count, check_pairs, dense_count, exchange, filler,
                         request, settings, text)

PROFILE = hsettings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TOO_LONG = re.compile(r"^prompt is too long: (\d+) tokens > (\d+) maximum$")


@st.composite
def conversations(draw):
    """(messages, ends): a Claude-Code-like conversation; each end closes one request."""
    messages = [text("user", "Task: " + filler(draw(st.integers(10, 3000)), 99))]
    ends = [1]
    for turn in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["tools", "tools", "tools", "text", "system"]))
        if kind == "tools":
            sizes = draw(st.lists(st.one_of(st.integers(0, 400), st.integers(2000, 40000)),
                                  min_size=1, max_size=3))
            messages += exchange(f"c{turn}", sizes, say=filler(draw(st.integers(0, 600)), turn))
        elif kind == "text":
            messages += [text("assistant", filler(draw(st.integers(1, 2000)), turn)),
                         text("user", filler(draw(st.integers(1, 6000)), turn + 50))]
        else:
            messages += [text("assistant", "Done."),
                         {"role": "system", "content": [{"type": "text",
                                                         "text": f"Reminder {turn}: be brief."}]},
                         text("user", "Carry on.")]
        ends.append(len(messages))
    return messages, ends


limits = st.fixed_dictionaries({
    "window": st.integers(800, 24000),
    "system_chars": st.integers(0, 8000),
    "max_output": st.integers(256, 4096),
    "max_tokens": st.integers(1, 64000),
    "keep_last_turns": st.integers(1, 3),
    "fit_target_ratio": st.floats(0.4, 0.9),
})


def make(lim, counter):
    cfg = OptimizerConfig(keep_last_turns=lim["keep_last_turns"],
                          fit_target_ratio=lim["fit_target_ratio"])
    s = settings(lim["window"], lim["max_output"], optimizer=cfg)
    budget = prompt_limit(lim["window"], lim["max_tokens"], lim["max_output"])
    return Optimizer(s, counter), budget


def run_session(lim, convo, counter=char_count):
    """Feed every request of a conversation to one optimizer: [(input, output|exc, notes)]."""
    messages, ends = convo
    optimizer, budget = make(lim, counter)
    out = []
    for end in ends:
        req = request(messages[:end], max_tokens=lim["max_tokens"],
                      system=[BILLING, "You are a coding agent. " + filler(lim["system_chars"], 7)])
        try:
            fitted, notes = optimizer.optimize(req)
        except PromptTooLong as exc:
            out.append((req, exc, []))
        else:
            out.append((req, fitted, notes))
    return out, budget


def minimal_fits(req, budget, counter) -> bool:
    """The smallest prompt the rules allow fits: the last exchange with every tool result
    cut to its minimum (generously sized here) after a note on what was removed."""
    msgs = req["messages"]
    tail = [msgs[-1]]
    if any(b["type"] == "tool_result" for b in msgs[-1]["content"]):
        tail = [msgs[-2], msgs[-1]]
    small = [{**m, "content": [
        {**b, "content": [{"type": "text", "text": "x" * 330}]} if b["type"] == "tool_result" else b
        for b in m["content"]]} for m in tail]
    marker = text("user", "x" * 120)
    return counter({**req, "messages": [marker, *small]}) + 50 <= budget


@PROFILE
@given(convo=conversations(), lim=limits, dense=st.booleans())
def test_output_fits_or_is_too_long(convo, lim, dense):
    counter = dense_count if dense else char_count
    results, budget = run_session(lim, convo, counter)
    for req, out, notes in results:
        if isinstance(out, PromptTooLong):
            match = TOO_LONG.match(out.message)
            assert match, out.message
            assert int(match.group(2)) == budget < int(match.group(1))
            assert not minimal_fits(req, budget, counter), "gave up although the minimum fits"
            continue
        tokens = counter(out)
        assert tokens <= budget
        fit = next(n for n in notes if n.get("action") == "fit")
        assert fit["input_tokens"] == tokens and fit["budget"] == budget
        assert out["max_tokens"] <= lim["window"] - tokens


@PROFILE
@given(convo=conversations(), lim=limits)
def test_pairs_never_split_and_prefix_untouched(convo, lim):
    results, _ = run_session(lim, convo)
    for req, out, _ in results:
        if isinstance(out, PromptTooLong):
            continue
        check_pairs(out["messages"])
        assert out["system"] == [s for s in req["system"] if s != BILLING]
        assert out["tools"] == req["tools"]
        assert out["messages"][-1] == req["messages"][-1] or any(
            b["type"] == "tool_result" for b in req["messages"][-1]["content"])
        assert out["messages"][0]["role"] == "user"


@PROFILE
@given(convo=conversations(), lim=limits)
def test_next_turn_extends_the_previous_prompt_unless_cut(convo, lim):
    results, _ = run_session(lim, convo)
    for (_, before, _), (_, after, notes) in zip(results, results[1:], strict=False):
        if isinstance(before, PromptTooLong) or isinstance(after, PromptTooLong):
            continue
        if any(n.get("action") == "cut" for n in notes):
            continue
        old = before["messages"]
        assert after["messages"][:len(old)] == old


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(convo=conversations(), lim=limits)
def test_same_inputs_same_output(convo, lim):
    first, _ = run_session(lim, convo)
    second, _ = run_session(lim, convo)
    for (_, a, notes_a), (_, b, notes_b) in zip(first, second, strict=True):
        if isinstance(a, PromptTooLong):
            assert isinstance(b, PromptTooLong) and a.message == b.message
        else:
            assert a == b and notes_a == notes_b


@PROFILE
@given(convo=conversations(), lim=limits)
def test_a_prompt_within_the_limit_is_never_cut_or_refused(convo, lim):
    """Until the first change of a session, a request whose whole prompt leaves the output
    floor free is passed through untouched (the full output reserve is not required)."""
    results, limit = run_session(lim, convo)
    for req, out, notes in results:
        plain = {**req, "system": [s for s in req["system"] if s != BILLING]}
        if char_count(plain) > limit:
            break                                 # from here on a plan may carry over
        assert not isinstance(out, PromptTooLong), out
        assert out["messages"] == req["messages"]
        assert out["max_tokens"] >= min(lim["max_tokens"], lim["max_output"], 1024,
                                         lim["window"] // 2)
