"""Streaming behaviour of the output parser: what is held back and for how long, thinking,
special tokens, ids, and properties under arbitrary chunking (hypothesis)."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from anyclaude.services.engine.parsing.output import FAMILIES, OutputParser, new_tool_id

TOOLS = [
    {"name": "Bash", "description": "Run a command.",
     "input_schema": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                      "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}},
                      "required": ["command"], "additionalProperties": False}},
    {"name": "Write", "description": "Write a file.",
     "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"},
                                                       "content": {"type": "string"}},
                      "required": ["file_path", "content"], "additionalProperties": False}},
]
SPECIALS = ["<|im_end|>", "<|endoftext|>", "<|im_start|>", "<|eot_id|>", "</s>"]
MARKERS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<function=", "[TOOL_CALLS]",
           "<|python_tag|>", "```"] + SPECIALS


def parser(family="hermes", **kw):
    kw.setdefault("tools", TOOLS)
    kw.setdefault("thinking", True)
    return OutputParser(family=family, **kw)


def merge(events):
    out = []
    for e in events:
        if out and e["type"] in ("text", "thinking") and out[-1]["type"] == e["type"]:
            out[-1] = {**out[-1], "text": out[-1]["text"] + e["text"]}
        else:
            out.append(dict(e))
    return out


def feed_all(p, pieces):
    events = []
    for piece in pieces:
        events += p.feed(piece)
    return merge(events + p.finish())


def texts(events, kind="text"):
    return "".join(e["text"] for e in events if e["type"] == kind)


# -- latency: only a possible partial marker is held back ---------------------------------------

def test_plain_text_goes_out_at_once():
    p = parser()
    assert p.feed("Hello, wor") == [{"type": "text", "text": "Hello, wor"}]
    assert p.feed("ld") == [{"type": "text", "text": "ld"}]


def test_partial_tag_is_held_until_it_diverges():
    p = parser()
    assert p.feed("Use a <tool") == [{"type": "text", "text": "Use a"}]
    assert p.feed("box> now") == [{"type": "text", "text": " <toolbox> now"}]


def test_text_before_a_call_is_not_delayed_by_the_call():
    p = parser()
    assert texts(p.feed("I'll run it.\n<tool_call>\n{\"name\": \"Bash\", ")) == "I'll run it."
    assert p.feed("\"arguments\": {\"command\": \"ls\"}}") == []
    events = p.feed("\n</tool_") + p.feed("call>")
    assert [e["type"] for e in events] == ["tool_start", "tool_args", "tool_end"]
    assert events[1]["json"] == '{"command":"ls"}'
    assert p.finish() == []
    assert p.tool_calls == 1


def test_closing_tag_split_across_pieces():
    text = '<tool_call>{"name": "Bash", "arguments": {"command": "pwd"}}</tool_call>'
    cut = text.index("</tool_call>") + len("</tool_")
    events = feed_all(parser(), [text[:cut], text[cut:]])
    assert [e["type"] for e in events] == ["tool_start", "tool_args", "tool_end"]


def test_a_partial_tag_at_the_end_is_flushed_as_text():
    p = parser()
    assert feed_all(p, ["Done <tool_"]) == [{"type": "text", "text": "Done <tool_"}]


def test_thinking_streams_before_the_block_closes():
    p = parser(starts_in_thinking=True)
    assert p.feed("Let me see") == [{"type": "thinking", "text": "Let me see"}]
    assert p.feed(" more.\n") == [{"type": "thinking", "text": " more."}]   # trailing \n held
    assert p.feed("\n</thi") == []
    assert p.feed("nk>\n\nAnswer") == [{"type": "text", "text": "Answer"}]


def test_thinking_off_drops_thought_but_keeps_answer():
    events = feed_all(parser(thinking=False), ["<think>\nsecret plan\n</think>\n\nHi"])
    assert events == [{"type": "text", "text": "Hi"}]


# -- special tokens ----------------------------------------------------------------------------

def test_special_tokens_are_stripped_even_when_split():
    p = parser(special_tokens=SPECIALS)
    events = []
    for ch in "Hi<|im_end|>there<|endoftext|>":
        events += p.feed(ch)
    assert texts(merge(events + p.finish())) == "Hithere"


def test_structural_markers_listed_as_special_tokens_still_work():
    p = parser(special_tokens=SPECIALS + ["<tool_call>", "</tool_call>", "<think>", "</think>"])
    call = '<tool_call>{"name": "Bash", "arguments": {"command": "id"}}</tool_call>'
    events = feed_all(p, ["<think>\nx\n</think>\n" + call + "<|im_end|>"])
    assert [e["type"] for e in events] == ["thinking", "tool_start", "tool_args", "tool_end"]


# -- ids, counters, lifecycle -------------------------------------------------------------------

def test_ids_are_toolu_base62_and_unique():
    ids = {new_tool_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"toolu_[0-9A-Za-z]{24}", i) for i in ids)


def test_custom_id_factory_is_used():
    p = parser(new_id=lambda: "toolu_fixed")
    events = feed_all(p, ['<tool_call>{"name": "Bash", "arguments": {"command": "id"}}</tool_call>'])
    assert events[0]["id"] == "toolu_fixed"


def test_feed_after_finish_raises_and_finish_is_idempotent():
    p = parser()
    p.feed("x")
    p.finish()
    assert p.finish() == []
    with pytest.raises(RuntimeError):
        p.feed("y")


def test_empty_feed_is_a_no_op():
    p = parser()
    assert p.feed("") == []
    assert p.finish() == []


def test_unparsed_call_logs_a_warning_with_reason():
    with capture_logs() as logs:
        events = feed_all(parser(), ['<tool_call>{"name": "Nope", "arguments": {}}</tool_call>'])
    assert events == [{"type": "text", "text": '<tool_call>{"name": "Nope", "arguments": {}}</tool_call>'}]
    [warning] = [entry for entry in logs if entry["log_level"] == "warning"]
    assert warning["event"] == "engine.toolcall.unparsed" and "Nope" in warning["reason"]


def test_tools_may_be_empty():
    with capture_logs():
        events = feed_all(parser(tools=[]), ['<tool_call>{"name": "Bash", "arguments": {}}</tool_call>'])
    assert events[0]["type"] == "text"


def test_long_argument_streams_in_linear_time():
    content = "line < of > code {with} [brackets] \"quoted\"\n" * 4000      # ~180 KB
    call = json.dumps({"name": "Write", "arguments": {"file_path": "/big.txt", "content": content}})
    p = parser()
    events = []
    for i in range(0, len(call), 3):
        events += p.feed(call[i:i + 3])
    events += p.finish()
    assert json.loads(events[1]["json"])["content"] == content


# -- properties (hypothesis) --------------------------------------------------------------------

ALPHABET = st.sampled_from(list("abcXYZ019 \n\t<>[]{}/\\|\"'`:,;=_-!?*#.") + ["é", "中", "🙂", "name"])


def no_markers(text: str) -> bool:
    return not any(m in text for m in MARKERS)


plain_text = st.lists(ALPHABET, max_size=80).map("".join).filter(no_markers)


def chunks(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in zip(points, points[1:])]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(text=plain_text, cuts=st.lists(st.integers(0, 1000), max_size=20),
       family=st.sampled_from(FAMILIES), thinking=st.booleans())
def test_text_without_tags_passes_through_unchanged(text, cuts, family, thinking):
    p = OutputParser(family=family, tools=TOOLS, thinking=thinking, special_tokens=SPECIALS)
    with capture_logs():
        events = feed_all(p, chunks(text, cuts))
    assert texts(events) == text
    assert all(e["type"] == "text" for e in events)
    assert p.tool_calls == 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(thought=plain_text, answer=plain_text, cuts=st.lists(st.integers(0, 1000), max_size=20),
       opened=st.booleans())
def test_thinking_block_splits_thought_and_answer(thought, answer, cuts, opened):
    text = ("" if opened else "<think>\n") + thought + "\n</think>\n\n" + answer
    p = OutputParser(family="hermes", tools=[], thinking=True, starts_in_thinking=opened)
    events = feed_all(p, chunks(text, cuts))
    assert texts(events, "thinking") == thought.strip()
    assert texts(events) == answer.lstrip()
    kinds = [e["type"] for e in events]
    assert kinds == sorted(kinds, key=lambda k: k != "thinking")   # thinking first


any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


@settings(max_examples=200, deadline=None)
@given(content=any_text, path=any_text, cuts=st.lists(st.integers(0, 2000), max_size=30))
def test_hermes_call_arguments_survive_any_chunking(content, path, cuts):
    args = {"file_path": path, "content": content}
    text = "Writing.\n<tool_call>\n" + json.dumps({"name": "Write", "arguments": args},
                                                   ensure_ascii=False) + "\n</tool_call>"
    p = OutputParser(family="hermes", tools=TOOLS, thinking=False)
    events = feed_all(p, chunks(text, cuts))
    assert [e["type"] for e in events] == ["text", "tool_start", "tool_args", "tool_end"]
    assert events[2]["json"] == json.dumps(args, ensure_ascii=False, separators=(",", ":"))


@settings(max_examples=200, deadline=None)
@given(content=any_text.filter(lambda s: "</parameter>" not in s),
       cuts=st.lists(st.integers(0, 2000), max_size=30))
def test_qwen3_coder_values_survive_any_chunking(content, cuts):
    text = ("<tool_call>\n<function=Write>\n<parameter=file_path>\n/x\n</parameter>\n"
            f"<parameter=content>\n{content}\n</parameter>\n</function>\n</tool_call>")
    p = OutputParser(family="qwen3_coder", tools=TOOLS, thinking=False)
    events = feed_all(p, chunks(text, cuts))
    assert [e["type"] for e in events] == ["tool_start", "tool_args", "tool_end"]
    assert json.loads(events[1]["json"]) == {"file_path": "/x", "content": content}


# Values built from the very fragments the parser looks for.
FRAGMENTS = st.sampled_from(["<", "</", ">", "tool_call>", "<tool_call>", "</tool_call>", "</function>",
                             "<function=Bash>", "<parameter=x>", "</think>", "<think>", "[TOOL_CALLS]",
                             "{", "}", "[", "]", '"', "\\", "\n", " ", "a", "é", "```", ";",
                             '{"name": "Bash", "arguments": {"command": "é"}}', "<parameter=command>",
                             "</parameter>", "[ARGS]", "<|python_tag|>", "Bash"])
tricky_text = st.lists(FRAGMENTS, max_size=25).map("".join)


@settings(max_examples=300, deadline=None)
@given(content=tricky_text, cuts=st.lists(st.integers(0, 2000), max_size=30),
       family=st.sampled_from(["hermes", "qwen3_coder"]))
def test_tag_fragments_inside_json_arguments(content, cuts, family):
    args = {"file_path": "/p", "content": content}
    text = "<tool_call>\n" + json.dumps({"name": "Write", "arguments": args}) + "\n</tool_call>"
    events = feed_all(OutputParser(family=family, tools=TOOLS, thinking=True), chunks(text, cuts))
    assert [e["type"] for e in events] == ["tool_start", "tool_args", "tool_end"]
    assert json.loads(events[1]["json"]) == args


@settings(max_examples=300, deadline=None)
@given(content=tricky_text.filter(lambda s: "</parameter>" not in s),
       cuts=st.lists(st.integers(0, 2000), max_size=30), wrapped=st.booleans())
def test_tag_fragments_inside_xml_values(content, cuts, wrapped):
    call = ("<function=Write>\n<parameter=file_path>\n/p\n</parameter>\n"
            f"<parameter=content>\n{content}\n</parameter>\n</function>")
    text = f"<tool_call>\n{call}\n</tool_call>" if wrapped else call
    events = feed_all(OutputParser(family="qwen3_coder", tools=TOOLS, thinking=True), chunks(text, cuts))
    assert [e["type"] for e in events] == ["tool_start", "tool_args", "tool_end"]
    assert json.loads(events[1]["json"]) == {"file_path": "/p", "content": content}


def _ids_out(events):
    return [{**e, "id": "ID"} if e["type"] == "tool_start" else e for e in events]


@settings(max_examples=500, deadline=None)
@given(text=tricky_text, cuts=st.lists(st.integers(0, 2000), max_size=30),
       family=st.sampled_from(FAMILIES), opened=st.booleans())
def test_chunking_never_changes_the_events(text, cuts, family, opened):
    def run(pieces):
        p = OutputParser(family=family, tools=TOOLS, thinking=True, starts_in_thinking=opened)
        with capture_logs():
            return _ids_out(feed_all(p, pieces))
    assert run(chunks(text, cuts)) == run([text]) == run(list(text))


@settings(max_examples=500, deadline=None)
@given(text=tricky_text, family=st.sampled_from(FAMILIES), opened=st.booleans())
@example(text="<function=Bash><parameter=command>é<parameter=command>", family="hermes",
         opened=False)                    # found by hypothesis: a repeated parameter
def test_content_is_never_lost_or_invented(text, family, opened):
    """"é" stands for content: every one the model wrote shows up exactly once, as text,
    thinking or inside tool arguments, whatever markup surrounds it."""
    p = OutputParser(family=family, tools=TOOLS, thinking=True, starts_in_thinking=opened)
    with capture_logs():
        events = feed_all(p, [text])
    shown = "".join(e.get("text", "") + e.get("json", "") for e in events)
    assert shown.count("é") == text.count("é")
