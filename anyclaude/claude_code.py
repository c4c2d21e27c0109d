"""What Claude Code needs to run on anyclaude: its environment and its config dir.

Facts this relies on (Claude Code 2.1.197, read from the CLI and checked in a pty; see
docs/claude-code.md):
- ``ANTHROPIC_AUTH_TOKEN`` is sent as ``Authorization: Bearer`` and, unlike
  ``ANTHROPIC_API_KEY``, does not raise the "Detected a custom API key" question whose
  preselected answer (No) leads to an Anthropic login.
- The first-run screens (theme, then a connectivity check that stops offline) are skipped
  when the config dir's ``.claude.json`` says ``hasCompletedOnboarding``. That file is
  ``$CLAUDE_CONFIG_DIR/.claude.json``, else ``~/.claude.json``; a ``.config.json`` in
  ``$CLAUDE_CONFIG_DIR`` (else ``~/.claude``) takes its place when it exists.
- Auto-compact fires when the last reply's usage (input + cache + output tokens) reaches
  ``window - min(max_output, 20000) - 13000`` - a fixed 13K buffer sized for 200K windows,
  where ``window`` is CLAUDE_CODE_MAX_CONTEXT_TOKENS. It runs proactively only when
  CLAUDE_CODE_AUTO_COMPACT_WINDOW is set (that variable cannot lower the window below 100K).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

LOCAL_TOKEN = "sk-anyclaude-local"
COMPACT_BUFFER = 13000        # Claude Code's fixed distance from the effective window
OUTPUT_CAP = 20000            # Claude Code reserves at most this much output
HEADROOM_SHARE = 8            # compact 1/8 of the prompt budget before the optimizer would cut
# Compaction shrinks the messages only. Below this point Claude Code's own prompt (~20K
# tokens; what the optimizer's reductions leave of it on a small window) fills the space, so
# it would compact on every turn: there the optimizer's visible cut does the job instead.
MIN_COMPACT_AT = 16384


@dataclass(frozen=True)
class Windows:
    """The numbers Claude Code is given, and where it will compact."""
    model_window: int         # what the engine runs with
    max_output: int           # CLAUDE_CODE_MAX_OUTPUT_TOKENS: Claude Code's max_tokens
    compact_at: int           # prompt tokens at which Claude Code compacts (0: it does not)
    told_window: int          # CLAUDE_CODE_MAX_CONTEXT_TOKENS (and AUTO_COMPACT_WINDOW)

    @property
    def proactive(self) -> bool:
        return self.compact_at > 0


def compaction_windows(model_window: int, max_output_tokens: int) -> Windows:
    """Claude Code's window such that its fixed-buffer auto-compact fires at 7/8 of the
    prompt budget the optimizer keeps (window minus the output reserve), so it compacts
    before the optimizer has to cut. Below MIN_COMPACT_AT: the real window, no proactive
    compaction (its meter then shows the share of the budget used)."""
    max_output = max(1, min(max_output_tokens or model_window // 4, model_window // 4))
    budget = model_window - max_output
    compact_at = budget - budget // HEADROOM_SHARE
    if compact_at < MIN_COMPACT_AT:
        return Windows(model_window, max_output, 0, model_window)
    told = compact_at + min(max_output, OUTPUT_CAP) + COMPACT_BUFFER
    return Windows(model_window, max_output, compact_at, told)


def user_config_file(env: dict) -> Path:
    """The global config file Claude Code reads with this environment."""
    home = Path(env.get("HOME") or Path.home())
    explicit = env.get("CLAUDE_CONFIG_DIR")
    config_dir = Path(explicit) if explicit else home / ".claude"
    if (config_dir / ".config.json").exists():
        return config_dir / ".config.json"
    return (Path(explicit) if explicit else home) / ".claude.json"


def onboarded(config_file: Path) -> bool:
    try:
        return json.loads(config_file.read_text()).get("hasCompletedOnboarding") is True
    except (OSError, ValueError, AttributeError):
        return False


def own_config_dir(env: dict) -> Path:
    state = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local/state")
    return Path(state) / "anyclaude" / "claude"


def choose_config_dir(env: dict) -> tuple[Path | None, str]:
    """(CLAUDE_CONFIG_DIR to set or None, a line for the user or "").

    The user's own Claude Code config is used untouched when its onboarding is done.
    Otherwise Claude Code gets a config dir of anyclaude's own, seeded with onboarding done,
    so a fresh machine reaches the prompt offline; the user's files are never written.
    """
    if onboarded(user_config_file(env)):
        return None, ""
    own = own_config_dir(env)
    seeded = own / ".claude.json"
    if onboarded(seeded):
        return own, ""
    own.mkdir(parents=True, exist_ok=True, mode=0o700)
    current = {}
    try:
        current = json.loads(seeded.read_text())
    except (OSError, ValueError):
        pass
    current = current if isinstance(current, dict) else {}
    current.update(hasCompletedOnboarding=True)
    current.setdefault("theme", "dark")
    tmp = seeded.with_suffix(".tmp")
    tmp.write_text(json.dumps(current, indent=2))
    os.replace(tmp, seeded)
    return own, (f"anyclaude: Claude Code has not been set up on this machine; it runs with "
                 f"its own config in {own} (onboarding done, your ~/.claude.json untouched)")


def claude_env(settings, engine: dict | None = None) -> dict[str, str]:
    """The environment that points Claude Code at anyclaude. ``engine``: the default model's
    engine info (``context_window``, ``max_output_tokens``) - what it really runs with."""
    from anyclaude.modelfiles.window import remote_window
    default = settings.routes.default
    small = settings.routes.small or default
    model = settings.model(default)
    engine = engine or {}
    window = int(engine.get("context_window") or remote_window(model.context_window))
    output = int(engine.get("max_output_tokens") or model.max_output_tokens)
    windows = compaction_windows(window, output)
    host = settings.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    env = {
        "ANTHROPIC_BASE_URL": f"http://{host}:{settings.server.port}",
        # Bearer, not x-api-key: no "custom API key" question (see the module docstring).
        "ANTHROPIC_AUTH_TOKEN": settings.server.api_key or LOCAL_TOKEN,
        "ANTHROPIC_MODEL": default,
        "ANTHROPIC_DEFAULT_SONNET_MODEL": default,
        "ANTHROPIC_DEFAULT_OPUS_MODEL": default,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": small,
        "ANTHROPIC_SMALL_FAST_MODEL": small,
        # Honoured only for ids that do not start with claude- (ours never do). Set so that
        # Claude Code's auto-compact fires before the optimizer would cut (docs/claude-code.md).
        "CLAUDE_CODE_MAX_CONTEXT_TOKENS": str(windows.told_window),
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(windows.max_output),
        # No other host is contacted; no per-session line at the top of the system prompt
        # (it would defeat the prefix cache).
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_ATTRIBUTION_HEADER": "0",
        # A cold prefill of Claude Code's 20K-token prompt can take minutes on a CPU.
        "API_TIMEOUT_MS": str(int(settings.timeouts.total_s * 1000)),
    }
    if windows.proactive:   # the switch for proactive auto-compact (module docstring)
        env["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] = str(windows.told_window)
    return env
