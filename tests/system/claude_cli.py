"""Running the real Claude Code CLI non-interactively against the running system."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from anyclaude.claude_code import claude_env
from anyclaude.cli_claude import find_claude
from anyclaude.config import load_settings


@dataclass
class Run:
    returncode: int
    events: list[dict]
    stderr: str

    @property
    def result(self) -> dict:
        finals = [e for e in self.events if e.get("type") == "result"]
        assert finals, f"no result line; stderr: {self.stderr[-2000:]}; events: {self.events[-5:]}"
        return finals[-1]

    def tool_uses(self) -> list[dict]:
        out = []
        for e in self.events:
            if e.get("type") == "assistant":
                out += [b for b in e["message"]["content"] if b.get("type") == "tool_use"]
        return out

    def tool_results(self) -> list[dict]:
        out = []
        for e in self.events:
            if e.get("type") == "user" and isinstance(e["message"].get("content"), list):
                out += [b for b in e["message"]["content"] if b.get("type") == "tool_result"]
        return out


def run_claude(system, prompt: str, *, bare: bool = True, tools: str = "Bash",
               max_turns: int = 4, extra_env: dict | None = None, args: tuple = (),
               timeout: float = 600, cwd: Path | None = None) -> Run:
    binary = find_claude()
    assert binary, "Claude Code is not installed: scripts/setup --test installs it"
    settings = load_settings(Path(system.env["ANYCLAUDE_CONFIG"]), env=system.env)
    engine = system.service(f"engine-{settings.routes.default}")["info"]
    # -p mode shows no first-run screens: a fresh HOME without ~/.claude.json is enough.
    env = {**os.environ, **claude_env(settings, engine),
           "HOME": tempfile.mkdtemp(prefix="cc-home-"),
           "CLAUDE_CODE_MAX_RETRIES": "0", **(extra_env or {})}
    env.pop("ANTHROPIC_API_KEY", None)
    # A long prompt goes through stdin (one argument may not exceed 128 KB).
    via_stdin = len(prompt) > 100_000
    command = [binary, "-p", *([] if via_stdin else [prompt]), "--output-format", "stream-json", "--verbose",
               "--no-session-persistence", "--max-turns", str(max_turns), *args]
    if bare:
        command.append("--bare")
    if tools:
        command += ["--tools", tools, "--allowedTools", tools]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or tempfile.mkdtemp(prefix="cc-work-"),
                          input=prompt if via_stdin else "")
    events = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return Run(proc.returncode, events, proc.stderr)
