"""Unit tests: hygiene, each reduction, each route, the fitting steps, config, counting."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from anyclaude import errors
from anyclaude.config import ModelConfig
from anyclaude.optimizer_config import OptimizerConfig, check, profile
from anyclaude.services.optimizer import hygiene, plan as P, reductions, routing
from anyclaude.services.optimizer.core import Optimizer, budget_for
from anyclaude.services.optimizer.counter import EngineCounter
from opt_helpers import (BILLING, Counting, char_count, check_pairs, exchange, filler, note,
                         request, settings, text)

# --- hygiene ---------------------------------------------------------------------------------


def test_billing_header_block_is_removed_and_nothing_else():
    system = [BILLING, "You are Claude Code.", "Second block."]
    out, removed = hygiene.remove_billing_header(system)
    assert removed and out == ["You are Claude Code.", "Second block."]
    assert system[0] == BILLING  # the input is not mutated


def test_billing_header_line_inside_a_block_is_removed():
    out, removed = hygiene.remove_billing_header([f"{BILLING}\nYou are Claude Code.\nBe brief."])
    assert removed and out == ["You are Claude Code.\nBe brief."]
    out, removed = hygiene.remove_billing_header([f"Intro\n{BILLING}\nRest", "Other"])
    assert removed and out == ["Intro\nRest", "Other"]
    out, removed = hygiene.remove_billing_header([f"Intro\n{BILLING}"])
    assert removed and out == ["Intro"]


def test_without_billing_header_the_system_prompt_is_untouched():
    system = ["You are Claude Code.", "Mentions x-anthropic-billing-header: mid-line only."]
    assert hygiene.remove_billing_header(system) == (system, False)


def test_only_the_first_billing_header_goes():
    out, _ = hygiene.remove_billing_header([BILLING, BILLING + " again"])
    assert out == [BILLING + " again"]


def test_billing_header_gives_the_same_prompt_across_sessions():
    seen = []
    for session in ("aaa", "bbb"):
        req = request([text("user", "hi")], system=[
            f"x-anthropic-billing-header: cc_version=2.1; cch={session};", "You are Claude Code."])
        out, notes = Optimizer(settings(), char_count).optimize(req)
        assert note(notes, "remove_billing_header")
        seen.append(out["system"])
    assert seen[0] == seen[1] == ["You are Claude Code."]


# --- reductions ------------------------------------------------------------------------------

TOOLS = [{"name": "Bash", "description": "Run a command.\n" + "More detail. " * 40,
          "input_schema": {"type": "object"}},
         {"name": "Read", "description": "Read a file.", "input_schema": {"type": "object"}},
         {"name": "NotebookEdit", "description": "Edit a notebook.", "input_schema": {}}]


def test_trim_tool_descriptions():
    out, trimmed, saved = reductions.trim_descriptions(TOOLS, 100)
    assert trimmed == 1 and saved > 400
    assert out[0]["description"].endswith(reductions.ELLIPSIS)
    assert len(out[0]["description"]) <= 100 + len(reductions.ELLIPSIS)
    assert out[1:] == TOOLS[1:] and out[0]["input_schema"] == TOOLS[0]["input_schema"]
    assert reductions.trim_descriptions(TOOLS, 100) == (out, trimmed, saved)  # deterministic


def test_tool_allowlist_keeps_order_and_the_chosen_tool():
    out, removed, saved = reductions.allowlist(TOOLS, ("Read", "Bash"), None)
    assert [t["name"] for t in out] == ["Bash", "Read"] and removed == ["NotebookEdit"]
    assert saved > 0
    out, removed, _ = reductions.allowlist(TOOLS, ("Read",), {"type": "tool", "name": "Bash"})
    assert [t["name"] for t in out] == ["Bash", "Read"]


def test_drop_system_sections_by_heading():
    prompt = ("Intro\n# Tone and style\nBe terse.\n## Examples\nex\n# Tools\nUse tools.\n"
              "```\n# Tone and style\n```\nEnd")
    out, dropped, saved = reductions.drop_sections([prompt, "other"], ("tone and style",))
    assert out == ["Intro\n# Tools\nUse tools.\n```\n# Tone and style\n```\nEnd", "other"]
    assert dropped == ["Tone and style"] and saved == len(prompt) - len(out[0])
    out, dropped, _ = reductions.drop_sections(["# Only\nthis"], ("Only",))
    assert out == [] and dropped == ["Only"]


def test_reductions_apply_per_model_profile_and_report_tokens_saved():
    cfg = OptimizerConfig(models={"main": {"tool_allowlist": ["Read"],
                                           "tool_description_max_chars": 5,
                                           "system_drop_sections": ["Tone"]}})
    s = settings(optimizer=cfg)
    req = request([text("user", "hi")], tools=TOOLS, system=["Intro\n# Tone\nterse\n# Keep\nyes"])
    out, notes = Optimizer(s, char_count).optimize(req)
    assert [t["name"] for t in out["tools"]] == ["Read"]
    assert out["tools"][0]["description"] == "Read" + reductions.ELLIPSIS
    assert out["system"] == ["Intro\n# Keep\nyes"]
    for action in ("tool_allowlist", "trim_tool_descriptions", "drop_system_sections"):
        assert note(notes, action)["tokens_saved"] > 0, action
    plain, notes = Optimizer(settings(), char_count).optimize(req)
    assert plain["tools"] == TOOLS and not note(notes, "tool_allowlist")


# --- config ----------------------------------------------------------------------------------

def test_profile_overrides_and_bad_values_name_the_key():
    cfg = OptimizerConfig(keep_last_turns=3, models={"main": {"keep_last_turns": "1",
                                                              "tool_allowlist": "Bash, Read"}})
    p = profile(cfg, "main")
    assert p.keep_last_turns == 1 and p.tool_allowlist == ("Bash", "Read")
    assert profile(cfg, "other").keep_last_turns == 3
    with pytest.raises(errors.ConfigError, match=r"optimizer\.models\.main\.keep_last_turn"):
        profile(OptimizerConfig(models={"main": {"keep_last_turn": 1}}), "main")
    with pytest.raises(errors.ConfigError, match=r"optimizer\.fit_target_ratio"):
        check(OptimizerConfig(fit_target_ratio=1.5), ["main"])
    with pytest.raises(errors.ConfigError, match=r"optimizer\.models\.ghost names no"):
        check(OptimizerConfig(models={"ghost": {}}), ["main"])
    with pytest.raises(errors.ConfigError, match=r"tool_allowlist"):
        profile(OptimizerConfig(models={"main": {"tool_allowlist": [1]}}), "main")


# --- routing ---------------------------------------------------------------------------------

MODELS = {name: ModelConfig(context_window=window, max_output_tokens=1024)
          for name, window in (("main", 8000), ("mini", 4000), ("think", 8000), ("long", 64000))}
ROUTES = {"default": "main", "small": "mini", "reasoning": "think", "long_context": "long"}


def routed(req, routes=ROUTES, **cfg):
    s = settings(models=MODELS, routes=routes, optimizer=OptimizerConfig(**cfg))
    optimizer = Optimizer(s, char_count)
    out, notes = optimizer.optimize(req)
    route = next(n for n in notes if "route" in n)
    return out, route, notes, optimizer


def test_default_route():
    out, route, _, optimizer = routed(request([text("user", "hello")]))
    assert out["model"] == "main" and route["route"] == "default"
    assert optimizer.info()["routes"] == {"default": 1}
    assert optimizer.info()["last"]["model"] == "main"


def test_haiku_side_call_goes_small():
    req = request([text("user", "Write a title")], requested_model="claude-haiku-4-5-20251001")
    out, route, _, _ = routed(req)
    assert out["model"] == "mini" and route["route"] == "small"
    assert route["reason"] == "haiku-class side call"
    out, route, _, _ = routed({**req, "model": "mini"})  # the front door mapped it already
    assert out["model"] == "mini" and route["reason"] == "haiku-class side call"


def test_haiku_without_a_small_model_stays_on_default():
    req = request([text("user", "t")], requested_model="claude-haiku-4-5")
    out, route, _, _ = routed(req, routes={"default": "main"})
    assert out["model"] == "main" and route["route"] == "default"


def test_tiny_requests_go_small_only_when_enabled():
    req = request([text("user", "Summarize: hi")], tools=[])
    assert routed(req)[0]["model"] == "main"
    out, route, _, _ = routed(req, small_for_tiny_requests=True)
    assert out["model"] == "mini" and route["reason"] == "tiny request without tools"
    with_tools = request([text("user", "Summarize: hi")])
    assert routed(with_tools, small_for_tiny_requests=True)[0]["model"] == "main"
    long = request([text("user", "x" * 7000)], tools=[])
    assert routed(long, small_for_tiny_requests=True)[0]["model"] == "main"


def test_thinking_goes_to_the_reasoning_model():
    out, route, _, _ = routed(request([text("user", "think hard")], thinking=True))
    assert out["model"] == "think" and route["route"] == "reasoning"
    out, _, _, _ = routed(request([text("user", "x")], thinking=True), routes={"default": "main"})
    assert out["model"] == "main"


def test_too_long_for_the_default_goes_to_long_context_instead_of_cutting():
    msgs = [text("user", "task"), *exchange("a", [40000]), *exchange("b", [100])]
    out, route, notes, optimizer = routed(request(msgs))
    assert out["model"] == "long" and route["route"] == "long_context"
    assert out["messages"] == msgs  # nothing cut
    skipped = next(n for n in notes if "route_skipped" in n)
    assert skipped["model"] == "main" and skipped["input_tokens"] > skipped["budget"]
    assert optimizer.info()["routes"] == {"long_context": 1}
    # without a long-context model the default model cuts instead
    out, route, notes, _ = routed(request(msgs), routes={"default": "main"})
    assert out["model"] == "main" and note(notes, "shorten_tool_result")


def test_small_model_falls_back_to_the_default_when_the_prompt_is_too_big_for_it():
    msgs = [text("user", "summarize " + "y" * 20000)]
    out, route, _, _ = routed(request(msgs, requested_model="claude-3-5-haiku", tools=[]))
    assert out["model"] == "main" and route["route"] == "default"


def test_explicit_model_is_kept_and_unknown_model_is_not_found():
    out, route, _, _ = routed(request([text("user", "x")], model="long"))
    assert out["model"] == "long" and route["route"] == "explicit"
    with pytest.raises(errors.NotFound, match="model: ghost"):
        routed(request([text("user", "x")], model="ghost"))


def test_route_candidates_are_distinct():
    class R:
        default, small, reasoning, long_context = "main", "main", "", "main"
    chain = routing.candidates(routing.Route("small", "main", "x"), R)
    assert [c.model for c in chain] == ["main"]


# --- fitting steps ---------------------------------------------------------------------------

def test_budget_rule():
    assert budget_for(16384, 32000, 4096, 0.25) == 16384 - 4096
    assert budget_for(16384, 1000, 4096, 0.25) == 16384 - 1000
    assert budget_for(16384, 32000, 8192, 0.25) == 16384 - 4096
    assert budget_for(16384, 32000, 0, 0.25) == 16384 - 4096


def test_fitting_prompt_is_left_alone_with_one_count():
    counter = Counting()
    msgs = [text("user", "task"), *exchange("a", [500])]
    out, notes = Optimizer(settings(), counter).optimize(request(msgs))
    assert out["messages"] == msgs and counter.calls == 1
    assert note(notes, "fit")["exact_counts"] == 1 and not note(notes, "cut")


def test_oversized_tool_result_keeps_head_and_tail():
    msgs = [text("user", "task"), *exchange("a", [200000])]
    out, notes = Optimizer(settings(), char_count).optimize(request(msgs))
    original = msgs[-1]["content"][0]["content"][0]["text"]
    short = out["messages"][-1]["content"][0]["content"][0]["text"]
    assert len(short) < len(original) // 10
    assert short[:100] == original[:100] and short[-60:] == original[-60:]
    assert "characters (≈" in short and "tokens) cut by anyclaude …]" in short
    assert note(notes, "shorten_tool_result")["count"] == 1
    assert note(notes, "fit_new_messages") and not note(notes, "cut")
    assert out["messages"][-1]["content"][0]["tool_use_id"] == "a_0"


def test_old_outputs_become_placeholders_before_turns_are_dropped():
    msgs = [text("user", "task")]
    for i in range(8):
        msgs += exchange(f"t{i}", [4000])
    s = settings(window=8000, max_output=1000)
    out, notes = Optimizer(s, char_count).optimize(request(msgs))
    assert note(notes, "placeholder_tool_results") and not note(notes, "drop_turns")
    first_result = out["messages"][2]["content"][0]["content"][0]["text"]
    assert first_result.startswith("[anyclaude: tool output removed")
    assert out["messages"][-1] == msgs[-1]  # the last exchange is untouched
    check_pairs(out["messages"])


def test_oldest_turns_are_dropped_keeping_the_task_in_front():
    msgs = [text("user", "the task")]
    for i in range(12):
        msgs += [text("assistant", filler(1500, i)), text("user", filler(1500, i + 100))]
    s = settings(window=6000, max_output=1000)
    out, notes = Optimizer(s, char_count).optimize(request(msgs))
    dropped = note(notes, "drop_turns")
    assert dropped and dropped["kept_first"]
    first = out["messages"][0]
    assert first["content"][0]["text"] == "the task"
    assert first["content"][-1]["text"] == (f"[anyclaude: {dropped['messages']} earlier messages "
                                            "were removed here to fit the context window]")
    assert out["messages"][1]["role"] == "assistant"
    assert out["messages"][-2:] == msgs[-2:]
    assert len(out["messages"]) == len(msgs) - dropped["messages"]


def test_cut_is_rare_and_big():
    """After a cut the prompt is near fit_target_ratio of the budget, and the next turns
    extend it without another cut until it is full again."""
    s = settings(window=8000, max_output=1000)
    optimizer = Optimizer(s, char_count)
    msgs, cuts, sizes = [text("user", "task")], [], []
    for i in range(30):
        msgs += exchange(f"t{i}", [1200])
        out, notes = optimizer.optimize(request(msgs))
        cuts.append(bool(note(notes, "cut")))
        sizes.append(note(notes, "fit")["input_tokens"])
    budget = note(notes, "fit")["budget"]
    assert 1 <= sum(cuts) <= 8
    for i, was_cut in enumerate(cuts):
        if was_cut:
            assert sizes[i] <= budget * 0.7
    check_pairs(out["messages"])


def test_prompt_too_long_when_even_the_last_turn_cannot_fit():
    s = settings(window=2000, max_output=500)
    msgs = [text("user", "task"), text("assistant", "ok"), text("user", "z" * 20000)]
    with pytest.raises(errors.PromptTooLong) as info:
        Optimizer(s, char_count).optimize(request(msgs))
    budget = budget_for(2000, 32000, 500, 0.25)
    assert info.value.maximum == budget and info.value.tokens > budget
    expected = f"prompt is too long: {info.value.tokens} tokens > {budget} maximum"
    assert info.value.message == expected
    assert info.value.type == "prompt_too_long"


def test_max_tokens_is_clamped_to_what_the_window_leaves():
    s = settings(window=16384, max_output=4096)
    out, notes = Optimizer(s, char_count).optimize(request([text("user", "hi")], max_tokens=32000))
    assert out["max_tokens"] == 4096
    assert note(notes, "clamp_max_tokens") == {"action": "clamp_max_tokens", "from": 32000,
                                               "to": 4096}
    out, notes = Optimizer(s, char_count).optimize(request([text("user", "hi")], max_tokens=100))
    assert out["max_tokens"] == 100 and not note(notes, "clamp_max_tokens")


def test_old_long_tool_inputs_are_shortened_with_their_outputs():
    msgs = [text("user", "task")]
    big = {"file_path": "/a.py", "content": "w" * 30000}
    msgs += [{"role": "assistant", "content": [{"type": "tool_use", "id": "w1", "name": "Write",
                                                "input": big}]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "w1",
                                           "content": [{"type": "text", "text": "ok"}]}]}]
    for i in range(3):
        msgs += exchange(f"t{i}", [300])
    optimizer = Optimizer(settings(window=6000, max_output=1000), char_count)
    out, notes = optimizer.optimize(request(msgs))
    call = out["messages"][1]["content"][0]
    assert call["input"]["file_path"] == "/a.py" and call["id"] == "w1"
    assert len(call["input"]["content"]) < 400 and "cut by anyclaude" in call["input"]["content"]
    check_pairs(out["messages"])


def test_boundaries_never_split_a_call_from_its_result():
    msgs = [text("user", "t"), *exchange("a", [1, 1]), text("assistant", "x"), text("user", "y"),
            *exchange("b", [1])]
    assert P.boundaries(msgs) == [1, 3, 4, 5]


def test_invalid_request_shapes_are_clear_errors():
    optimizer = Optimizer(settings(), char_count)
    for bad, field in (({"model": "main", "messages": [], "max_tokens": 1}, "messages"),
                       ({"model": "main", "messages": [{"role": "user", "content": "x"}],
                         "max_tokens": 1}, "messages.0"),
                       ({"model": "main", "messages": [text("user", "x")], "max_tokens": 0},
                        "max_tokens"),
                       ({"model": "main", "messages": [text("user", "x")], "max_tokens": 5,
                         "system": "str"}, "system")):
        with pytest.raises(errors.InvalidRequest, match=f"^{field}"):
            optimizer.optimize(bad)


# --- counting --------------------------------------------------------------------------------

def test_unreachable_engine_is_unavailable(monkeypatch):
    monkeypatch.setenv("ANYCLAUDE_RUN_DIR", tempfile.mkdtemp(prefix="ac", dir="/tmp"))
    counter = EngineCounter(settings(), timeout=0.3)
    try:
        with pytest.raises(errors.ServiceUnavailable, match="engine-main is not running") as info:
            counter(request([text("user", "x")]))
        assert info.value.type == "unavailable"
        # a socket file left behind by a killed engine: nobody answers within the timeout
        (Path(os.environ["ANYCLAUDE_RUN_DIR"]) / "engine-main").touch()
        with pytest.raises(errors.ServiceUnavailable, match="engine-main is not reachable"):
            counter(request([text("user", "x")]))
    finally:
        counter.close()


def test_remote_models_get_a_conservative_estimate():
    s = settings(models={"main": ModelConfig(kind="openai", base_url="http://x")})
    counter = EngineCounter(s)
    req = request([text("user", "x" * 3000)])
    assert counter(req) >= 1000


def test_the_section_builds_from_toml_values_and_env_strings():
    from anyclaude.config import build
    table = {"fit_target_ratio": "0.5", "tool_allowlist": "Bash,Read", "workers": 2,
             "models": {"main": {"system_drop_sections": ["Tone and style"]}}}
    cfg = build(OptimizerConfig, table, "anyclaude.toml", "optimizer")
    check(cfg, ["main"])
    p = profile(cfg, "main")
    assert (p.fit_target_ratio, p.tool_allowlist, p.system_drop_sections) == (
        0.5, ("Bash", "Read"), ("Tone and style",))
    with pytest.raises(errors.ConfigError, match=r"optimizer\.keep_last_turns = -1"):
        build(OptimizerConfig, {"keep_last_turns": -1}, "anyclaude.toml", "optimizer")


# --- session state ---------------------------------------------------------------------------

def grow(optimizer, turns, msgs=None, size=1500):
    msgs = msgs or [text("user", "task")]
    outs = []
    for _ in range(turns):
        msgs = msgs + exchange(f"t{len(msgs)}", [size])
        outs.append(optimizer.optimize(request(msgs)))
    return msgs, outs


def test_a_lost_state_or_an_edited_history_still_fits():
    s = settings(window=6000, max_output=1000)
    msgs, outs = grow(Optimizer(s, char_count), 20)
    assert any(note(notes, "cut") for _, notes in outs)
    out, notes = Optimizer(s, char_count).optimize(request(msgs))   # a restart: no state
    assert note(notes, "fit")["input_tokens"] <= note(notes, "fit")["budget"]
    check_pairs(out["messages"])
    optimizer = Optimizer(s, char_count)
    grow(optimizer, 20, list(msgs[:1]))
    changed = {**msgs[5], "content": [text("assistant", "edited")["content"][0],
                                      *msgs[5]["content"][1:]]}
    edited = [*msgs[:5], changed, *msgs[6:]]          # same session, an edited history
    out, notes = optimizer.optimize(request(edited))
    assert note(notes, "fit")["input_tokens"] <= note(notes, "fit")["budget"]
    check_pairs(out["messages"])


def test_a_repeated_request_gives_the_same_prompt():
    s = settings(window=6000, max_output=1000)
    optimizer = Optimizer(s, char_count)
    msgs, outs = grow(optimizer, 12)
    again, _ = optimizer.optimize(request(msgs))
    assert again == outs[-1][0]


def test_sessions_are_counted_in_info():
    optimizer = Optimizer(settings(), char_count)
    optimizer.optimize(request([text("user", "one")]))
    optimizer.optimize(request([text("user", "two")]))
    info = optimizer.info()
    assert info["sessions"] == 2 and info["requests"] == 2 and info["cuts"] == 0


def test_plain_text_documents_in_tool_results_are_shortened_too():
    block = {"type": "tool_result", "tool_use_id": "a", "is_error": False, "content": [
        {"type": "document", "media_type": "text/plain", "data": "d" * 50000},
        {"type": "image", "media_type": "image/png", "data": "AAAA"}]}
    short = P.shorten(block, 1000, 12000)
    assert short["content"][0]["type"] == "text" and len(short["content"][0]["text"]) < 1200
    assert short["content"][1] == block["content"][1]
    assert P.block_chars(block) > 50000 > P.block_chars(short)


def test_session_identity_does_not_depend_on_dict_order():
    from anyclaude.services.optimizer import sessions
    a = request([text("user", "x"), *exchange("a", [10])])
    b = request([{"content": [{"text": "x", "type": "text"}], "role": "user"},
                 *exchange("a", [10])])
    assert sessions.session_key(a) == sessions.session_key(b)
    assert sessions.message_chain(a["messages"]) == sessions.message_chain(b["messages"])
    assert sessions.message_chain(a["messages"])[0] != sessions.message_chain(a["messages"])[1]
