"""A long real Claude Code session on a small window: Claude Code's own auto-compact runs
before the window is full, and no turn is cut silently (issue 15, item 5).

Claude Code (-p, one task, a tool loop of up to 40 turns) runs a counter command again and
again; each turn adds ~1,200 tokens, so the conversation reaches the compaction point (21,504
tokens) in ~16 turns.
`anyclaude claude`'s environment tells Claude Code where to compact (anyclaude/claude_code.py):
it must summarize (a compact_boundary event) before the optimizer would have to cut, and
no request may be refused as too long.
"""

from __future__ import annotations

import json

import pytest

from anyclaude.tinymodel import ensure_demo_model
from claude_cli import run_claude
from conftest import System, free_port
from searxng_fake import FakeSearxng   # on sys.path through conftest

# A cold prefill of a whole conversation takes minutes on a shared CPU.
pytestmark = pytest.mark.timeout(2400)

# The test is about filling a window in ~15-20 turns; the model's own 64K would take ~40.
# 32768 is the smallest common window where Claude Code compacts by itself (claude_code.py).
WINDOW = 32768
LAST_TURN = 26
COUNTER = ("c=$(cat n 2>/dev/null || echo 0); c=$((c+1)); echo $c > n; echo turn-$c; "
           "seq 1 300")
CALL = ('<tool_call>{"name": "Bash", "arguments": ' + json.dumps(
    {"command": COUNTER, "description": "Count a turn"}) + '}</tool_call>')
SUMMARY = "<summary>The user asked to run the counter command turn after turn.</summary>"


@pytest.fixture(scope="module")
def small_window_system(tmp_path_factory):
    home = tmp_path_factory.mktemp("compaction")
    searxng = FakeSearxng()
    models = (f'[models.tiny]\npath = "{ensure_demo_model(home / "models")}"\n'
              f'context_window = {WINDOW}\n\n[routes]\ndefault = "tiny"\n')
    system = System(home, free_port(), searxng, home / "models", models=models)
    up = system.cli("up", "--detach", timeout=300)
    if up.returncode != 0:
        system.cli("down")
        pytest.fail(f"anyclaude up failed: {up.stdout}\n{up.stderr}")
    yield system
    system.cli("down", timeout=120)
    searxng.close()


def test_claude_code_compacts_before_the_window_is_full(small_window_system):
    system = small_window_system
    system.say(("detailed summary", SUMMARY), (f"turn-{LAST_TURN}\n", "Counted every turn."),
               otherwise=CALL)
    run = run_claude(system, "Run the counter command until I say stop.", tools="Bash",
                     max_turns=LAST_TURN + 10, timeout=1800)
    frontdoor = [json.loads(line) for line in
                 (system.home / "logs" / "frontdoor.log").read_text().splitlines()]
    errors = [line for line in frontdoor if line.get("event") == "frontdoor.error"]
    assert not [e for e in errors if "too long" in e.get("message", "")], errors
    boundaries = [e for e in run.events if e.get("subtype") == "compact_boundary"]
    print(f"\nturns: {len(run.tool_uses())}; compactions: "
          f"{[b.get('compact_metadata') for b in boundaries]}")
    assert boundaries, f"Claude Code never compacted; last events: {run.events[-3:]}"
    assert boundaries[0]["compact_metadata"]["trigger"] == "auto"
    assert boundaries[0]["compact_metadata"]["pre_tokens"] < WINDOW
    optimizer = system.service("optimizer")["info"]
    assert optimizer["cuts"] == 0, optimizer          # Claude Code compacted first
    assert optimizer["prompt_too_long"] == 0, optimizer
    assert run.result["is_error"] is False, run.result
    assert run.result["result"] == "Counted every turn."
