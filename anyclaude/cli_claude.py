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
from anyclaude.claude_code import choose_config_dir, claude_env

INSTALL_HINT = "npm install -g @anthropic-ai/claude-code"
# anyclaude authenticates with ANTHROPIC_AUTH_TOKEN; a key as well would bring back the
# "Detected a custom API key" question. The compaction switch is set only where it helps.
DROPPED = ("ANTHROPIC_API_KEY", "CLAUDE_CODE_AUTO_COMPACT_WINDOW")


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
    settings = _load()
    engine = engine_info(settings)
    if engine is None:
        click.echo("# anyclaude is not running: the window below is the configured one; "
                   "run `anyclaude up` first for the model's own", err=True)
    config_dir, note = choose_config_dir(dict(os.environ))
    if note:
        click.echo(note, err=True)
    exports = claude_env(settings, engine)
    for key, value in exports.items():
        click.echo(f"export {key}={shlex.quote(value)}")
    if config_dir is not None:
        click.echo(f"export CLAUDE_CONFIG_DIR={shlex.quote(str(config_dir))}")
    for key in DROPPED:
        if key not in exports:
            click.echo(f"unset {key}")


@click.command("claude", context_settings={"ignore_unknown_options": True,
                                           "allow_interspersed_args": False})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def claude_command(args: tuple[str, ...]) -> None:
    """Run Claude Code against anyclaude (starting it if needed). Extra ARGS pass through."""
    settings = _load()
    binary = find_claude()
    if binary is None:
        raise click.ClickException(f"Claude Code is not installed. Install it with: {INSTALL_HINT}")
    if engine_info(settings) is None:
        click.echo("anyclaude is not running; starting it (anyclaude up --detach) …", err=True)
        started = subprocess.run([sys.executable, "-m", "anyclaude.cli", "up", "--detach"])
        if started.returncode != 0:
            raise click.ClickException("anyclaude could not start; see the lines above and "
                                       "`anyclaude logs`")
    config_dir, note = choose_config_dir(dict(os.environ))
    if note:
        click.echo(note, err=True)
    env = {k: v for k, v in os.environ.items() if k not in DROPPED}
    if config_dir is not None:
        env["CLAUDE_CONFIG_DIR"] = str(config_dir)
    env.update(claude_env(settings, engine_info(settings)))
    os.execvpe(binary, [binary, *args], env)


def engine_info(settings: config.Settings) -> dict | None:
    """The default model's engine info from the running supervisor ({} when the engine
    has not reported yet); None when anyclaude is not running."""
    from anyclaude import bus, messages
    from anyclaude.errors import AnyclaudeError
    if not bus.socket_path("control").exists():
        return None
    client = bus.Client("control")
    try:
        reply = client.request(messages.Command("status"), timeout=2.0)
    except AnyclaudeError:
        return None
    finally:
        client.close()
    name = f"engine-{settings.routes.default}"
    services = (reply.data or {}).get("services", []) if reply.ok else []
    found = next((s for s in services if s.get("name") == name), None)
    return dict((found or {}).get("info") or {})
