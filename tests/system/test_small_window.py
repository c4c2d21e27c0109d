"""Claude Code's full request on an 8K-window model: the optimizer's automatic reductions
make it fit, the reduced prefix is the same on the next turn (the prefix cache hits), and
the reductions are reported (optimizer status, the request's log line, the response header).

A system of its own (`anyclaude up`), on the tiny model with context_window = 8192 and the
model's default max_output_tokens; the real Claude Code CLI without --bare (its whole system
prompt and ~25 tools, ~28K tokens on the tiny model's tokenizer), through a tool loop: the
forced Bash call, then the forced answer.
"""

from __future__ import annotations

import json
import time
import sys
from pathlib import Path

import httpx2 as httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import benchlib as B  # noqa: E402
from claude_cli import run_claude  # noqa: E402

from anyclaude.tinymodel import ensure_tiny_model  # noqa: E402

WINDOW = 8192
BASH_CALL = ('<tool_call>{"name": "Bash", "arguments": {"command": "echo small-window-marker", '
             '"description": "Print the marker"}}</tool_call>')
# Claude Code checks its request against CLAUDE_CODE_MAX_CONTEXT_TOKENS less
# CLAUDE_CODE_MAX_OUTPUT_TOKENS before sending (2.1.197, measured): with the window 8192 and
# the output 8192 (what `anyclaude env` says for this model today) it stops at once with
# "Prompt is too long" and sends nothing; with output 1024 it sends. This test is about what
# anyclaude does with the full request, so Claude Code is told of a big window here; what
# `anyclaude claude` tells it for a small model is the launcher's part (issue 15, item 5).
BIG_WINDOW_ENV = {"CLAUDE_CODE_MAX_CONTEXT_TOKENS": "200000",
                  "CLAUDE_CODE_AUTO_COMPACT_WINDOW": "200000"}


@pytest.fixture(scope="module")
def small_system(tmp_path_factory):
    home = tmp_path_factory.mktemp("small-window")
    system = B.BenchSystem(home, ensure_tiny_model(home / "models"), context_window=WINDOW,
                           max_output_tokens=8192, memory_budget_mb=256, disk_budget_mb=256,
                           block_tokens=64, prefill_step_size=256)
    try:
        system.up()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield system
    system.down()


def log_lines(system, name: str) -> list[dict]:
    path = system.home / "logs" / f"{name}.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_claude_codes_full_request_runs_on_an_8k_window(small_system):
    small_system.say(("small-window-marker", "Small window run finished."),
                     ("small window please", BASH_CALL))
    run = run_claude(small_system, "small window please: run the marker command", bare=False,
                     tools="", args=("--allowedTools", "Bash"), extra_env=BIG_WINDOW_ENV)
    assert run.result["is_error"] is False, run.result
    assert run.result["result"] == "Small window run finished."
    init = next(e for e in run.events if e.get("subtype") == "init")
    assert len(init["tools"]) >= 15                      # the full request was sent
    assert [u["name"] for u in run.tool_uses()] == ["Bash"]

    # Every main request was reduced the same way, and each says so in its log line.
    requests = [line for line in log_lines(small_system, "frontdoor")
                if line.get("event") == "frontdoor.request"]
    reduced = [r for r in requests if r.get("reductions")]
    assert len(reduced) >= 2, requests
    assert {r["reductions"] for r in reduced} == {"tool_descriptions,core_tools"}
    # the optimizer's counters reach status with its next heartbeat (about once a second)
    deadline = time.monotonic() + 10
    optimizer = small_system.service("optimizer")["info"]
    while optimizer["reductions"].get("core_tools", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
        optimizer = small_system.service("optimizer")["info"]
    assert optimizer["reductions"]["core_tools"] >= 2, optimizer
    assert optimizer["prompt_too_long"] == 0 and optimizer["cuts"] == 0
    decided = [line for line in log_lines(small_system, "optimizer")
               if line.get("event") == "optimizer.auto_reductions"]
    assert len(decided) == 1                              # decided once, then remembered
    assert decided[0]["fixed_before"] > WINDOW > decided[0]["fixed_after"]

    # Turn 2 (after the tool result) reads its prompt from the prefix cache.
    done = [line for line in log_lines(small_system, "frontdoor")
            if line.get("event") == "frontdoor.stream_done"
            and line["request_id"] in {r["request_id"] for r in reduced}]
    assert len(done) >= 2
    usage = done[1]["usage"]
    prompt = (usage["input_tokens"] + usage["cache_read_input_tokens"]
              + usage["cache_creation_input_tokens"])
    print(f"\nturn 2: prompt {prompt} tokens, {usage['cache_read_input_tokens']} from the cache")
    assert prompt <= WINDOW
    assert usage["cache_read_input_tokens"] >= 0.9 * prompt, usage


def test_the_reductions_header_reaches_a_client(small_system):
    """The same tool list as a plain HTTP request: the response names the reductions."""
    small_system.say(otherwise="ok")
    tools = [{"name": name, "description": f"The {name} tool. " + B.prose(
        __import__("random").Random(i), 6000), "input_schema": {"type": "object"}}
        for i, name in enumerate(B.TOOL_NAMES)]
    body = {"model": "tiny", "max_tokens": 64, "tools": tools,
            "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(small_system.url + "/v1/messages", json=body, timeout=300,
                          headers={"x-api-key": B.API_KEY, "anthropic-version": "2023-06-01"})
    assert response.status_code == 200, response.text
    assert response.headers["anyclaude-reductions"].startswith("tool_descriptions")
