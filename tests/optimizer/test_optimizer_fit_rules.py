"""The output floor and max_tokens clamp, and the automatic reductions in tiers."""

from __future__ import annotations

import pytest

from anyclaude import errors
from anyclaude.optimizer_config import OptimizerConfig, check, profile
from anyclaude.services.optimizer import auto_reduce, reductions
from anyclaude.services.optimizer.core import (Optimizer, budget_for, output_floor,
                                               prompt_limit)
from opt_helpers import Counting, char_count, check_pairs, exchange, filler, note, request, \
    settings, text

# --- the output floor and the max_tokens clamp -------------------------------------------------


def test_output_floor_rule():
    assert output_floor(32768, 32000, 8192) == 2048        # a sixteenth of the window
    assert output_floor(8192, 32000, 8192) == 1024         # at least 1024 ...
    assert output_floor(8192, 300, 8192) == 300            # ... but never more than asked
    assert output_floor(8192, 32000, 512) == 512           # ... or than the model may write
    assert output_floor(1500, 32000, 0) == 750             # and at most half the window
    assert prompt_limit(32768, 32000, 8192) == 32768 - 2048
    assert budget_for(32768, 32000, 8192, 0.25) == 32768 - 8192   # the aim keeps the reserve


def one_message_of(tokens: int) -> list[dict]:
    """A single user message that char_count counts as about ``tokens`` with the default
    request around it."""
    return [text("user", "w" * (tokens * 4 - 1100))]


def test_a_prompt_that_fits_with_the_floor_is_neither_refused_nor_cut():
    """The issue's case: a 32K window, max_output_tokens 8192, Claude Code asks 32000, the
    prompt is ~28K. The full reserve would leave 24576; the floor leaves 30720."""
    s = settings(window=32768, max_output=8192)
    req = request(one_message_of(28000), system=["You are a coding agent."])
    tokens = char_count(req)
    assert 24576 < tokens < 30720
    out, notes = Optimizer(s, char_count).optimize(req)
    assert out["messages"] == req["messages"]
    assert not note(notes, "cut") and not note(notes, "fit_new_messages")
    fit = note(notes, "fit")
    assert (fit["budget"], fit["aim"], fit["input_tokens"]) == (30720, 24576, tokens)
    assert out["max_tokens"] == 32768 - tokens                  # clamped to what is left
    assert note(notes, "clamp_max_tokens") == {"action": "clamp_max_tokens", "from": 32000,
                                               "to": 32768 - tokens}
    assert out["max_tokens"] >= 2048


def test_prompt_too_long_only_when_less_than_the_floor_is_left():
    s = settings(window=32768, max_output=8192)
    req = request(one_message_of(31500), system=["You are a coding agent."])
    with pytest.raises(errors.PromptTooLong) as info:
        Optimizer(s, char_count).optimize(req)
    assert info.value.maximum == 30720 and info.value.tokens == char_count(req)


def test_a_needed_cut_still_aims_below_the_full_reserve():
    """Once the conversation is over the limit, the cut brings it to fit_target_ratio of the
    aim (the window less the full reserve), not just under the limit: cuts stay rare."""
    s = settings(window=16384, max_output=4096)
    optimizer = Optimizer(s, char_count)
    msgs, results = [text("user", "task")], []
    for i in range(40):
        msgs += exchange(f"t{i}", [1500])
        out, notes = optimizer.optimize(request(msgs))
        results.append((note(notes, "cut"), note(notes, "fit")))
    fits = [fit for _, fit in results]
    assert all(f["input_tokens"] <= f["budget"] for f in fits)
    assert any(f["input_tokens"] > f["aim"] for f in fits)     # used the room past the aim
    cuts = [fit for cut, fit in results if cut]
    assert cuts and all(f["input_tokens"] <= 0.6 * f["aim"] + 200 for f in cuts)
    check_pairs(out["messages"])


def test_a_new_big_tool_result_is_shortened_to_the_aim_without_a_cut():
    s = settings(window=16384, max_output=4096)
    optimizer = Optimizer(s, char_count)
    msgs = [text("user", "task"), *exchange("a", [500])]
    optimizer.optimize(request(msgs))
    msgs += exchange("b", [90000])
    out, notes = optimizer.optimize(request(msgs))
    assert note(notes, "fit_new_messages") and not note(notes, "cut")
    assert note(notes, "fit")["input_tokens"] <= note(notes, "fit")["aim"]


# --- automatic reductions --------------------------------------------------------------------

CORE = ["Bash", "Read", "Edit", "Write", "Glob", "Grep"]
OTHER = ["Agent", "WebFetch", "TaskCreate", "TaskUpdate", "NotebookEdit", "Workflow",
         "CronCreate", "EnterWorktree", "Skill", "SendMessage"]


def big_tools() -> list[dict]:
    """Claude-Code-shaped tools: long descriptions, described parameters."""
    tools = []
    for i, name in enumerate(CORE + OTHER):
        schema = {"type": "object", "required": ["description"], "properties": {
            "description": {"type": "string", "description": filler(400, i)},
            "path": {"type": "string", "description": "Where."}}}
        tools.append({"name": name, "description": f"{name} tool.\n" + filler(3000, i),
                      "input_schema": schema})
    return tools


SYSTEM = ["You are a coding agent.\n\n# Harness\n" + filler(2000, 1)
          + "\n# Memory\n" + filler(6000, 2) + "\n## Types\n" + filler(1000, 3)
          + "\n# Environment\ncwd: /work\n# Context management\n" + filler(1500, 4)]


def claude_like(messages=None, **extra) -> dict:
    return request(messages or [text("user", "Say hi")], system=list(SYSTEM),
                   tools=big_tools(), **extra)


def test_small_prompts_are_not_reduced_and_cost_at_most_one_count_per_system_and_tools():
    counter = Counting()
    optimizer = Optimizer(settings(window=32768), counter)
    out, notes = optimizer.optimize(claude_like())
    assert out["tools"] == big_tools() and out["system"] == SYSTEM
    assert not note(notes, "auto_reduce") and not note(notes, "reductions")
    assert counter.calls == 2                  # the fit, and once system + tools alone
    optimizer.optimize(claude_like([text("user", "again")]))
    assert counter.calls == 3                  # remembered
    optimizer.optimize(request([text("user", "hi")]))
    assert counter.calls == 4                  # surely small: not even measured once


@pytest.mark.parametrize("window, tiers", [
    (24576, ["tool_descriptions"]),
    (8192, ["tool_descriptions", "core_tools"]),
    (4096, ["tool_descriptions", "core_tools", "system_sections"]),
])
def test_tiers_run_in_order_until_system_and_tools_fit(window, tiers):
    optimizer = Optimizer(settings(window=window, max_output=4096), char_count)
    out, notes = optimizer.optimize(claude_like())
    auto = note(notes, "auto_reduce")
    assert auto["tiers"] == tiers
    assert note(notes, "reductions")["names"] == tiers
    limit = note(notes, "fit")["budget"]
    assert auto["fixed_tokens_before"] > 0.75 * limit
    assert auto["fixed_tokens_after"] <= 0.5 * limit
    assert auto["tokens_saved"] == auto["fixed_tokens_before"] - auto["fixed_tokens_after"]
    names = [t["name"] for t in out["tools"]]
    if "core_tools" in tiers:
        assert names == CORE and auto["removed_tools"] == OTHER
    else:
        assert names == CORE + OTHER
    assert all(len(t["description"]) <= auto_reduce.DESCRIPTION_CHARS + 10
               for t in out["tools"])
    described = out["tools"][0]["input_schema"]["properties"]["description"]
    assert len(described["description"]) <= auto_reduce.PARAMETER_DESCRIPTION_CHARS + 10
    assert out["tools"][0]["input_schema"]["required"] == ["description"]
    if "system_sections" in tiers:
        assert "Memory" in auto["dropped_sections"]          # the largest goes first
        assert "Environment" not in auto["dropped_sections"]
        assert "# Memory" not in out["system"][0] and "cwd: /work" in out["system"][0]
    else:
        assert out["system"] == SYSTEM
    assert optimizer.info()["reductions"] == {name: 1 for name in tiers}
    assert optimizer.info()["last"]["reductions"] == tiers


def test_the_reduced_prefix_is_identical_turn_after_turn():
    """Tiers come from system + tools only and are remembered: as the conversation grows,
    the reduced system and tools stay byte for byte the same, and the decision's counts are
    paid once."""
    counter = Counting()
    optimizer = Optimizer(settings(window=4096, max_output=1024), counter)
    msgs = [text("user", "task")]
    seen = []
    for i in range(8):
        msgs += exchange(f"t{i}", [600])
        out, notes = optimizer.optimize(claude_like(list(msgs)))
        seen.append((out["system"], out["tools"], tuple(note(notes, "auto_reduce")["tiers"])))
    assert all(s == seen[0] for s in seen)
    first = Optimizer(settings(window=4096, max_output=1024), char_count)
    assert first.optimize(claude_like(list(msgs)))[0]["tools"] == seen[0][1]
    decision_counts = len(seen[0][2]) + 1
    assert counter.calls <= 8 * 3 + decision_counts


def test_core_tools_keep_what_the_conversation_used_and_tool_choice_names():
    msgs = [text("user", "task"),
            {"role": "assistant", "content": [{"type": "tool_use", "id": "c1",
                                               "name": "WebFetch", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1",
                                          "content": [{"type": "text", "text": "page"}]}]}]
    out, notes = Optimizer(settings(window=8192), char_count).optimize(
        claude_like(msgs, tool_choice={"type": "tool", "name": "Skill"}))
    assert [t["name"] for t in out["tools"]] == CORE + ["WebFetch", "Skill"]
    # the front door offers the web_search server tool as a tool of that name: it stays
    req = claude_like(server_tools=[{"type": "web_search_20250305", "name": "Workflow"}])
    out, _ = Optimizer(settings(window=8192), char_count).optimize(req)
    assert [t["name"] for t in out["tools"]] == CORE + ["Workflow"]


def test_configured_reductions_still_work_and_are_named():
    cfg = OptimizerConfig(models={"main": {"tool_allowlist": ["Read"]}})
    out, notes = Optimizer(settings(window=32768, optimizer=cfg), char_count).optimize(
        claude_like())
    assert [t["name"] for t in out["tools"]] == ["Read"]
    assert note(notes, "reductions")["names"] == ["tool_allowlist"]
    assert not note(notes, "auto_reduce")


def test_auto_reductions_can_be_turned_off():
    cfg = OptimizerConfig(auto_reductions=False)
    with pytest.raises(errors.PromptTooLong):
        Optimizer(settings(window=4096, max_output=1024, optimizer=cfg), char_count).optimize(
            claude_like())


def test_auto_reduction_settings_are_checked():
    p = profile(OptimizerConfig(models={"main": {"core_tools": "Bash, Read",
                                                 "auto_reductions": "false"}}), "main")
    assert p.core_tools == ("Bash", "Read") and p.auto_reductions is False
    with pytest.raises(errors.ConfigError, match=r"auto_reduce_to"):
        check(OptimizerConfig(auto_reduce_to=0.9, auto_reduce_above=0.5), ["main"])
    with pytest.raises(errors.ConfigError, match=r"optimizer\.auto_reduce_above"):
        check(OptimizerConfig(auto_reduce_above=2.0), ["main"])


def test_sections_are_measured_with_their_subsections():
    found = dict(auto_reduce.sections(SYSTEM))
    assert list(found) == ["Harness", "Memory", "Types", "Environment", "Context management"]
    assert found["Memory"] > found["Types"] + 6000
    assert auto_reduce.pick_sections(SYSTEM, 100) == ("Memory",)
    everything = auto_reduce.pick_sections(SYSTEM, 10 ** 9)
    assert "Environment" not in everything and "Harness" in everything
    code = ["```\n# Not a heading\n```\n# Real\nx"]
    assert [h for h, _ in auto_reduce.sections(code)] == ["Real"]
    out, dropped, _ = reductions.drop_sections(SYSTEM, ("Memory",))
    assert "## Types" not in out[0]     # a subsection goes with its section


def test_a_window_the_engine_reports_on_its_first_count_is_used_from_turn_one():
    """The configured window is 32K, the engine says 8K on its first count: turn 1 is
    already reduced for 8K, so turn 2 does not change the prefix."""
    reported = {}

    def count(req):
        reported["main"] = 8192
        return char_count(req)
    optimizer = Optimizer(settings(window=32768), count, window=lambda m: reported.get(m, 0))
    first, notes = optimizer.optimize(claude_like())
    assert note(notes, "fit")["context_window"] == 8192
    second, _ = optimizer.optimize(claude_like([text("user", "Say hi"), text("assistant", "hi"),
                                                text("user", "more")]))
    assert first["tools"] == second["tools"] and [t["name"] for t in first["tools"]] == CORE
