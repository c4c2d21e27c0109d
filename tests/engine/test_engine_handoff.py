"""The straight path's hand-over: the optimizer renders the prompt with the model's tokenizer
(loaded without weights, as services/optimizer/local_count.py does) and the engine runs
those ids without rendering again - unless they were rendered for another request or model.

Real mlx-lm, the tiny random-weight model, the force file for exact output.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from anyclaude.messages import Done
from anyclaude.prompt import handoff
from anyclaude.prompt.template import ChatRenderer
from engine_helpers import BASH_TOOL, make_request, run


def final(messages):
    assert isinstance(messages[-1], Done), messages[-1]
    return messages[-1]


@pytest.fixture(scope="module")
def optimizer_renderer(tiny_model_dir):
    """What the optimizer holds: the tokenizer from the model directory, no weights."""
    from mlx_lm.utils import load_tokenizer
    return ChatRenderer(load_tokenizer(Path(tiny_model_dir)), model_id="tiny")


def handed(renderer: ChatRenderer, request: dict, fingerprint: str) -> dict:
    rendered = renderer.render_prompt(request)
    pin = handoff.PinLengths(renderer)(request, rendered.ids)
    return {**request, "prompt": handoff.pack(rendered, key=handoff.render_key(request),
                                              fingerprint=fingerprint, pin=pin)}


@pytest.fixture
def engine_renders(core, monkeypatch):
    """Counts the engine's own renders (the real renderer still runs)."""
    calls = []
    original = core.renderer.render_prompt

    def counting(request):
        calls.append(request)
        return original(request)
    monkeypatch.setattr(core.renderer, "render_prompt", counting)
    return calls


def test_the_optimizer_side_renderer_gives_the_engines_ids(core, optimizer_renderer):
    request = make_request("same ids?", system=["You are terse."], tools=[BASH_TOOL])
    assert optimizer_renderer.render_prompt(request) == core.renderer.render_prompt(request)


def test_engine_runs_the_handed_over_ids_without_rendering(core, force, engine_renders,
                                                           optimizer_renderer):
    force("handed over")
    request = handed(optimizer_renderer, make_request("run these ids", tools=[BASH_TOOL]),
                     core.fingerprint)
    n = request["prompt"]["tokens"]
    done = final(run(core, request))
    assert engine_renders == []                      # one render per request: the optimizer's
    assert core.fed[:n] == handoff.unpack_ids(request["prompt"]["ids"])
    assert done.usage["input_tokens"] + done.usage["cache_read_input_tokens"] \
        + done.usage["cache_creation_input_tokens"] == n     # count_tokens == usage


def test_a_request_changed_after_rendering_is_rendered_again(core, force, engine_renders,
                                                             optimizer_renderer):
    force("rendered here")
    request = handed(optimizer_renderer, make_request("first question"), core.fingerprint)
    changed = {**request, "messages": [*request["messages"],
                                       {"role": "assistant", "content": [
                                           {"type": "text", "text": "An answer."}]},
                                       {"role": "user", "content": [
                                           {"type": "text", "text": "and another"}]}]}
    with structlog.testing.capture_logs() as logs:
        final(run(core, changed))
    assert len(engine_renders) == 1
    fresh = core.renderer.render_prompt(changed).ids
    assert core.fed[:len(fresh)] == fresh
    assert {"event": "engine.prompt.rendered_here", "model": "tiny",
            "reason": "the request changed after it was rendered",
            "log_level": "info"} in logs


def test_a_prompt_for_another_model_is_not_used(core, force, engine_renders,
                                                optimizer_renderer):
    force("other model")
    request = handed(optimizer_renderer, make_request("whose ids?"), "0" * 32)
    with structlog.testing.capture_logs() as logs:
        final(run(core, request))
    assert len(engine_renders) == 1
    assert any(entry.get("reason") == "it was rendered for another model (fingerprint differs)"
               for entry in logs)


def test_ids_round_trip_through_the_packed_form():
    ids = [0, 1, 151643, 2**31 - 1, 7]
    assert handoff.unpack_ids(handoff.pack_ids(ids)) == ids
    assert len(handoff.pack_ids(ids)) == 4 * len(ids)


def test_pin_length_is_the_system_and_tools_prefix(core, optimizer_renderer):
    with_tools = make_request("a question", system=["Be brief."], tools=[BASH_TOOL])
    ids = optimizer_renderer.render_prompt(with_tools).ids
    pin = handoff.PinLengths(optimizer_renderer)(with_tools, ids)
    other = optimizer_renderer.render_prompt(
        {**with_tools, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "something else entirely"}]}]}).ids
    assert 0 < pin < len(ids)
    assert ids[:pin] == other[:pin]                  # shared by every turn of the session
    assert handoff.PinLengths(optimizer_renderer)(make_request("no tools"), ids) == 0
