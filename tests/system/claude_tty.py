"""Claude Code's interactive UI in a pseudo-terminal, for slash commands such as /context."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import tempfile
import time
from pathlib import Path

from anyclaude.cli_claude import claude_env, find_claude
from anyclaude.config import load_settings

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-B]|\x1b[=>]")


def settings_key(settings) -> str:
    return claude_env(settings)["ANTHROPIC_API_KEY"]


class Interactive:
    def __init__(self, system, *, extra_env: dict | None = None):
        settings = load_settings(Path(system.env["ANYCLAUDE_CONFIG"]), env=system.env)
        home = Path(tempfile.mkdtemp(prefix="cc-tty-home-"))
        work = Path(tempfile.mkdtemp(prefix="cc-tty-work-"))
        # Skip first-run screens: onboarding done, this folder trusted.
        (home / ".claude.json").write_text(json.dumps({
            "hasCompletedOnboarding": True, "theme": "dark",
            "customApiKeyResponses": {"approved": [settings_key(settings)[-20:]], "rejected": []},
            "projects": {str(work): {"hasTrustDialogAccepted": True,
                                     "hasCompletedProjectOnboarding": True}}}))
        env = {**os.environ, **claude_env(settings), "HOME": str(home), "TERM": "xterm-256color",
               "COLUMNS": "160", "LINES": "50", **(extra_env or {})}
        env.pop("ANTHROPIC_AUTH_TOKEN", None)
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen([find_claude(), "--bare"], stdin=slave, stdout=slave,
                                     stderr=slave, cwd=work, env=env, start_new_session=True)
        os.close(slave)
        self.screen = ""

    def read_until(self, pattern: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    return False
                self.screen += ANSI.sub("", chunk.decode("utf-8", "replace"))
            if re.search(pattern, self.screen):
                return True
        return False

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self.master)
