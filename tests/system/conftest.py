"""The whole system, started the way a user starts it: `anyclaude up --detach`.

One running system per test session (starting it costs a few seconds), on the tiny
random-weight model, with a force file so a test can make the real engine say an exact
text, a fake SearXNG for web search, and every directory under a temporary home.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "websearch"))
from searxng_fake import FakeSearxng  # noqa: E402

from anyclaude.tinymodel import DEMO_MAX_POSITION, ensure_demo_model  # noqa: E402
from llama_report import pytest_terminal_summary  # noqa: E402,F401  (llama tests not run: loud)

# The model (the demo model's build) declares its window; nothing is configured, as for a
# user. Its output limit is the default (8192) too.
CONTEXT_WINDOW = DEMO_MAX_POSITION


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class System:
    def __init__(self, home: Path, port: int, searxng: FakeSearxng, model_dir: Path,
                 models: str | None = None):
        self.home, self.port, self.searxng = home, port, searxng
        self.url = f"http://127.0.0.1:{port}"
        self.force_file = home / "force.json"
        self.force_file.write_text(json.dumps({"rules": []}))
        if models is None:
            models = f'[models.tiny]\npath = "{model_dir}"\n\n[routes]\ndefault = "tiny"\n'
        self.config = home / "anyclaude.toml"
        self.config.write_text(f"""
[server]
port = {port}

{models}

[engine]
force_file = "{self.force_file}"
prefill_step_size = 512

[cache]
dir = "{home / 'cache'}"
disk_budget_mb = 256
memory_budget_mb = 256
block_tokens = 64

[timeouts]
accept_s = 2.0

[search]
searxng_url = "{searxng.url}"
timeout_s = 2.0

[logging]
dir = "{home / 'logs'}"
""")
        self.env = {**os.environ,
                    "ANYCLAUDE_CONFIG": str(self.config),
                    "ANYCLAUDE_RUN_DIR": tempfile.mkdtemp(prefix="acs", dir="/tmp"),
                    "XDG_CACHE_HOME": str(home / "xdg-cache"),
                    "XDG_STATE_HOME": str(home / "xdg-state")}

    def cli(self, *args: str, timeout: float = 180, env: dict | None = None
            ) -> subprocess.CompletedProcess:
        """`anyclaude ARGS`; ``env`` adds to (or replaces) the system's environment."""
        return subprocess.run([sys.executable, "-m", "anyclaude.cli", *args],
                              env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)

    def say(self, *rules: tuple, otherwise: str | None = "ok") -> None:
        """Make the engine say `text` when the last user message contains `match`:
        (match, text) or (match, text, extra rule fields such as {"fail": True, "times": 1}).
        Any other request (Claude Code's side calls) gets `otherwise`."""
        listed = [{"match": r[0], "say": r[1], **(r[2] if len(r) > 2 else {})} for r in rules]
        if otherwise is not None:
            listed.append({"match": "", "say": otherwise})
        self.force_file.write_text(json.dumps({"rules": listed}))

    def status(self) -> dict:
        out = self.cli("status", "--json", timeout=30)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def service(self, name: str) -> dict:
        return next(s for s in self.status()["services"] if s["name"] == name)

    def wait_ready(self, name: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            svc = self.service(name)
            if svc["state"] == "ready":
                return svc
            time.sleep(0.2)
        raise AssertionError(f"{name} not ready after {timeout} s: {svc}")


@pytest.fixture(scope="session")
def system(tmp_path_factory):
    home = tmp_path_factory.mktemp("system")
    model_dir = ensure_demo_model(home / "models")
    searxng = FakeSearxng()
    sys_ = System(home, free_port(), searxng, model_dir)
    up = sys_.cli("up", "--detach", timeout=300)
    if up.returncode != 0:
        logs = "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in (home / "logs").glob("*"))
        sys_.cli("down")
        pytest.fail(f"anyclaude up failed: {up.stdout}\n{up.stderr}\n{logs}")
    yield sys_
    sys_.cli("down", timeout=120)
    searxng.close()


@pytest.fixture
def client(system):
    import anthropic
    return anthropic.Anthropic(base_url=system.url, api_key="sk-test", max_retries=0, timeout=120)
