"""Headless Chromium for the status page tests (Debian's `chromium`; no Python driver)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SKIP_WHY = ("Chromium is not installed: scripts/setup --test installs Debian's chromium when it "
            "runs as root with apt; elsewhere install chromium yourself")


def chromium() -> str:
    """The browser binary, or a visible skip."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(SKIP_WHY)


def browse(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Load ``url`` headless: ``--dump-dom`` prints the DOM after the page's scripts ran,
    ``--screenshot=PATH`` saves a picture."""
    return subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args, url],
        capture_output=True, text=True, timeout=120)
