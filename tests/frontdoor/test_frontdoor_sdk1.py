"""The same conformance checks through the last 1.x SDK (x-api-key, older version header),
run in a subprocess against a front door that requires the key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .fd_helpers import make_settings


CHECKS = Path(__file__).with_name("sdk1_checks.py")


def test_sdk1_conformance(make_door, sdk1_path):
    door = make_door(make_settings(server={"api_key": "sk-one"}))
    env = {**os.environ, "PYTHONPATH": str(sdk1_path)}
    proc = subprocess.run([sys.executable, str(CHECKS), door.url, "sk-one"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["version"].startswith("1.")
    assert out["create"] == {"text": "Hello from the fake engine.", "model": "claude-opus-4-7",
                             "stop_reason": "end_turn", "input_tokens": out["create"]["input_tokens"]}
    assert out["create"]["input_tokens"] > 0
    assert out["stream_text"] == "x y"
    assert out["stream_tool"] == {"input": {"city": "Lima"}, "stop_reason": "tool_use"}
    assert out["stream_thinking"] == ["thinking", "text"]
    assert out["count"] == out["create"]["input_tokens"]      # same request, same number
    assert out["models"] == ["local-main", "local-small"]
    assert "model:" in out["not_found"]
    assert out["midstream_error"] == "api_error"
    assert out["bad_key"] == 401
