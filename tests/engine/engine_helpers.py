"""Helpers shared by the engine tests (imported by name: tests/engine is on sys.path)."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)   # for request_builders, shared with the backend tests

from request_builders import events_of, make_request, run, text_of  # noqa: E402,F401

CONTEXT_WINDOW = 2048
MAX_OUTPUT = 64
PREFILL_STEP = 64


BASH_TOOL = {"name": "Bash", "description": "Run a shell command.",
             "input_schema": {"type": "object", "properties": {"command": {"type": "string"}},
                              "required": ["command"]}}
