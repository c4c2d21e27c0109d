"""Fixtures for the backend tests: a scriptable fake upstream, cores built from config."""

from __future__ import annotations

import dataclasses

import pytest

from anyclaude.config import ModelConfig

from .bk_fake_server import FakeUpstream


@pytest.fixture
def fake():
    server = FakeUpstream()
    yield server
    server.close()


def model_config(**fields):
    """A ModelConfig with the backend keys (base_urls, trace_dir, ...) the lead adds later:
    unknown ones ride on a dataclass made for the test."""
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    base = ModelConfig(**{k: v for k, v in fields.items() if k in known})
    extra = {k: v for k, v in fields.items() if k not in known}
    if not extra:
        return base
    cls = dataclasses.make_dataclass("TestModelConfig", [(k, object, dataclasses.field(default=None))
                                                         for k in extra], bases=(ModelConfig,), frozen=True)
    return cls(**{**dataclasses.asdict(base), **extra})


def make_request(text="hello", **overrides):
    request = {
        "model": "up", "system": ["You are terse."], "tools": [], "tool_choice": None,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
        "max_tokens": 32, "temperature": None, "top_p": None, "top_k": None,
        "stop_sequences": [], "thinking": False,
    }
    request.update(overrides)
    return request


def run(core, request, cancelled=lambda: False):
    out = []
    core.generate(request, out.append, cancelled)
    return out


def events_of(frames):
    from anyclaude.messages import Delta
    return [e for m in frames if isinstance(m, Delta) for e in m.events]


def text_of(frames, kind="text"):
    return "".join(e["text"] for e in events_of(frames) if e["type"] == kind)


BASH = {"name": "Bash", "description": "Run a shell command.",
        "input_schema": {"type": "object", "properties": {"command": {"type": "string"},
                                                          "timeout": {"type": "integer"}},
                         "required": ["command"], "additionalProperties": False}}
READ = {"name": "Read", "description": "Read a file.",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}},
                         "required": ["path"]}}
