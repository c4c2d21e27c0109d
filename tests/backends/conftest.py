"""Fixtures for the backend tests: a scriptable fake upstream, cores built from config."""

from __future__ import annotations

import dataclasses

import pytest

from anyclaude.config import ModelConfig

import request_builders  # tests/ is on sys.path: pytest puts it there for this package
from request_builders import events_of, run, text_of  # noqa: F401  (the tests import them here)

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
    """The shared builder with an upstream's defaults: model "up", a system prompt, no
    temperature."""
    defaults = {"model": "up", "system": ["You are terse."], "temperature": None}
    return request_builders.make_request(text, **{**defaults, **overrides})


BASH = {"name": "Bash", "description": "Run a shell command.",
        "input_schema": {"type": "object", "properties": {"command": {"type": "string"},
                                                          "timeout": {"type": "integer"}},
                         "required": ["command"], "additionalProperties": False}}
READ = {"name": "Read", "description": "Read a file.",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}},
                         "required": ["path"]}}
