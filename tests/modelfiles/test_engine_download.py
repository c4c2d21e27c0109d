"""A model given as a hub id that is not in the local cache: the real engine process
downloads it from the fake hub (HF_ENDPOINT) while `anyclaude status` shows the progress
from its heartbeat, then loads it and becomes ready."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from anyclaude.tinymodel import ensure_tiny_model

from .fake_hub import FakeHub

REPO = "fake-org/tiny-mlx"
# kvstore and the engine are all this needs: the rest of the system only costs CPU here
TABLE = """
[restart]
backoff_initial = 0.5
max_failures = 1

[services.kvstore]
command = ["{python}", "-m", "anyclaude.services.kvstore"]
ready_timeout = 30

[services.engine]
command = ["{python}", "-m", "anyclaude.services.engine", "--model", "{model}"]
each_model = true
depends_on = ["kvstore"]
ready_timeout = 120
heartbeat_timeout = 10
"""


def test_engine_reports_download_progress_while_starting(tmp_path):
    model = ensure_tiny_model(tmp_path / "models")
    files = {p.name: p.read_bytes() for p in model.iterdir() if p.is_file()}
    fake = FakeHub({REPO: files}, pace_s=0.03)      # the 16 MB of weights take ~8 s
    (tmp_path / "supervisor.toml").write_text(TABLE)
    (tmp_path / "anyclaude.toml").write_text(
        f'[models.tiny]\npath = "{REPO}"\ncontext_window = 4096\n\n'
        f'[cache]\ndir = "{tmp_path / "cache"}"\n\n[logging]\ndir = "{tmp_path / "logs"}"\n')
    env = {**os.environ, "ANYCLAUDE_CONFIG": str(tmp_path / "anyclaude.toml"),
           "ANYCLAUDE_SUPERVISOR_TOML": str(tmp_path / "supervisor.toml"),
           "ANYCLAUDE_RUN_DIR": tempfile.mkdtemp(prefix="acd", dir="/tmp"),
           "HF_ENDPOINT": fake.url, "HF_HUB_CACHE": str(tmp_path / "hf"),
           "XDG_STATE_HOME": str(tmp_path / "state")}

    def cli(*args, timeout=60):
        return subprocess.run([sys.executable, "-m", "anyclaude.cli", *args], env=env,
                              capture_output=True, text=True, timeout=timeout)

    up = subprocess.Popen([sys.executable, "-m", "anyclaude.cli", "up", "--detach",
                           "--timeout", "150"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    try:
        seen, table = [], ""
        deadline = time.monotonic() + 120
        while up.poll() is None and time.monotonic() < deadline:
            status = cli("status", "--json")
            if status.returncode == 0:
                engine = next(s for s in json.loads(status.stdout)["services"]
                              if s["name"] == "engine-tiny")
                for d in (engine.get("info") or {}).get("download") or []:
                    seen.append((engine["state"], d["done"], d["total"]))
                    if d["done"] > 0 and not table:
                        table = cli("status").stdout
            time.sleep(0.3)
        out, err = up.communicate(timeout=60)
        assert up.returncode == 0, out + err
        total = sum(len(v) for k, v in files.items() if not k.endswith(".md"))
        assert seen, "no heartbeat carried the download"
        # "ready" may pair with the last heartbeat sent while starting (the supervisor marks the
        # engine ready on its announce, before the next heartbeat replaces the info)
        assert all(state in ("starting", "ready") and t == total for state, _, t in seen), \
            sorted(set(seen))[-5:]
        assert any(state == "starting" for state, _, _ in seen), seen
        assert any(0 < done < total for _, done, _ in seen), seen   # caught it mid-way
        assert "downloading fake-org/tiny-mlx" in table, table
        ready = json.loads(cli("status", "--json").stdout)
        engine = next(s for s in ready["services"] if s["name"] == "engine-tiny")
        assert engine["state"] == "ready" and "download" not in engine["info"]
        assert (Path(env["HF_HUB_CACHE"]) / "models--fake-org--tiny-mlx").is_dir()
    finally:
        if up.poll() is None:
            up.kill()
        cli("down", timeout=90)
        fake.close()
