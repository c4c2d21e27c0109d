"""chat.completion chunks -> neutral events: the awkward shapes servers really send."""

from __future__ import annotations

import itertools
import json

import pytest

from anyclaude.services.engine.backends.openai_stream import StreamTranslator, parse_arguments
from anyclaude.services.engine.streamtext import merge_events

from .bk_fake_server import delta
from .conftest import BASH, READ


def translate(chunks, tools=(BASH, READ), thinking=False, stops=(), family="none"):
    ids = (f"toolu_{i}" for i in itertools.count(1))
    t = StreamTranslator(tools=list(tools), thinking=thinking, stop_sequences=list(stops),
                         family=family, new_id=lambda: next(ids))
    events = []
    for chunk in chunks:
        events += t.feed(chunk)
    events += t.finish()
    return t, merge_events(events)


def call(index=None, id=None, name=None, args=None):
    piece = {"function": {}}
    if index is not None:
        piece["index"] = index
    if id is not None:
        piece["id"] = id
    if name is not None:
        piece["function"]["name"] = name
    if args is not None:
        piece["function"]["arguments"] = args
    return piece


def tools_in(events):
    out, current = [], None
    for e in events:
        if e["type"] == "tool_start":
            current = {"name": e["name"], "id": e["id"], "json": ""}
        elif e["type"] == "tool_args":
            current["json"] += e["json"]
        elif e["type"] == "tool_end":
            out.append(current)
    return out


def test_arguments_split_in_pieces_come_out_as_one_object():
    t, events = translate([
        delta(content="Let me run it."),
        delta(tool_calls=[call(0, "call_a", "Bash", "")]),
        delta(tool_calls=[call(0, args='{"comm')]),
        delta(tool_calls=[call(0, args='and": "ls')]),
        delta(tool_calls=[call(0, args=' -la"}')]),
        delta(finish_reason="tool_calls")])
    assert [e["type"] for e in events] == ["text", "tool_start", "tool_args", "tool_end"]
    assert tools_in(events) == [{"name": "Bash", "id": "toolu_1", "json": '{"command":"ls -la"}'}]
    assert t.stop_reason() == "tool_use"


def test_pieces_without_index_or_id_belong_to_the_current_call():
    _, events = translate([
        delta(tool_calls=[{"id": "c1", "type": "function", "function": {"name": "Read", "arguments": '{"pa'}}]),
        delta(tool_calls=[{"function": {"arguments": 'th": "a.py"}'}}]),
        delta(tool_calls=[{"id": "c2", "function": {"name": "Bash", "arguments": '{"command": "ls"}'}}]),
        delta(finish_reason="tool_calls")])
    assert [(c["name"], json.loads(c["json"])) for c in tools_in(events)] == [
        ("Read", {"path": "a.py"}), ("Bash", {"command": "ls"})]


def test_two_indexed_calls_even_interleaved():
    _, events = translate([
        delta(tool_calls=[call(0, "a", "Read", '{"path": '), call(1, "b", "Bash", '{"command"')]),
        delta(tool_calls=[call(1, args=': "pwd"}')]),
        delta(tool_calls=[call(0, args='"x.py"}')]),
        delta(finish_reason="tool_calls")])
    assert [(c["name"], json.loads(c["json"])) for c in tools_in(events)] == [
        ("Read", {"path": "x.py"}), ("Bash", {"command": "pwd"})]


def test_an_index_reused_with_a_new_id_is_a_new_call():
    _, events = translate([
        delta(tool_calls=[call(0, "a", "Read", '{"path": "1"}')]),
        delta(tool_calls=[call(0, "b", "Read", '{"path": "2"}')]),
        delta(finish_reason="tool_calls")])
    assert [json.loads(c["json"]) for c in tools_in(events)] == [{"path": "1"}, {"path": "2"}]


def test_same_tool_twice_without_ids_or_index():
    _, events = translate([
        delta(tool_calls=[{"function": {"name": "Read", "arguments": '{"path": "1"}'}}]),
        delta(tool_calls=[{"function": {"name": "Read", "arguments": '{"path": "2"}'}}]),
        delta(finish_reason="stop")])
    assert [json.loads(c["json"]) for c in tools_in(events)] == [{"path": "1"}, {"path": "2"}]


def test_name_only_in_the_first_chunk_and_arguments_as_an_object():
    t, events = translate([
        delta(tool_calls=[call(0, "a", "Bash")]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": {"command": "echo hi"}}}]),
        delta(finish_reason="tool_calls")])
    assert tools_in(events) == [{"name": "Bash", "id": "toolu_1", "json": '{"command":"echo hi"}'}]


def test_arguments_are_repaired_against_the_schema():
    _, events = translate([delta(tool_calls=[call(0, "a", "bash", '{"command": "ls", "timeout": "30"}')]),
                           delta(finish_reason="tool_calls")])
    assert tools_in(events) == [{"name": "Bash", "id": "toolu_1", "json": '{"command":"ls","timeout":30}'}]


@pytest.mark.parametrize("name, args", [
    ("Nope", '{"x": 1}'),                    # unknown tool
    ("Bash", '{"command": '),                # cut short
    ("Bash", '{"cmd": "ls"}'),               # does not fit the schema
    ("Bash", '[1, 2]'),                      # not an object
])
def test_unusable_calls_are_shown_as_text(name, args):
    t, events = translate([delta(tool_calls=[call(0, "a", name, args)]), delta(finish_reason="tool_calls")])
    assert [e["type"] for e in events] == ["text"]
    assert name in events[0]["text"] and args.strip() in events[0]["text"]
    assert t.stop_reason() == "end_turn"


def test_text_after_a_call_closes_it_first():
    _, events = translate([
        delta(content="a"), delta(tool_calls=[call(0, "x", "Read", '{"path": "p"}')]),
        delta(content="b"), delta(finish_reason="stop")])
    assert [e["type"] for e in events] == ["text", "tool_start", "tool_args", "tool_end", "text"]
    assert events[0]["text"] == "a" and events[-1]["text"] == "b"


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_fields_become_thinking_only_when_asked(field):
    chunks = [delta(**{field: "Let me think."}), delta(content="Answer."), delta(finish_reason="stop")]
    _, events = translate(chunks, thinking=True)
    assert events == [{"type": "thinking", "text": "Let me think."}, {"type": "text", "text": "Answer."}]
    _, events = translate(chunks, thinking=False)
    assert events == [{"type": "text", "text": "Answer."}]


def test_both_reasoning_fields_are_not_doubled():
    _, events = translate([delta(reasoning_content="x", reasoning="x"), delta(finish_reason="stop")],
                          thinking=True)
    assert events == [{"type": "thinking", "text": "x"}]


def test_think_tags_left_in_the_content_become_thinking():
    _, events = translate([delta(content="<think>hm"), delta(content="m</think>Hi"),
                           delta(finish_reason="stop")], thinking=True)
    assert [(e["type"], e["text"]) for e in events] == [("thinking", "hmm"), ("text", "Hi")]


def test_tool_markup_in_the_content_with_a_parser_family():
    t, events = translate([delta(content='<tool_call>{"name": "Bash", "arguments": {"command": "ls"}}'),
                           delta(content="</tool_call>"), delta(finish_reason="stop")], family="hermes")
    assert tools_in(events) == [{"name": "Bash", "id": tools_in(events)[0]["id"], "json": '{"command":"ls"}'}]
    assert t.stop_reason() == "tool_use"


@pytest.mark.parametrize("finish, expected", [
    ("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal"), (None, "end_turn")])
def test_finish_reasons(finish, expected):
    t, _ = translate([delta(content="x", finish_reason=finish)])
    assert t.stop_reason() == expected


def test_a_stop_sequence_is_found_in_the_text():
    t, events = translate([delta(content="one two ST"), delta(content="OP three")], stops=["STOP"])
    assert events == [{"type": "text", "text": "one two "}]
    assert t.stopped and t.stop_reason() == "stop_sequence" and t.stops.matched == "STOP"


def test_usage_and_llama_cpp_cache_hint():
    t, _ = translate([delta(content="x", finish_reason="stop"),
                      {"choices": [], "usage": {"prompt_tokens": 9}, "timings": {"cache_n": 4}}])
    assert t.usage == {"prompt_tokens": 9} and t.cached_hint == 4


@pytest.mark.parametrize("raw, expected", [
    ("", {}), ('{"a": 1}', {"a": 1}), ('{"a": 1}{"a": 1}', {"a": 1}), ('"{\\"a\\": 1}"', {"a": 1}),
    ('{"a": "line\nbreak"}', {"a": "line\nbreak"})])
def test_parse_arguments(raw, expected):
    assert parse_arguments(raw) == (expected, None)
