"""Tool calls the real Claude Code CLI must see as calls: a schema-invalid call keeps the agent
loop going (Claude Code answers it with its own error tool_result and the model corrects it),
and a call cut by max_tokens is never executed."""

from __future__ import annotations

import json

from claude_cli import run_claude

# `timeout` must be a number: "soon" cannot be repaired, so the call is passed on as it is.
INVALID_CALL = ('<tool_call>{"name": "Bash", "arguments": {"command": "echo anyclaude-wrong-call", '
                '"timeout": "soon"}}</tool_call>')
CORRECTED_CALL = ('<tool_call>{"name": "Bash", "arguments": {"command": "echo anyclaude-corrected-call", '
                  '"timeout": 10000}}</tool_call>')


def _engine_lines(system, event: str, start: int) -> list[dict]:
    log = system.home / "logs" / "engine-tiny.log"
    lines = [json.loads(line) for line in log.read_text().splitlines()[start:] if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


def _engine_log_length(system) -> int:
    return len((system.home / "logs" / "engine-tiny.log").read_text().splitlines())


def test_schema_invalid_call_gets_claude_codes_error_and_the_corrected_call_runs(system):
    system.say(("anyclaude-corrected-call", "The corrected call ran."),
               ("InputValidationError", CORRECTED_CALL),
               ("try the invalid call", INVALID_CALL))
    start = _engine_log_length(system)
    run = run_claude(system, "try the invalid call")
    assert run.result["is_error"] is False, run.result
    uses = run.tool_uses()
    assert [u["input"] for u in uses] == [
        {"command": "echo anyclaude-wrong-call", "timeout": "soon"},
        {"command": "echo anyclaude-corrected-call", "timeout": 10000}]
    results = run.tool_results()
    assert len(results) == 2
    error, ok = results
    assert error["is_error"] is True and error["tool_use_id"] == uses[0]["id"]
    assert "InputValidationError" in str(error["content"])     # Claude Code's own words
    assert "timeout" in str(error["content"])
    assert "anyclaude-wrong-call" not in str(error["content"])  # the invalid call never ran
    assert ok["tool_use_id"] == uses[1]["id"] and not ok.get("is_error")
    assert "anyclaude-corrected-call" in str(ok["content"])
    assert run.result["result"] == "The corrected call ran."
    invalid = _engine_lines(system, "engine.toolcall.invalid", start)
    assert invalid and invalid[0]["tool"] == "Bash" and "$.timeout" in invalid[0]["violations"][0]


def test_call_cut_by_max_tokens_is_never_run(system):
    """Claude Code asks for at most 256 output tokens (CLAUDE_CODE_MAX_OUTPUT_TOKENS, a
    setting of the client, so the cut comes quickly; the test is about what a cut call
    becomes): the forced call below is cut inside its command, so Claude Code gets text with
    stop_reason max_tokens, and runs nothing."""
    cut_call = ('<tool_call>{"name": "Bash", "arguments": {"command": "echo anyclaude-cut-call '
                + "and more words " * 200 + '"}}</tool_call>')
    system.say(("run the long call", cut_call), otherwise="Nothing else to do.")
    start = _engine_log_length(system)
    run = run_claude(system, "run the long call",
                     extra_env={"CLAUDE_CODE_MAX_OUTPUT_TOKENS": "256"})
    assert run.tool_uses() == [] and run.tool_results() == []
    texts = [b["text"] for e in run.events if e.get("type") == "assistant"
             for b in e["message"]["content"] if b.get("type") == "text"]
    assert any("anyclaude-cut-call" in t for t in texts)          # shown, not dropped
    done = _engine_lines(system, "engine.generate.done", start)
    assert done[0]["stop_reason"] == "max_tokens"
    unparsed = _engine_lines(system, "engine.toolcall.unparsed", start)
    assert unparsed and "not closed" in unparsed[0]["reason"]
