"""`anyclaude claude` and `anyclaude env`: Claude Code with the settings that suit a local model."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click

from anyclaude import config

LOCAL_KEY = "sk-anyclaude-local"
INSTALL_HINT = "npm install -g @anthropic-ai/claude-code"


def claude_env(settings: config.Settings) -> dict[str, str]:
    """The environment that points Claude Code at anyclaude and suits local prefill."""
    default = settings.routes.default
    small = settings.routes.small or default
    model = settings.model(default)
    host = settings.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return {
        "ANTHROPIC_BASE_URL": f"http://{host}:{settings.server.port}",
        "ANTHROPIC_API_KEY": settings.server.api_key or LOCAL_KEY,
        "ANTHROPIC_MODEL": default,
        "ANTHROPIC_DEFAULT_SONNET_MODEL": default,
        "ANTHROPIC_DEFAULT_OPUS_MODEL": default,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": small,
        "ANTHROPIC_SMALL_FAST_MODEL": small,
        # Honoured only for ids that do not start with claude- (ours never do).
        "CLAUDE_CODE_MAX_CONTEXT_TOKENS": str(model.context_window),
        "CLAUDE_CODE_AUTO_COMPACT_WINDOW": str(model.context_window),
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(model.max_output_tokens),
        # No other host is contacted; no per-session line at the top of the system prompt
        # (it would defeat the prefix cache).
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_ATTRIBUTION_HEADER": "0",
        # A cold prefill of Claude Code's 20K-token prompt can take minutes on a CPU.
        "API_TIMEOUT_MS": str(int(settings.timeouts.total_s * 1000)),
    }


def find_claude() -> str | None:
    explicit = os.environ.get("ANYCLAUDE_CLAUDE_BIN")
    if explicit:
        return explicit if Path(explicit).exists() else None
    found = shutil.which("claude")
    if found:
        return found
    cached = Path.home() / ".cache/anyclaude-test/claude-code/node_modules/.bin/claude"
    return str(cached) if cached.exists() else None


def _load() -> config.Settings:
    try:
        return config.load_settings()
    except config.ConfigError as exc:
        raise click.ClickException(exc.message) from None


@click.command("env")
def env_command() -> None:
    """Print the Claude Code settings as shell exports: eval "$(anyclaude env)"."""
    for key, value in claude_env(_load()).items():
        click.echo(f"export {key}={shlex.quote(value)}")
    click.echo("unset ANTHROPIC_AUTH_TOKEN")


@click.command("claude", context_settings={"ignore_unknown_options": True,
                                           "allow_interspersed_args": False})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def claude_command(args: tuple[str, ...]) -> None:
    """Run Claude Code against anyclaude (starting it if needed). Extra ARGS pass through."""
    settings = _load()
    binary = find_claude()
    if binary is None:
        raise click.ClickException(f"Claude Code is not installed. Install it with: {INSTALL_HINT}")
    if not _running():
        click.echo("anyclaude is not running; starting it (anyclaude up --detach) …", err=True)
        started = subprocess.run([sys.executable, "-m", "anyclaude.cli", "up", "--detach"])
        if started.returncode != 0:
            raise click.ClickException("anyclaude could not start; see the lines above and "
                                       "`anyclaude logs`")
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_AUTH_TOKEN"}
    env.update(claude_env(settings))
    os.execvpe(binary, [binary, *args], env)


def _running() -> bool:
    from anyclaude import bus, messages
    from anyclaude.errors import AnyclaudeError
    if not bus.socket_path("control").exists():
        return False
    client = bus.Client("control")
    try:
        client.request(messages.Command("status"), timeout=2.0)
        return True
    except AnyclaudeError:
        return False
    finally:
        client.close()
