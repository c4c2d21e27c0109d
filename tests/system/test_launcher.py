"""`anyclaude env` and `anyclaude claude`: Claude Code launched with the right settings."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from anyclaude.claude_code import compaction_windows
from anyclaude.cli_claude import find_claude
from conftest import CONTEXT_WINDOW


def exports(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            out[key] = shlex.split(value)[0] if value else ""
    return out


def test_env_prints_the_settings_for_claude_code(system, tmp_path):
    out = system.cli("env", env={"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")})
    assert out.returncode == 0, out.stderr
    env = exports(out.stdout)
    windows = compaction_windows(CONTEXT_WINDOW, 8192)   # the engine's, asked while running
    assert env["ANTHROPIC_BASE_URL"] == system.url
    assert env["ANTHROPIC_MODEL"] == "tiny"
    assert env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] == "tiny"
    assert env["ANTHROPIC_AUTH_TOKEN"]
    assert env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == str(windows.told_window)
    assert env["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] == str(windows.told_window)
    assert env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "8192"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["CLAUDE_CODE_ATTRIBUTION_HEADER"] == "0"
    assert "unset ANTHROPIC_API_KEY" in out.stdout
    # no Claude Code set up in this HOME: it gets anyclaude's own config dir, seeded
    own = Path(env["CLAUDE_CONFIG_DIR"])
    assert json.loads((own / ".claude.json").read_text())["hasCompletedOnboarding"] is True
    assert not (tmp_path / ".claude.json").exists()
    assert "untouched" in out.stderr


def test_claude_command_keeps_an_onboarded_user_config_and_drops_an_api_key(system, tmp_path):
    """A user whose Claude Code is set up keeps their own config (history, settings);
    ANTHROPIC_API_KEY from their shell is dropped (it would bring back the key question)."""
    system.say(("launcher check", "Launched through anyclaude."))
    (tmp_path / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    out = system.cli("claude", "-p", "launcher check", "--bare", "--output-format", "json",
                     "--no-session-persistence", "--max-turns", "1",
                     env={"HOME": str(tmp_path), "ANYCLAUDE_CLAUDE_BIN": find_claude(),
                          "XDG_STATE_HOME": str(tmp_path / "state"),
                          "ANTHROPIC_API_KEY": "must-be-dropped"})
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["is_error"] is False
    assert result["result"] == "Launched through anyclaude."
    assert not (tmp_path / "state" / "anyclaude" / "claude").exists()
    assert "untouched" not in out.stderr
    assert json.loads((tmp_path / ".claude.json").read_text())["hasCompletedOnboarding"] is True


def test_claude_command_without_the_cli_says_how_to_install(system):
    out = system.cli("claude", "-p", "hi", env={"ANYCLAUDE_CLAUDE_BIN": "/nonexistent/claude"})
    assert out.returncode != 0
    assert "npm install -g @anthropic-ai/claude-code" in out.stderr
