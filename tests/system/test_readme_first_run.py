"""The README, literally, on a fresh machine: no anyclaude.toml, no ~/.claude.json.

`anyclaude up --detach`, then `anyclaude claude` in a project folder in a pty: Enter on
every screen that appears (its preselected choice), type "Say hi", and an assistant answer
appears - not an error, not a first-run screen that needs Anthropic. Then
`anyclaude claude -p "Say hi"` without --bare (Claude Code's full ~25-tool request).

Only what cannot be a user's is set, each for a reason given where it is set.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from anyclaude.cli_claude import find_claude
from claude_tty import Interactive
from conftest import free_port

# A cold prefill of Claude Code's whole prompt takes minutes on a shared CPU.
pytestmark = pytest.mark.timeout(2400)

ANSWER = "Hi! This is your local model."
# The terminal UI moves the cursor instead of writing some spaces: match the words only.
ANSWER_SHOWN = r"\s*".join(re.escape(word) for word in ANSWER.split())
ERRORS = r"API\s*Error|Prompt\s*is\s*too\s*long|Unable\s*to\s*connect|Invalid\s*API\s*key|Please\s*run\s*/login"


@pytest.fixture(scope="module")
def fresh_machine(tmp_path_factory):
    root = tmp_path_factory.mktemp("readme")
    home, project = root / "home", root / "project"
    home.mkdir()
    project.mkdir()
    force = root / "force.json"
    # The demo model has random weights: unforced, it would ramble up to max_tokens (8192
    # tokens, minutes on a CPU). The force file only picks the words; the request path,
    # template, prefill and decoding are the real ones. Side calls get "ok".
    force.write_text(json.dumps({"rules": [{"match": "Say hi", "say": ANSWER},
                                           {"match": "", "say": "ok"}]}))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANYCLAUDE_", "ANTHROPIC_", "CLAUDE_", "XDG_"))}
    env.update(HOME=str(home), ANYCLAUDE_FORCE_FILE=str(force),
               # Other test systems may run on this machine at the same time: a port and a
               # run directory of its own (environment, not a file: no anyclaude.toml).
               ANYCLAUDE_SERVER_PORT=str(free_port()),
               ANYCLAUDE_RUN_DIR=tempfile.mkdtemp(prefix="acr", dir="/tmp"))

    def cli(*args, timeout=600, extra=None):
        return subprocess.run([sys.executable, "-m", "anyclaude.cli", *args], cwd=project,
                              env={**env, **(extra or {})}, capture_output=True, text=True,
                              timeout=timeout)

    up = cli("up", "--detach")
    if up.returncode != 0:
        cli("down", timeout=120)
        pytest.fail(f"anyclaude up failed: {up.stdout}\n{up.stderr}")
    yield env, project, cli, home
    cli("down", timeout=120)


def test_interactive_first_session_answers_say_hi(fresh_machine):
    env, project, _, home = fresh_machine
    assert not (home / ".claude.json").exists() and not (project / "anyclaude.toml").exists()
    cc = Interactive(env, cwd=project)
    try:
        cc.reach_prompt(timeout=120)
        mark = cc.submit("Say hi")
        found = cc.read_until(ANSWER_SHOWN + "|" + ERRORS, timeout=1500, since=mark)
        shown = cc.screen[mark:]
    finally:
        cc.close()
    assert found, f"no answer within 25 minutes:\n{shown[-3000:]}"
    assert not re.search(ERRORS, shown), shown[-3000:]
    assert re.search(ANSWER_SHOWN, shown)
    assert "untouched" in cc.screen               # the one line saying whose config it uses
    assert not (home / ".claude.json").exists()   # the user's own file was never written


def test_print_mode_without_bare_answers_say_hi(fresh_machine):
    env, project, cli, _ = fresh_machine
    out = cli("claude", "-p", "Say hi", extra={"ANYCLAUDE_CLAUDE_BIN": find_claude()},
              timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert ANSWER in out.stdout
