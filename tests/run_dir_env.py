"""Point this test process's bus at another run directory for a while."""

from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def use_run_dir(path):
    old = os.environ.get("ANYCLAUDE_RUN_DIR")
    os.environ["ANYCLAUDE_RUN_DIR"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ANYCLAUDE_RUN_DIR", None)
        else:
            os.environ["ANYCLAUDE_RUN_DIR"] = old
