"""`anyclaude env` and `anyclaude claude`: Claude Code launched with the right settings."""

from __future__ import annotations

import json
import shlex
import tempfile

from anyclaude.cli_claude import find_claude
from conftest import CONTEXT_WINDOW


def exports(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            out[key] = shlex.split(value)[0] if value else ""
    return out


def test_env_prints_the_settings_for_claude_code(system):
    out = system.cli("env")
    assert out.returncode == 0, out.stderr
    env = exports(out.stdout)
    assert env["ANTHROPIC_BASE_URL"] == system.url
    assert env["ANTHROPIC_MODEL"] == "tiny"
    assert env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] == "tiny"
    assert env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == str(CONTEXT_WINDOW)
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["CLAUDE_CODE_ATTRIBUTION_HEADER"] == "0"
    assert "unset ANTHROPIC_AUTH_TOKEN" in out.stdout


def test_claude_command_runs_claude_code_against_the_running_system(system):
    system.say(("launcher check", "Launched through anyclaude."))
    env_before = dict(system.env)
    system.env.update(HOME=tempfile.mkdtemp(prefix="cc-home-"), ANYCLAUDE_CLAUDE_BIN=find_claude(),
                      ANTHROPIC_AUTH_TOKEN="must-be-dropped")
    try:
        out = system.cli("claude", "-p", "launcher check", "--bare", "--output-format", "json",
                         "--no-session-persistence", "--max-turns", "1")
    finally:
        system.env.clear()
        system.env.update(env_before)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["is_error"] is False
    assert result["result"] == "Launched through anyclaude."


def test_claude_command_without_the_cli_says_how_to_install(system):
    env_before = dict(system.env)
    system.env["ANYCLAUDE_CLAUDE_BIN"] = "/nonexistent/claude"
    try:
        out = system.cli("claude", "-p", "hi")
    finally:
        system.env.clear()
        system.env.update(env_before)
    assert out.returncode != 0
    assert "npm install -g @anthropic-ai/claude-code" in out.stderr
