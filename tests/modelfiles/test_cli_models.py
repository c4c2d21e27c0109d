"""`anyclaude pull` and `anyclaude models`, run as a user runs them, against the fake hub."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from .fake_hub import FakeHub

REPO = "fake-org/pull-me"
MB = 1024 * 1024
FILES = {"config.json": b'{"model_type": "llama"}', "tokenizer.json": b"{}",
         "tokenizer_config.json": b"{}", "model.safetensors": os.urandom(32 * MB)}


@pytest.fixture
def env(tmp_path):
    config = tmp_path / "anyclaude.toml"
    config.write_text(f'[models.coder]\npath = "{REPO}"\ncontext_window = 16384\n\n'
                      '[models.remote]\nkind = "openai"\nbase_url = "http://127.0.0.1:9"\n'
                      'path = "some-model"\n\n[routes]\ndefault = "coder"\n')
    return {**os.environ, "ANYCLAUDE_CONFIG": str(config), "HF_HUB_CACHE": str(tmp_path / "hf"),
            "HF_HUB_DISABLE_PROGRESS_BARS": "1", "XDG_STATE_HOME": str(tmp_path / "state")}


def cli(env, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "anyclaude.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_pull_shows_progress_then_models_lists_it(env):
    fake = FakeHub({REPO: dict(FILES)}, pace_s=0.01)    # ~6 MB/s: several progress lines
    env["HF_ENDPOINT"] = fake.url
    before = json.loads(cli(env, "models", "--json").stdout)
    assert before["configured"][0]["where"] == "not downloaded (`anyclaude pull coder`)"
    pulled = cli(env, "pull", "coder")            # a configured id: its hub id is pulled
    fake.close()
    assert pulled.returncode == 0, pulled.stderr
    shown = [int(m) for m in re.findall(r"pulling fake-org/pull-me: .* \((\d+)%\)", pulled.stdout)]
    assert len(shown) >= 2 and shown == sorted(shown) and shown[-1] > shown[0], pulled.stdout
    assert f"{REPO}: done" in pulled.stdout
    after = json.loads(cli(env, "models", "--json").stdout)
    coder, remote = after["configured"]
    assert coder["where"] == "in the local cache" and remote["where"] == "upstream (openai)"
    cached = after["cached"][0]
    assert cached["repo"] == REPO and cached["loadable"] and cached["bytes"] >= 32 * MB
    again = cli(env, "pull", REPO)
    assert again.returncode == 0 and "already in the local cache" in again.stdout
    table = cli(env, "models").stdout
    assert re.search(r"fake-org/pull-me\s+32\.0 MB\s+loadable", table), table


def test_pull_explains_what_it_cannot_do(env):
    fake = FakeHub({})
    env["HF_ENDPOINT"] = fake.url
    missing = cli(env, "pull", "fake-org/not-there")
    remote = cli(env, "pull", "remote")
    nonsense = cli(env, "pull", "not a model")
    fake.close()
    assert missing.returncode == 1 and "no such model on the Hugging Face hub" in missing.stderr
    assert "kind openai" in remote.stderr and "nothing to download" in remote.stderr
    assert "neither a configured model (coder, remote)" in nonsense.stderr
    for run in (missing, remote, nonsense):
        assert "Traceback" not in run.stderr
