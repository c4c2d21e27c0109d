"""Fixtures for the front door tests: a short run dir, fake engine services on the real bus,
and the app served by real waitress on a free port (see fd_helpers.Door).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from .fd_fake_engine import FakeEngine
from .fd_helpers import SDK1_DIR, Door, make_settings


@pytest.fixture(scope="package", autouse=True)
def run_dir():
    path = tempfile.mkdtemp(prefix="ac", dir="/tmp")
    old = os.environ.get("ANYCLAUDE_RUN_DIR")
    os.environ["ANYCLAUDE_RUN_DIR"] = path
    yield path
    if old is None:
        os.environ.pop("ANYCLAUDE_RUN_DIR", None)
    else:
        os.environ["ANYCLAUDE_RUN_DIR"] = old
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="package")
def fake_engines(run_dir):
    engines = {m: FakeEngine(m).start() for m in ("local-main", "local-small")}
    yield engines
    for engine in engines.values():
        engine.stop()


@pytest.fixture(scope="package")
def door(fake_engines):
    d = Door(make_settings())
    yield d
    d.close()


@pytest.fixture
def make_door(fake_engines):
    doors = []

    def factory(settings=None, **kwargs) -> Door:
        d = Door(settings or make_settings(), **kwargs)
        doors.append(d)
        return d
    yield factory
    for d in doors:
        d.close()


@pytest.fixture
def client(door):
    return door.client()


@pytest.fixture(scope="session")
def sdk1_path():
    """The last 1.x SDK, installed once into .cache/sdk1 (PyPI is reachable in CI)."""
    marker = SDK1_DIR / "anthropic" / "_version.py"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(SDK1_DIR),
                        "anthropic>=1,<2"], check=True, timeout=300)
    version = marker.read_text()
    assert '__version__ = "1.' in version, version
    return SDK1_DIR
