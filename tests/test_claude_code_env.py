"""Claude Code's environment and config dir (anyclaude/claude_code.py), without a system."""

from __future__ import annotations

import json

from anyclaude import config
from anyclaude.claude_code import (COMPACT_BUFFER, choose_config_dir, claude_env,
                                   compaction_windows, user_config_file)


def claude_code_compacts_at(told_window: int, max_output: int) -> int:
    """Claude Code 2.1.197's auto-compact threshold for a non-claude model id:
    effective = window - min(max_output, 20000); threshold = effective - 13000."""
    return told_window - min(max_output, 20000) - 13000


def test_claude_code_compacts_before_the_optimizer_would_cut():
    for window, output in ((65536, 8192), (32768, 8192), (131072, 32768)):
        w = compaction_windows(window, output)
        assert w.proactive
        budget = window - w.max_output            # the optimizer's prompt budget
        assert w.max_output <= window // 4
        assert claude_code_compacts_at(w.told_window, w.max_output) == w.compact_at
        assert 0 < w.compact_at < budget
        assert budget - w.compact_at == budget // 8
    assert compaction_windows(65536, 8192).told_window == 50176 + 8192 + COMPACT_BUFFER


def test_a_small_window_has_no_proactive_compaction_and_a_true_meter():
    """Claude Code's own prompt fills a small window: compacting would run on every turn."""
    for window in (8192, 16384, 24576):
        w = compaction_windows(window, 8192)
        assert not w.proactive and w.told_window == window and w.max_output == window // 4
    settings = config.load_settings(path=None, env={})
    env = claude_env(settings, {"context_window": 8192, "max_output_tokens": 8192})
    assert env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == "8192"
    assert env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "2048"
    assert "CLAUDE_CODE_AUTO_COMPACT_WINDOW" not in env


def test_env_uses_the_engines_window_and_a_bearer_token():
    settings = config.load_settings(path=None, env={})
    env = claude_env(settings, {"context_window": 65536, "max_output_tokens": 8192})
    assert env["ANTHROPIC_AUTH_TOKEN"] and "ANTHROPIC_API_KEY" not in env
    assert env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == str(compaction_windows(65536, 8192).told_window)
    assert env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "8192"
    not_running = claude_env(settings)   # nothing configured: the default for undeclared
    assert not_running["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == str(
        compaction_windows(32768, 8192).told_window)


def test_a_fresh_machine_gets_a_seeded_config_dir_of_its_own(tmp_path):
    env = {"HOME": str(tmp_path / "home"), "XDG_STATE_HOME": str(tmp_path / "state")}
    chosen, note = choose_config_dir(env)
    assert chosen == tmp_path / "state" / "anyclaude" / "claude"
    assert json.loads((chosen / ".claude.json").read_text())["hasCompletedOnboarding"] is True
    assert "untouched" in note
    assert not (tmp_path / "home" / ".claude.json").exists()
    again, note = choose_config_dir(env)          # next time: the same dir, no note
    assert (again, note) == (chosen, "")


def test_an_unfinished_user_config_is_left_alone(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    mine = home / ".claude.json"
    mine.write_text('{"numStartups": 1}')
    chosen, _ = choose_config_dir({"HOME": str(home), "XDG_STATE_HOME": str(tmp_path / "s")})
    assert chosen is not None and mine.read_text() == '{"numStartups": 1}'


def test_an_onboarded_user_config_is_used_as_is(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".claude.json").write_text('{"hasCompletedOnboarding": true}')
    assert choose_config_dir({"HOME": str(home)}) == (None, "")
    own = tmp_path / "cc"
    (own).mkdir()
    (own / ".claude.json").write_text('{"hasCompletedOnboarding": true}')
    env = {"HOME": str(tmp_path / "elsewhere"), "CLAUDE_CONFIG_DIR": str(own)}
    assert user_config_file(env) == own / ".claude.json"
    assert choose_config_dir(env) == (None, "")
    (own / ".config.json").write_text("{}")       # Claude Code prefers this file when present
    assert user_config_file(env) == own / ".config.json"
    assert choose_config_dir({**env, "XDG_STATE_HOME": str(tmp_path / "s")})[0] is not None
