"""Which BLAS the engine's matmuls run on, and the environment that picks a fast one.

The Linux CPU wheel of MLX takes ``cblas_sgemm`` from a bundled single-core reference BLAS
(~4 GFLOPS). Debian's OpenBLAS (``apt install libopenblas0-pthread``) put in front with
LD_PRELOAD runs the same fp32 matmuls ~25x faster. LD_PRELOAD only takes effect when a
process starts, so the supervisor builds the engine's environment with :func:`engine_env`.

``ANYCLAUDE_BLAS=reference`` keeps the bundled BLAS; ``ANYCLAUDE_OPENBLAS=/path/lib.so``
names a library that the search below would not find.
"""

from __future__ import annotations

import ctypes.util
import os
import platform
import sys
from pathlib import Path

_CANDIDATES = (
    # Debian / Ubuntu: libopenblas0-pthread (the alternatives symlink, then the real dir)
    "/usr/lib/{triplet}/libopenblas.so.0",
    "/usr/lib/{triplet}/openblas-pthread/libopenblas.so.0",
    "/usr/lib/{triplet}/openblas-openmp/libopenblas.so.0",
    "/usr/lib/{triplet}/openblas-serial/libopenblas.so.0",
    # Fedora / RHEL / Arch / Alpine
    "/usr/lib64/libopenblasp.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
    "/usr/local/lib/libopenblas.so.0",
)


def _triplet() -> str:
    machine = platform.machine()
    return {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu",
            "arm64": "aarch64-linux-gnu"}.get(machine, f"{machine}-linux-gnu")


def find_openblas(env: dict | None = None) -> str | None:
    """Path of a system OpenBLAS that exports the plain ``cblas_sgemm``, or None."""
    env = os.environ if env is None else env
    explicit = env.get("ANYCLAUDE_OPENBLAS")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    if not sys.platform.startswith("linux"):
        return None
    triplet = _triplet()
    for pattern in _CANDIDATES:
        path = pattern.format(triplet=triplet)
        if Path(path).is_file():
            return path
    found = ctypes.util.find_library("openblas")  # e.g. "libopenblas.so.0" via ldconfig
    return found or None


def engine_env(base_env: dict | None = None) -> dict:
    """A copy of ``base_env`` (default: os.environ) for starting the engine process, with
    OpenBLAS added in front of LD_PRELOAD when one is found and not disabled."""
    env = dict(os.environ if base_env is None else base_env)
    if env.get("ANYCLAUDE_BLAS", "").lower() == "reference" or not sys.platform.startswith("linux"):
        return env
    lib = find_openblas(env)
    if lib is None:
        return env
    preload = [p for p in env.get("LD_PRELOAD", "").replace(":", " ").split() if p]
    if lib not in preload:
        env["LD_PRELOAD"] = " ".join([lib, *preload])
    return env


def active_blas(maps_path: str = "/proc/self/maps") -> str:
    """The BLAS this process runs on: "accelerate/metal" on macOS, "openblas" when a system
    libopenblas is mapped (it can only have come from LD_PRELOAD: nothing else here loads
    it), else "reference" (MLX's bundled BLAS). NumPy's own OpenBLAS exports prefixed
    symbols (libscipy_openblas) and does not count."""
    if sys.platform == "darwin":
        return "accelerate/metal"
    try:
        with open(maps_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                name = line.rsplit("/", 1)[-1].strip()
                if name.startswith("libopenblas"):
                    return "openblas"
    except OSError:
        pass
    return "reference"
