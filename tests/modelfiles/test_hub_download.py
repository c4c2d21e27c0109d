"""Model downloads from a fake Hugging Face hub on loopback (HF_ENDPOINT): progress, resume
after a cut connection, a clear message when it cannot finish, a missing repo."""

from __future__ import annotations

import os
import threading
import time

import pytest

from anyclaude.errors import ModelLoadError
from anyclaude.modelfiles import hub

from .fake_hub import FakeHub

REPO = "fake-org/tiny-model"
MB = 1024 * 1024
# huggingface_hub writes (and resumes) in 10 MB pieces: a 24 MB file shows progress in steps
WEIGHTS = os.urandom(24 * MB)
FILES = {"config.json": b'{"model_type": "llama"}',
         "tokenizer.json": b'{"version": "1.0"}',
         "model.safetensors": WEIGHTS,
         "README.md": b"not a model file: never downloaded"}


@pytest.fixture
def hf_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return tmp_path / "hf"


def serve(monkeypatch, **faults) -> FakeHub:
    fake = FakeHub({REPO: dict(FILES)}, **faults)
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    return fake


def test_download_reports_progress_until_done(hf_env, monkeypatch):
    fake = serve(monkeypatch, pace_s=0.005)      # ~12 MB/s: about two seconds of progress
    seen: list[dict] = []
    result: dict = {}

    def run():
        result["path"] = hub.from_hub(REPO, "tiny")
    worker = threading.Thread(target=run)
    worker.start()
    while worker.is_alive():
        seen.extend(hub.progress())
        time.sleep(0.05)
    worker.join()
    fake.close()
    path = result["path"]
    assert (path / "model.safetensors").read_bytes() == WEIGHTS
    assert not (path / "README.md").exists()     # only the model's files
    total = sum(len(v) for k, v in FILES.items() if k != "README.md")
    assert seen and all(s["total"] == total and s["repo"] == REPO for s in seen)
    done = [s["done"] for s in seen]
    assert done == sorted(done), "progress never goes back"
    assert done[0] < total // 2 < done[-1], done   # it moved while we watched
    assert hub.progress() == []                     # finished downloads are not listed
    # the second time it comes from the cache: nothing is fetched
    gets = len(fake.gets)
    assert hub.from_hub(REPO, "tiny") == path and len(fake.gets) == gets


def test_cut_connection_is_resumed_with_a_range_request(hf_env, monkeypatch):
    fake = serve(monkeypatch, cut_after=12 * MB, cuts=1)
    path = hub.download(REPO, model_id="tiny")
    fake.close()
    assert (path / "model.safetensors").read_bytes() == WEIGHTS
    ranges = [r for name, r in fake.gets if name == "model.safetensors"]
    # it goes on from the last whole 10 MB piece it had written
    assert ranges == [None, f"bytes={10 * MB}-"], ranges


def test_download_that_keeps_failing_says_how_far_it_got_and_what_to_do(hf_env, monkeypatch):
    fake = serve(monkeypatch, cut_after=12 * MB, cuts=None)
    with pytest.raises(ModelLoadError) as caught:
        hub.download(REPO, model_id="tiny")
    fake.close()
    message = caught.value.message
    assert "interrupted" in message and f"anyclaude pull {REPO}" in message, message
    assert "of 24.0 MB" in message, message
    assert hub.progress() == []
    # the small files that finished stay cached: a later pull fetches only the rest
    fake = serve(monkeypatch)
    path = hub.download(REPO, model_id="tiny")
    fake.close()
    assert (path / "model.safetensors").read_bytes() == WEIGHTS
    assert [name for name, _ in fake.gets] == ["model.safetensors"]


def test_missing_repo_says_so(hf_env, monkeypatch):
    fake = serve(monkeypatch)
    with pytest.raises(ModelLoadError) as caught:
        hub.from_hub("fake-org/no-such-model", "ghost")
    fake.close()
    assert "no such model on the Hugging Face hub" in caught.value.message
    assert "models.ghost.path" in caught.value.message


def test_unreachable_hub_says_no_network(hf_env, monkeypatch):
    fake = serve(monkeypatch)
    fake.close()                                   # nothing listens there any more
    with pytest.raises(ModelLoadError) as caught:
        hub.from_hub(REPO, "tiny")
    assert "no network access to the Hugging Face hub" in caught.value.message
