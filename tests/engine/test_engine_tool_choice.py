"""tool_choice any / tool enforced by the real engine on the tiny model, for every family.

The tiny model's weights are random: after the enforced head (opener, tool name, lead-in)
it writes garbage arguments, which the parser shows as text. So the head is checked on the
raw generated tokens, and the path to a tool_use block is checked with ``Scripted``, an
EngineCore whose extra logits processor stands in for a model that writes arguments once
the head is there (a strong bias, not a mask: the enforcement still decides every token it
constrains). Everything else is the real pipeline: sampling, decoding, parsing, usage.
"""

from __future__ import annotations

import json
import re

import mlx.core as mx
import pytest
from engine_helpers import CONTEXT_WINDOW, MAX_OUTPUT, PREFILL_STEP, events_of, make_request, run
from structlog.testing import capture_logs

from anyclaude.errors import InvalidRequest
from anyclaude.messages import Done, Error
from anyclaude.services.engine.parsing import tool_choice
from anyclaude.services.engine.mlx.generation import EngineCore
from anyclaude.services.engine.parsing.tool_choice import Plan, plan_for, vocab_of
from anyclaude.services.frontdoor.parse import parse_request

# kimi_k2's head is checked without the model (test_kimi_k2_head_reads_as_a_call): the tiny
# tokenizer spells its markers (one token each in Kimi's vocabulary) in more tokens than the
# tiny engine's 64 output tokens leave for the arguments.
FAMILIES = ("hermes", "qwen3_coder", "mistral", "llama3", "glm47", "minimax_m2", "gemma4")
PATH_SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}}
TOOLS = [{"name": "Read", "input_schema": {**PATH_SCHEMA, "required": ["path"]}},
         {"name": "ReadMany", "input_schema": PATH_SCHEMA},
         {"name": "Ping", "input_schema": PATH_SCHEMA}]
NAMES = [t["name"] for t in TOOLS]

# What a model writes after the head: the arguments {"path": "a.txt"} and the call's end,
# then (parallel) a second call of Ping.
ARGS = {"hermes": ' {"path": "a.txt"}}\n</tool_call>',
        "qwen3_coder": "\n<parameter=path>\na.txt\n</parameter>\n</function>\n</tool_call>",
        "mistral": ' {"path": "a.txt"}}]',
        "llama3": ' {"path": "a.txt"}}',
        "glm47": "<arg_key>path</arg_key>\n<arg_value>a.txt</arg_value>\n</tool_call>",
        "minimax_m2": '\n<parameter name="path">a.txt</parameter>\n</invoke>\n</minimax:tool_call>',
        "gemma4": 'path:<|"|>a.txt<|"|>}<tool_call|>'}
SECOND = {"hermes": ' {"path": "a.txt"}}\n</tool_call>\n<tool_call>\n'
                    '{"name": "Ping", "arguments": {}}\n</tool_call>',
          "qwen3_coder": "\n<parameter=path>\na.txt\n</parameter>\n</function>\n</tool_call>\n"
                         "<tool_call>\n<function=Ping>\n</function>\n</tool_call>",
          "mistral": ' {"path": "a.txt"}}, {"name": "Ping", "arguments": {}}]',
          "llama3": ' {"path": "a.txt"}}\n{"name": "Ping", "parameters": {}}',
          "glm47": "<arg_key>path</arg_key>\n<arg_value>a.txt</arg_value>\n</tool_call>\n"
                   "<tool_call>Ping\n</tool_call>",
          "minimax_m2": '\n<parameter name="path">a.txt</parameter>\n</invoke>\n'
                        '<invoke name="Ping">\n</invoke>\n</minimax:tool_call>',
          "gemma4": 'path:<|"|>a.txt<|"|>}<tool_call|><|tool_call>call:Ping{}<tool_call|>'}


class ScriptAfterHead:
    """Once the generated text is the enforced head (or, with ``at_name``, just the opener),
    pushes ``ids`` then EOS (+1e4 on the logits)."""

    def __init__(self, tokenizer, plan: Plan, ids: list[int], eos_id: int, n_prompt: int,
                 at_name: bool = False):
        self.tokenizer, self.plan, self.ids, self.eos_id = tokenizer, plan, ids, eos_id
        self.n_prompt, self.at_name, self.at = n_prompt, at_name, None

    def _starts(self, text: str) -> bool:
        if self.at_name:
            return text == self.plan.opener
        return len(text) > len(self.plan.opener) and text.startswith(self.plan.opener) \
            and text.endswith(self.plan.lead_in)

    def __call__(self, tokens, logits):
        if self.at is None and self._starts(self.tokenizer.decode(tokens[self.n_prompt:].tolist())):
            self.at = 0
        if self.at is None:
            return logits
        target = self.ids[self.at] if self.at < len(self.ids) else self.eos_id
        self.at += 1
        return mx.where(mx.arange(logits.shape[-1]) == target, logits + 1e4, logits)


class Scripted(EngineCore):
    script: str | None = None
    at_name = False
    fed: list[int] = []

    def _forcing(self, request, prompt):
        processors, fail = super()._forcing(request, prompt)
        if self.script is not None and processors:
            plan = tool_choice.plan_for(self.family, vocab_of(self.tokenizer))
            ids = self.tokenizer.encode(self.script, add_special_tokens=False)
            n_prompt = len(prompt.ids)
            processors = [ScriptAfterHead(self.tokenizer, plan, ids, self.eos_id, n_prompt,
                                          self.at_name), *processors]
        return processors, fail

    def _finish_cache(self, cache, tokens):
        self.fed = list(tokens)


@pytest.fixture(scope="module")
def cores(tiny_model_dir, force_path):
    return {family: Scripted(str(tiny_model_dir), model_id="tiny", context_window=CONTEXT_WINDOW,
                             max_output_tokens=MAX_OUTPUT, prefill_step_size=PREFILL_STEP,
                             tool_parser=family, force_file=str(force_path))
            for family in FAMILIES + ("none",)}


def generate(core, script=None, at_name=False, **overrides):
    """(frames, raw generated text) of one request with TOOLS."""
    request = make_request("read the file", tools=TOOLS, **{"max_tokens": 24, **overrides})
    core.script, core.at_name = script, at_name
    try:
        frames = run(core, request)
    finally:
        core.script, core.at_name = None, False
    generated = [t for t in core.fed[core.count(request):] if t not in core.eos_ids]
    return frames, core.tokenizer.decode(generated)


def head(family):
    return plan_for(family, ())


def tool_uses(frames):
    events = events_of(frames)
    return [(e["name"], json.loads(events[i + 1]["json"])) for i, e in enumerate(events)
            if e["type"] == "tool_start"]


# -- the head -------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_tool_choice_tool_makes_the_reply_start_with_a_call_of_that_tool(cores, family):
    plan = head(family)
    # "Read" is a prefix of "ReadMany": only the lead-in after the name tells them apart.
    # max_tokens 64: the tiny tokenizer spells the longer markers (<minimax:tool_call>) in
    # many tokens, and the whole head must fit.
    frames, raw = generate(cores[family], tool_choice={"type": "tool", "name": "Read"}, max_tokens=64)
    assert raw.startswith(plan.opener + "Read" + plan.lead_in), raw
    assert isinstance(frames[-1], Done)


@pytest.mark.parametrize("family", FAMILIES)
def test_tool_choice_any_picks_one_of_the_offered_tools(cores, family):
    plan = head(family)
    pattern = re.compile(re.escape(plan.opener) + "(.*?)" + re.escape(plan.lead_in), re.S)
    mx.random.seed(FAMILIES.index(family))
    # sampled: the model may spell the name and lead-in in one-character tokens
    _, raw = generate(cores[family], tool_choice={"type": "any"}, temperature=1.0,
                      max_tokens=MAX_OUTPUT)
    match = pattern.match(raw)
    assert match is not None and match.group(1) in NAMES, raw


@pytest.mark.parametrize("family", ["hermes", "qwen3_coder"])
def test_a_model_that_wants_another_tool_still_calls_an_offered_one(cores, family):
    lead_in = head(family).lead_in
    frames, raw = generate(cores[family], script="Pong" + lead_in + ARGS[family],
                           at_name=True, tool_choice={"type": "any"}, max_tokens=MAX_OUTPUT)
    name = raw[len(head(family).opener):].split(lead_in)[0]
    assert name in NAMES, raw


def test_auto_and_none_are_unchanged(cores):
    core = cores["hermes"]
    plain, raw = generate(core, tool_choice=None)
    assert not raw.startswith("<tool_call>")   # the random model does not call on its own
    auto, auto_raw = generate(core, tool_choice={"type": "auto"})
    assert (auto_raw, auto[-1]) == (raw, plain[-1])
    none, none_raw = generate(core, tool_choice={"type": "none"})
    request = make_request("read the file", tools=[], max_tokens=24)
    without_tools = run(core, request)
    assert none[-1] == without_tools[-1]
    assert none_raw == core.tokenizer.decode(core.fed[core.count(request):])


# -- through the parser: a model that writes the arguments ----------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_a_model_writing_arguments_gets_a_tool_use_of_the_forced_tool(cores, family):
    frames, raw = generate(cores[family], script=ARGS[family], max_tokens=MAX_OUTPUT,
                           tool_choice={"type": "tool", "name": "Read"})
    assert raw.startswith(head(family).opener + "Read")
    assert tool_uses(frames) == [("Read", {"path": "a.txt"})]
    assert frames[-1].stop_reason == "tool_use"
    assert not [e for e in events_of(frames) if e["type"] == "text"]


def test_parallel_calls_stay_possible_by_default(cores):
    frames, _ = generate(cores["hermes"], script=SECOND["hermes"], max_tokens=MAX_OUTPUT,
                         tool_choice={"type": "tool", "name": "Read"})
    assert [name for name, _ in tool_uses(frames)] == ["Read", "Ping"]


@pytest.mark.parametrize("family", FAMILIES)
def test_disable_parallel_tool_use_ends_the_reply_after_the_first_call(cores, family):
    frames, raw = generate(cores[family], script=SECOND[family], max_tokens=MAX_OUTPUT,
                           tool_choice={"type": "tool", "name": "Read",
                                        "disable_parallel_tool_use": True})
    assert tool_uses(frames) == [("Read", {"path": "a.txt"})]
    assert "Ping" not in raw   # the script went on with a second call: EOS came first
    assert frames[-1].stop_reason == "tool_use"


def test_mistral_name_args_form(cores, monkeypatch):
    """Tokenizers with an [ARGS] token (v11+) call ``[TOOL_CALLS]NAME[ARGS]{…}``; the tiny
    tokenizer has none, so the plan is picked here and the markers are plain text."""
    monkeypatch.setattr(tool_choice, "plan_for",
                        lambda family, vocab, think_end=None: Plan("[TOOL_CALLS]", "[ARGS]", "json"))
    frames, raw = generate(cores["mistral"], script='{"path": "a.txt"}Ping[ARGS]{}',
                           max_tokens=MAX_OUTPUT, tool_choice={
                               "type": "tool", "name": "Read", "disable_parallel_tool_use": True})
    assert raw.startswith("[TOOL_CALLS]Read[ARGS]") and "Ping" not in raw
    assert tool_uses(frames) == [("Read", {"path": "a.txt"})]
    assert frames[-1].stop_reason == "tool_use"


# -- priorities, fallbacks and errors -------------------------------------------------------

def test_the_force_file_wins_over_tool_choice(cores, force):
    force("a plain answer")
    frames, raw = generate(cores["hermes"], tool_choice={"type": "tool", "name": "Read"})
    assert raw == "a plain answer"
    assert frames[-1].stop_reason == "end_turn" and not tool_uses(frames)


def test_a_family_without_call_syntax_is_not_enforced_and_says_so(cores):
    with capture_logs() as logs:
        _, raw = generate(cores["none"], tool_choice={"type": "any"})
    assert not raw.startswith("<tool_call>")
    assert [e for e in logs if e["event"] == "engine.tool_choice.unenforced"
            and "'none'" in e["reason"]]


def test_an_assistant_prefill_is_not_enforced_and_says_so(cores):
    messages = [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Sure,"}]}]
    with capture_logs() as logs:
        _, raw = generate(cores["hermes"], messages=messages, tool_choice={"type": "any"})
    assert not raw.startswith("<tool_call>")
    assert [e for e in logs if e["event"] == "engine.tool_choice.unenforced"
            and "prefill" in e["reason"]]


@pytest.mark.parametrize("choice,tools,needle", [
    ({"type": "tool", "name": "Write"}, TOOLS, "tool_choice.name: no tool named 'Write'"),
    ({"type": "any"}, [], "tool_choice: type 'any' needs at least one tool"),
])
def test_a_choice_that_names_no_offered_tool_is_a_clear_error(cores, choice, tools, needle):
    frames = run(cores["hermes"], make_request(tools=tools, tool_choice=choice))
    assert len(frames) == 1 and isinstance(frames[0], Error)
    assert frames[0].type == "invalid_request" and needle in frames[0].message


def test_a_name_no_single_token_spells_is_still_forced_exactly(cores):
    tools = [{"name": "Grüße_✓", "input_schema": PATH_SCHEMA}]
    request = make_request(tools=tools, tool_choice={"type": "tool", "name": "Grüße_✓"},
                           max_tokens=24)
    core = cores["hermes"]
    run(core, request)
    raw = core.tokenizer.decode(core.fed[core.count(request):])
    assert raw.startswith('<tool_call>\n{"name": "Grüße_✓", "arguments":')


def test_plans_per_family():
    assert plan_for("mistral", {"[ARGS]"}) == Plan("[TOOL_CALLS]", "[ARGS]", "json")
    assert plan_for("mistral", ()).close == "]"
    assert plan_for("none", ()) is None
    thinking = plan_for("hermes", (), think_end="</think>")
    assert thinking.opener == '</think>\n\n<tool_call>\n{"name": "'


# -- the front door: thinking and forced tool use -------------------------------------------

def test_thinking_enabled_with_forced_tool_use_is_refused_adaptive_passes():
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "Read", "input_schema": PATH_SCHEMA}]}
    for kind in ("any", "tool"):
        choice = {"type": kind, "name": "Read"} if kind == "tool" else {"type": kind}
        with pytest.raises(InvalidRequest, match="thinking: may not be enabled when "
                                                  "tool_choice forces tool use"):
            parse_request({**body, "tool_choice": choice,
                           "thinking": {"type": "enabled", "budget_tokens": 1024}})
        parsed = parse_request({**body, "tool_choice": choice, "thinking": {"type": "adaptive"}})
        assert parsed.request["thinking"] is True
    parsed = parse_request({**body, "tool_choice": {"type": "auto"},
                            "thinking": {"type": "enabled", "budget_tokens": 1024}})
    assert parsed.request["tool_choice"] == {"type": "auto"}


def test_kimi_k2_head_reads_as_a_call():
    from anyclaude.services.engine.parsing.output import OutputParser
    plan = plan_for("kimi_k2", ())
    for single in (False, True):
        text = (plan.opener + "Read" + plan.lead_in + '{"path": "a.txt"}'
                + (plan.close if single else "<|tool_call_end|><|tool_calls_section_end|>"))
        parser = OutputParser(family="kimi_k2", tools=TOOLS, thinking=False)
        events = parser.feed(text) + parser.finish()
        assert [(e["name"]) for e in events if e["type"] == "tool_start"] == ["Read"]
