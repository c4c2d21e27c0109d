"""OpenBLAS discovery, the engine environment, and which BLAS a process runs on."""

from __future__ import annotations

import subprocess
import sys

import pytest

from anyclaude import blas

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


@linux
def test_explicit_library_path_wins(tmp_path):
    lib = tmp_path / "libopenblas.so.0"
    lib.write_bytes(b"")
    assert blas.find_openblas({"ANYCLAUDE_OPENBLAS": str(lib)}) == str(lib)
    assert blas.find_openblas({"ANYCLAUDE_OPENBLAS": str(tmp_path / "missing.so")}) is None


@linux
def test_engine_env_preloads_openblas_in_front(tmp_path):
    lib = tmp_path / "libopenblas.so.0"
    lib.write_bytes(b"")
    env = blas.engine_env({"ANYCLAUDE_OPENBLAS": str(lib), "LD_PRELOAD": "/x/other.so", "A": "1"})
    assert env["LD_PRELOAD"] == f"{lib} /x/other.so" and env["A"] == "1"
    again = blas.engine_env(env)
    assert again["LD_PRELOAD"] == env["LD_PRELOAD"]  # not added twice


def test_reference_setting_disables_the_preload(tmp_path):
    lib = tmp_path / "libopenblas.so.0"
    lib.write_bytes(b"")
    base = {"ANYCLAUDE_OPENBLAS": str(lib), "ANYCLAUDE_BLAS": "reference"}
    assert "LD_PRELOAD" not in blas.engine_env(base)


def test_engine_env_copies_and_never_mutates_its_input():
    base = {"PATH": "/bin"}
    env = blas.engine_env(base)
    assert base == {"PATH": "/bin"} and env is not base


@linux
def test_active_blas_reads_the_memory_map(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /site-packages/numpy.libs/libscipy_openblas64_-ff.so\n"
                    "7f00-7f01 r-xp 0 08:01 1 /site-packages/mlx_cpu.libs/libblas-bd8a282c.so.3\n")
    assert blas.active_blas(str(maps)) == "reference"
    maps.write_text(maps.read_text() + "7f00-7f01 r-xp 0 08:01 2 /usr/lib/x86_64-linux-gnu/"
                    "openblas-pthread/libopenblasp-r0.3.21.so\n")
    assert blas.active_blas(str(maps)) == "openblas"


@linux
@pytest.mark.skipif(blas.find_openblas() is None, reason="no system OpenBLAS installed")
def test_a_process_started_with_engine_env_runs_on_openblas():
    code = ("import mlx.core as mx; from anyclaude.blas import active_blas;"
            "a = mx.ones((64, 64)); mx.eval(a @ a); print(active_blas())")
    with_blas = subprocess.run([sys.executable, "-c", code], env=blas.engine_env(),
                               capture_output=True, text=True, check=True)
    assert with_blas.stdout.strip() == "openblas"
    without = subprocess.run([sys.executable, "-c", code],
                             env=blas.engine_env({**blas.engine_env(), "LD_PRELOAD": "",
                                                  "ANYCLAUDE_BLAS": "reference"}),
                             capture_output=True, text=True, check=True)
    assert without.stdout.strip() == "reference"
