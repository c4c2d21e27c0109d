"""Fixtures for the engine tests: one tiny model and one EngineCore for the whole session.

Everything runs real mlx-lm on the tiny random-weight model; the force file makes it say
exact texts through the normal generation path.
"""

from __future__ import annotations

import json

import pytest

from engine_helpers import CONTEXT_WINDOW, MAX_OUTPUT, PREFILL_STEP


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from anyclaude.tinymodel import build_tiny_model
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def force_path(tmp_path_factory):
    return tmp_path_factory.mktemp("force") / "force.json"


@pytest.fixture(scope="session")
def core(tiny_model_dir, force_path):
    from anyclaude.services.engine.mlx.generation import EngineCore

    class Recording(EngineCore):
        fed: list[int] = []
        cache_offset = None

        def _finish_cache(self, cache, tokens):
            self.fed = list(tokens)
            self.cache_offset = cache[0].offset

    return Recording(str(tiny_model_dir), model_id="tiny", context_window=CONTEXT_WINDOW,
                     max_output_tokens=MAX_OUTPUT, prefill_step_size=PREFILL_STEP,
                     force_file=str(force_path))


@pytest.fixture
def force(force_path):
    """force(say, match="", times=None) -> writes the rule; the fixture clears it after."""
    def write(say=None, match="", times=None, rules=None):
        if rules is None:
            rule = {"match": match, "say": say}
            if times is not None:
                rule["times"] = times
            rules = [rule]
        force_path.write_text(json.dumps({"rules": rules}))
    yield write
    force_path.write_text(json.dumps({"rules": []}))
