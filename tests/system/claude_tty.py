"""Claude Code's interactive UI in a pseudo-terminal, started as a user starts it:
`anyclaude claude` in a fresh HOME with no ~/.claude.json, answering every first-run screen
with Enter (its preselected choice)."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from anyclaude.cli_claude import find_claude

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][0-9A-B]|\x1b[=>]")
INPUT_READY = r"for\s*shortcuts"                      # the prompt line's hint
CONFIRM_SCREEN = r"Enter\s*to\s*confirm|Press\s*Enter\s*to\s*continue"
FIRST_RUN_TRAPS = (r"Unable\s*to\s*connect", r"Detected\s*a\s*custom\s*API\s*key",
                   r"Select\s*login\s*method", r"Choose\s*the\s*text\s*style")


class Interactive:
    """``anyclaude claude ARGS`` in a pty. ``env``: the anyclaude environment (config,
    run dir); HOME is a fresh directory unless ``env`` names one, the working directory a
    fresh project folder unless ``cwd`` is given."""

    def __init__(self, env: dict, *args: str, cwd: Path | None = None):
        self.home = Path(env.get("HOME_FOR_CLAUDE") or tempfile.mkdtemp(prefix="cc-tty-home-"))
        self.work = cwd or Path(tempfile.mkdtemp(prefix="cc-tty-work-"))
        full = {**env, "HOME": str(self.home), "TERM": "xterm-256color", "COLUMNS": "160",
                "LINES": "50", "ANYCLAUDE_CLAUDE_BIN": find_claude()}
        full.pop("HOME_FOR_CLAUDE", None)
        full.pop("ANTHROPIC_API_KEY", None)
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, "-m", "anyclaude.cli", "claude", *args],
                                     stdin=slave, stdout=slave, stderr=slave, cwd=self.work,
                                     env=full, start_new_session=True)
        os.close(slave)
        self.screen = ""
        self.screens_confirmed = 0

    def _pump(self) -> bool:
        ready, _, _ = select.select([self.master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return False
            self.screen += ANSI.sub("", chunk.decode("utf-8", "replace"))
        return True

    def read_until(self, pattern: str, timeout: float, since: int = 0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._pump():
                return False
            if re.search(pattern, self.screen[since:]):
                return True
        return False

    def reach_prompt(self, timeout: float = 90) -> None:
        """Enter on every screen that asks for it, until the input prompt shows. A first-run
        trap (connectivity check, API-key question, login, theme) fails at once."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            if not self._pump():
                break
            fresh = self.screen[seen:]
            for trap in FIRST_RUN_TRAPS:
                assert not re.search(trap, fresh), f"first-run trap {trap!r}:\n{self.screen[-2000:]}"
            if re.search(INPUT_READY, fresh):
                return
            if re.search(CONFIRM_SCREEN, fresh):
                time.sleep(0.3)
                self.type("\r")
                self.screens_confirmed += 1
                seen = len(self.screen)
        raise AssertionError(f"no input prompt after {timeout} s:\n{self.screen[-2000:]}")

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def submit(self, text: str) -> int:
        """Type a line and press Enter; the screen offset before it (for read_until)."""
        mark = len(self.screen)
        self.type(text)
        time.sleep(0.5)
        self.type("\r")
        return mark

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self.master)
