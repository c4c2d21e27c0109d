"""The real Claude Code CLI (npm @anthropic-ai/claude-code) against the whole system."""

from __future__ import annotations

import json
import os
import re
import signal

import pytest

from claude_cli import run_claude
from claude_tty import Interactive


def test_text_answer(system):
    system.say(("say the magic words", "Abracadabra, from a local model."))
    run = run_claude(system, "say the magic words", tools="")
    assert run.result["is_error"] is False, run.result
    assert run.result["result"] == "Abracadabra, from a local model."


BASH_CALL = '<tool_call>{"name": "Bash", "arguments": {"command": "echo anyclaude-e2e-marker", "description": "Print the marker"}}</tool_call>'


def test_tool_loop_runs_bash_and_answers(system):
    system.say(("anyclaude-e2e-marker", "The command printed the marker."),
               ("run the marker command", BASH_CALL))
    run = run_claude(system, "run the marker command")
    assert run.result["is_error"] is False, run.result
    uses = run.tool_uses()
    assert [u["name"] for u in uses] == ["Bash"]
    assert uses[0]["input"]["command"] == "echo anyclaude-e2e-marker"
    results = run.tool_results()
    assert "anyclaude-e2e-marker" in str(results[0]["content"])
    assert run.result["result"] == "The command printed the marker."


def test_thinking_is_echoed_back_and_accepted(system):
    system.say(("anyclaude-e2e-marker", "<think>The marker came back.</think>Done thinking."),
               ("think then run", "<think>I should run the marker command.</think>" + BASH_CALL))
    run = run_claude(system, "think then run the command")
    assert run.result["is_error"] is False, run.result
    thoughts = [b for e in run.events if e.get("type") == "assistant"
                for b in e["message"]["content"] if b.get("type") == "thinking"]
    assert thoughts and thoughts[0]["thinking"] == "I should run the marker command."
    assert run.result["result"] == "Done thinking."


@pytest.mark.timeout(2400)   # a cold 28K-token prefill takes minutes on a shared CPU
def test_full_request_with_all_tools_hits_the_prefix_cache_on_the_next_turn(system):
    """Without --bare Claude Code sends its whole system prompt, ~25 tools and role
    "system" messages: the second request of the tool loop must reuse the first's prefix."""
    system.say(("anyclaude-e2e-marker", "Full run finished."),
               ("full run please", BASH_CALL))
    before = system.service("engine-tiny")["info"]
    run = run_claude(system, "full run please: run the marker command", bare=False, tools="")
    assert run.result["is_error"] is False, run.result
    assert run.result["result"] == "Full run finished."
    init = next(e for e in run.events if e.get("subtype") == "init")
    assert len(init["tools"]) >= 15
    usage = run.result["usage"]
    prompt_total = usage["input_tokens"] + usage["cache_read_input_tokens"] + usage["cache_creation_input_tokens"]
    assert prompt_total > 10_000  # the whole Claude Code prompt reached the engine, twice
    assert usage["cache_read_input_tokens"] > 5_000  # the second turn reused the first's prefix
    after = system.service("engine-tiny")["info"]
    assert after["cache"].get("hits", 0) > before["cache"].get("hits", 0)


def test_stream_failure_falls_back_to_a_non_streaming_request(system):
    """A stream that breaks midway (the engine fails after some text) makes Claude Code
    retry without streaming; the non-streaming path must answer it."""
    system.say(("break the stream", "Partial answer", {"fail": True, "times": 1}),
               ("break the stream", "Recovered answer."))
    log = system.home / "logs" / "frontdoor.log"
    start = len(log.read_text().splitlines())
    run = run_claude(system, "break the stream please", tools="")
    assert run.result["is_error"] is False, run.result
    assert run.result["result"] == "Recovered answer."
    lines = [json.loads(l) for l in log.read_text().splitlines()[start:]]
    requests = [l["stream"] for l in lines if l.get("event") == "frontdoor.request"]
    assert requests[:2] == [True, False]  # the stream failed; the fallback was non-streaming


def test_context_overflow_surfaces_as_prompt_is_too_long(system):
    system.say()
    # Claude Code is told of a bigger window than the model has, so it sends the request.
    run = run_claude(system, "hello " + "lorem ipsum dolor sit amet " * 9000, tools="",
                     extra_env={"CLAUDE_CODE_MAX_CONTEXT_TOKENS": "200000",
                                "CLAUDE_CODE_AUTO_COMPACT_WINDOW": "200000"})
    assert run.result["is_error"] is True
    assert run.result["api_error_status"] == 400
    assert run.result["result"].startswith("Prompt is too long")
    assert "limit" in run.result["result"]  # it parsed our "N tokens > M maximum"


def test_overloaded_engine_surfaces_as_529(system):
    """With the engine frozen it cannot accept the request: 529 overloaded_error, which
    Claude Code reports (and would retry; retries are off in these runs)."""
    system.say(("are you there", "yes"))
    engine = system.wait_ready("engine-tiny")
    os.kill(engine["pid"], signal.SIGSTOP)
    try:
        run = run_claude(system, "are you there", tools="")
    finally:
        try:
            os.kill(engine["pid"], signal.SIGCONT)
        except ProcessLookupError:
            pass  # the supervisor replaced the frozen engine meanwhile
    assert run.result["is_error"] is True
    assert run.result["api_error_status"] == 529
    system.wait_ready("engine-tiny")
    again = run_claude(system, "are you there", tools="")
    assert again.result["result"] == "yes"


def test_context_command_counts_through_count_tokens(system):
    """Interactive /context asks count_tokens for each part of the prompt."""
    system.say()
    log = system.home / "logs" / "frontdoor.log"
    start = len(log.read_text().splitlines())
    cc = Interactive(system.env, "--bare")
    try:
        cc.reach_prompt()
        cc.submit("/context")
        assert cc.read_until(r"Free\s*space", 60), cc.screen[-2000:]
    finally:
        cc.close()
    counts = [json.loads(l)["input_tokens"] for l in log.read_text().splitlines()[start:]
              if '"frontdoor.count_tokens"' in l]
    assert counts, "Claude Code did not call count_tokens"
    shown = re.search(r"Messages:\s*(\d+)\s*tokens", cc.screen)
    assert shown and int(shown.group(1)) in counts  # our count is what Claude Code shows
