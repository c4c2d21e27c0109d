"""Schema check and repair of tool-call arguments: each repair, each refusal."""

from __future__ import annotations

import copy
import json

import pytest

from anyclaude.services.engine.parsing.schema_repair import repair_args, resolve_tool

S = "http://json-schema.org/draft-07/schema#"


def obj(props, required=(), **kw):
    return {"$schema": S, "type": "object", "properties": props, "required": list(required),
            "additionalProperties": False, **kw}


READ = obj({"file_path": {"type": "string"}, "offset": {"type": "integer"},
            "limit": {"type": "number"}, "verbose": {"type": "boolean"}}, ["file_path"])
ISSUE = obj({"title": {"type": "string"}, "labels": {"type": "array", "items": {"type": "string"}},
             "ids": {"type": "array", "items": {"type": "integer"}},
             "meta": {"type": "object", "properties": {"a": {"type": "integer"}}},
             "milestone": {"type": ["integer", "null"]},
             "state": {"type": "string", "enum": ["open", "closed"]}}, ["title"])
TODOS = obj({"todos": {"type": "array", "items": obj(
    {"content": {"type": "string"}, "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]}},
    ["content", "status"])}}, ["todos"])


def ok(args, schema):
    fixed, reason = repair_args(args, schema)
    assert reason is None, reason
    return fixed


def refused(args, schema):
    fixed, reason = repair_args(args, schema)
    assert fixed is None and reason
    return reason


# -- valid arguments pass untouched ------------------------------------------------------------

def test_valid_arguments_are_unchanged():
    args = {"file_path": "/a", "offset": 3, "limit": 2.5, "verbose": False}
    assert ok(args, READ) == args
    assert list(ok(args, READ)) == list(args)   # key order kept


def test_arguments_are_not_modified_in_place():
    args = {"file_path": "/a", "offset": "3"}
    before = copy.deepcopy(args)
    ok(args, READ)
    assert args == before


def test_empty_or_missing_schema_accepts_any_object():
    assert ok({"x": [1, {"y": None}]}, {}) == {"x": [1, {"y": None}]}
    assert ok({"x": 1}, None) == {"x": 1}


# -- repairs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("value,expected", [("10", 10), (" 7 ", 7), ("-2", -2), ("10.0", 10), (4.0, 4)])
def test_string_or_integral_float_to_integer(value, expected):
    fixed = ok({"file_path": "/a", "offset": value}, READ)
    assert fixed["offset"] == expected and type(fixed["offset"]) is int


@pytest.mark.parametrize("value,expected", [("1.5", 1.5), ("20", 20), ("1e3", 1000.0), ("-0.25", -0.25)])
def test_string_to_number(value, expected):
    assert ok({"file_path": "/a", "limit": value}, READ)["limit"] == expected


@pytest.mark.parametrize("value,expected", [("true", True), ("False", False), ("TRUE", True)])
def test_string_to_boolean(value, expected):
    assert ok({"file_path": "/a", "verbose": value}, READ)["verbose"] is expected


@pytest.mark.parametrize("value,expected", [(10, "10"), (1.5, "1.5"), (-3, "-3")])
def test_number_to_string(value, expected):
    assert ok({"file_path": value}, READ) == {"file_path": expected}


def test_json_string_to_object_and_array():
    fixed = ok({"title": "t", "meta": '{"a": 1}', "labels": '["bug", "ui"]'}, ISSUE)
    assert fixed == {"title": "t", "meta": {"a": 1}, "labels": ["bug", "ui"]}


def test_json_string_object_is_checked_and_repaired_inside():
    assert ok({"title": "t", "meta": '{"a": "5"}'}, ISSUE)["meta"] == {"a": 5}


def test_single_value_to_array():
    assert ok({"title": "t", "labels": "bug"}, ISSUE)["labels"] == ["bug"]
    assert ok({"title": "t", "ids": 7}, ISSUE)["ids"] == [7]
    assert ok({"title": "t", "ids": "7"}, ISSUE)["ids"] == [7]


def test_items_are_repaired():
    assert ok({"title": "t", "ids": ["1", 2, "3"]}, ISSUE)["ids"] == [1, 2, 3]


def test_null_for_optional_field_is_dropped():
    assert ok({"file_path": "/a", "offset": None, "limit": None}, READ) == {"file_path": "/a"}


def test_null_kept_where_the_schema_allows_it():
    assert ok({"title": "t", "milestone": None}, ISSUE) == {"title": "t", "milestone": None}


def test_key_differing_in_case_is_renamed():
    assert ok({"File_Path": "/a", "LIMIT": 3}, READ) == {"file_path": "/a", "limit": 3}


def test_enum_value_differing_in_case():
    assert ok({"title": "t", "state": "Closed"}, ISSUE)["state"] == "closed"


def test_nested_repairs_in_array_of_objects():
    fixed = ok({"todos": '[{"content": "x", "status": "In_Progress"}]'}, TODOS)
    assert fixed == {"todos": [{"content": "x", "status": "in_progress"}]}


def test_any_of_prefers_an_exact_branch():
    schema = obj({"v": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}, ["v"])
    assert ok({"v": "5"}, schema) == {"v": "5"}
    assert ok({"v": 5}, schema) == {"v": 5}
    schema = obj({"v": {"oneOf": [{"type": "integer"}, {"type": "boolean"}]}}, ["v"])
    assert ok({"v": "true"}, schema) == {"v": True}


def test_local_refs_are_followed():
    schema = {"type": "object", "$defs": {"n": {"type": "integer"}},
              "properties": {"n": {"$ref": "#/$defs/n"}}, "required": ["n"]}
    assert ok({"n": "4"}, schema) == {"n": 4}


def test_additional_properties_allowed_when_not_forbidden():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert ok({"a": "x", "b": 1}, schema) == {"a": "x", "b": 1}
    schema = {"type": "object", "properties": {}, "additionalProperties": {"type": "integer"}}
    assert ok({"b": "2"}, schema) == {"b": 2}


# -- refusals ----------------------------------------------------------------------------------

def test_missing_required_field_is_refused():
    assert "file_path" in refused({"limit": 3}, READ)


def test_null_for_required_field_is_refused():
    assert "file_path" in refused({"file_path": None}, READ)


def test_unknown_field_is_refused_when_forbidden():
    assert "cwd" in refused({"file_path": "/a", "cwd": "/tmp"}, READ)


@pytest.mark.parametrize("args", [
    {"file_path": "/a", "offset": "ten"},
    {"file_path": "/a", "offset": "1.5"},
    {"file_path": "/a", "offset": True},
    {"file_path": "/a", "limit": "nan"},
    {"file_path": "/a", "verbose": "yes"},
    {"file_path": "/a", "verbose": 1},
    {"file_path": ["/a"]},
    {"file_path": {"p": "/a"}},
    {"file_path": True},
])
def test_uncoercible_values_are_refused(args):
    refused(args, READ)


def test_enum_mismatch_is_refused():
    assert "state" in refused({"title": "t", "state": "merged"}, ISSUE)


def test_invalid_json_string_for_object_is_refused():
    refused({"title": "t", "meta": "{a: 1"}, ISSUE)


def test_wrong_item_is_refused():
    refused({"title": "t", "ids": [1, "two"]}, ISSUE)


def test_arguments_must_be_an_object():
    assert "object" in refused(["a"], READ)
    refused("file_path=/a", READ)
    refused(None, READ)


def test_const_and_any_of_refusals():
    schema = obj({"kind": {"const": "x"}}, ["kind"])
    assert ok({"kind": "x"}, schema) == {"kind": "x"}
    refused({"kind": "y"}, schema)
    schema = obj({"v": {"anyOf": [{"type": "integer"}, {"type": "boolean"}]}}, ["v"])
    refused({"v": "maybe"}, schema)


# -- tool names --------------------------------------------------------------------------------

TOOLS = [{"name": "Read"}, {"name": "Bash"}, {"name": "mcp__gh__list"}, {"name": "dup"}, {"name": "DUP"}]


def test_resolve_tool_exact_and_case_insensitive():
    assert resolve_tool("Read", TOOLS)["name"] == "Read"
    assert resolve_tool("read", TOOLS)["name"] == "Read"
    assert resolve_tool("MCP__GH__LIST", TOOLS)["name"] == "mcp__gh__list"


def test_resolve_tool_refuses_unknown_and_ambiguous():
    assert resolve_tool("Write", TOOLS) is None
    assert resolve_tool("Dup", TOOLS) is None        # two tools differ only in case
    assert resolve_tool("dup", TOOLS)["name"] == "dup"
    assert resolve_tool("", TOOLS) is None
    assert resolve_tool(None, TOOLS) is None


# -- repair_call: what the output parser uses (repairs, then passes the rest on) ----------

from anyclaude.services.engine.parsing.schema_repair import repair_call  # noqa: E402

CALL_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["path", "flags"],
               "properties": {"path": {"type": "string"}, "count": {"type": "integer"},
                              "flags": {"type": "object"}, "tags": {"type": "array", "items": {"type": "string"}},
                              "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                              "force": {"type": "boolean"}}}


def test_repair_call_repairs_python_literals_and_strings():
    fixed, violations = repair_call({"path": "/a", "flags": "{'deep': True, 'x': None}",
                                     "tags": "['a', 'b']", "count": "3", "force": "True"}, CALL_SCHEMA)
    assert fixed == {"path": "/a", "flags": {"deep": True, "x": None}, "tags": ["a", "b"],
                     "count": 3, "force": True}
    assert violations == []


def test_repair_call_passes_violations_on_with_reasons():
    args = {"count": "many", "extra": 1, "tags": ["ok", 5.5, {"no": 1}]}
    fixed, violations = repair_call(args, CALL_SCHEMA)
    assert fixed == {"count": "many", "extra": 1, "tags": ["ok", "5.5", {"no": 1}]}
    assert sorted(violations) == sorted([
        "$.count: expected integer, got string", "$.extra: unknown field",
        "$.tags[2]: expected string, got object",
        "$.path: required field missing", "$.flags: required field missing"])
    assert args == {"count": "many", "extra": 1, "tags": ["ok", 5.5, {"no": 1}]}  # not modified


def test_repair_args_still_refuses():
    assert repair_args({"count": "many"}, CALL_SCHEMA) == (None, "$.count: expected integer, got string")


def test_parser_logs_each_repair_and_each_violation_passed_on():
    from structlog.testing import capture_logs

    from anyclaude.services.engine.parsing.output import OutputParser
    tools = [{"name": "Tool", "input_schema": CALL_SCHEMA}]
    parser = OutputParser(family="hermes", tools=tools, thinking=False)
    text = ('<tool_call>{"name": "tool", "arguments": {"path": "/a", "count": "2", '
            '"flags": "{\'x\': None}", "force": "maybe"}}</tool_call>')
    with capture_logs() as logs:
        events = parser.feed(text) + parser.finish()
    assert [e["type"] for e in events] == ["tool_start", "tool_args", "tool_end"]
    assert events[0]["name"] == "Tool"
    assert json.loads(events[1]["json"]) == {"path": "/a", "count": 2, "flags": {"x": None}, "force": "maybe"}
    repaired = [e for e in logs if e["event"] == "engine.toolcall.repaired"]
    assert repaired and repaired[0]["called"] == "tool" and repaired[0]["fields"] == ["count", "flags"]
    invalid = [e for e in logs if e["event"] == "engine.toolcall.invalid"]
    assert invalid and invalid[0]["violations"] == ["$.force: expected boolean, got string"]
