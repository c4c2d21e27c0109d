"""Check tool-call arguments against the tool's JSON Schema and repair what is unambiguous.

Small local models get the shape of an argument wrong in a handful of predictable ways.
Where the intent cannot be mistaken the value is repaired; anything else is refused with a
reason, and the caller shows the raw call as text instead of sending a broken call.

Repairs (each keeps the model's meaning):
- a string where a number / integer / boolean is expected, when it parses ("10", "1.5",
  "True"); an integral float where an integer is expected (10.0 -> 10);
- a number where a string is expected (10 -> "10");
- a JSON string where an object or array is expected ('{"a": 1}' -> {"a": 1}), also written
  as a Python literal ("{'a': True}" -> {"a": true}); "None" where null is allowed;
- a single value where an array is expected, when it fits the items ("a.py" -> ["a.py"]);
- ``null`` for an optional field that does not allow null: the field is dropped;
- a key or enum value that differs only in letter case from exactly one declared one;
- a tool name that differs only in letter case from exactly one tool (``resolve_tool``).

Refused: a required field missing (or null), a field the schema forbids
(``additionalProperties: false``), a value of the wrong type that does not convert, a value
outside an ``enum`` / ``const``. Numeric ranges, lengths, ``pattern`` and ``format`` are not
checked: the client validates those and answers the model with an error it can act on.

``repair_call`` is what the output parser uses: it repairs the same way but passes what it
cannot repair on as it is, with the list of violations, because a ``tool_use`` the client
rejects (Claude Code answers it with an error tool_result the model can act on) keeps the
agent loop going, where text would end the turn. ``repair_args`` refuses instead (upstream
backends use it).

Supported keywords: type (also lists), properties, required, additionalProperties, items
(schema or tuple form), enum, const, anyOf / oneOf (first branch that fits, exact fits
first), allOf, and local ``$ref`` (``#/$defs/…``, ``#/definitions/…``).
"""

from __future__ import annotations

import ast
import copy
import json
import math
import re
from typing import Any

_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class Refused(Exception):
    """Arguments that cannot be repaired; the message says where and why."""


def resolve_tool(name: Any, tools: list[dict]) -> dict | None:
    """The tool called ``name``: an exact match, else the only case-insensitive match."""
    if not isinstance(name, str) or not name:
        return None
    for tool in tools:
        if tool.get("name") == name:
            return tool
    folded = [tool for tool in tools if str(tool.get("name", "")).lower() == name.lower()]
    return folded[0] if len(folded) == 1 else None


def repair_args(args: Any, schema: dict | None) -> tuple[Any, str | None]:
    """``(arguments, None)`` when they fit the schema (repaired where needed), or
    ``(None, reason)`` when they cannot be repaired. ``args`` itself is never modified."""
    if not isinstance(args, dict):
        return None, f"arguments are {_type_name(args)}, not an object"
    schema = schema if isinstance(schema, dict) else {}
    try:
        return _Checker(schema, repair=True).fix(copy.deepcopy(args), schema, "$"), None
    except Refused as exc:
        return None, str(exc)


def repair_call(args: dict, schema: dict | None) -> tuple[dict, list[str]]:
    """``args`` repaired against the schema, and what still violates it (passed on as is)."""
    schema = schema if isinstance(schema, dict) else {}
    checker = _Checker(schema, repair=True, violations=[])
    try:
        fixed = checker.fix(copy.deepcopy(args), schema, "$")
    except Refused as exc:
        return copy.deepcopy(args), [str(exc)]
    return fixed, checker.violations


def _python_literal(text: str) -> Any:
    """A Python literal the model wrote for a JSON value, as JSON data (else None)."""
    try:
        value = ast.literal_eval(text)
        return json.loads(json.dumps(value, allow_nan=False))
    except Exception:  # noqa: BLE001 - anything literal_eval or dumps raises means "no"
        return None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "null":
        return value is None
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    return True  # an unknown type name constrains nothing we understand


def _types(schema: dict) -> list[str] | None:
    kind = schema.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list) and all(isinstance(k, str) for k in kind):
        return list(kind)
    return None


def _allows_null(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return True
    kinds = _types(schema)
    if kinds is not None:
        return "null" in kinds
    if "enum" in schema:
        return None in schema["enum"]
    if "const" in schema:
        return schema["const"] is None
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return any(_allows_null(branch) for branch in schema[key])
    return True


class _Checker:
    """``violations`` None: refuse at the first problem. A list: record each problem there
    and keep the value as it is (lenient, see ``repair_call``)."""

    def __init__(self, root: dict, *, repair: bool, violations: list[str] | None = None):
        self.root = root
        self.repair = repair
        self.violations = violations

    def _fix_or_keep(self, value: Any, schema: Any, path: str) -> Any:
        if self.violations is None:
            return self.fix(value, schema, path)
        try:
            return self.fix(value, schema, path)
        except Refused as exc:
            self.violations.append(str(exc))
            return value

    def _deref(self, schema: dict, path: str) -> dict:
        seen = 0
        while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and seen < 32:
            ref = schema["$ref"]
            if not ref.startswith("#"):
                return {}
            target: Any = self.root
            for part in [p for p in ref[1:].split("/") if p]:
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, dict) or part not in target:
                    return {}  # an unresolvable reference constrains nothing
                target = target[part]
            schema, seen = target, seen + 1
        return schema if isinstance(schema, dict) else {}

    def fix(self, value: Any, schema: Any, path: str) -> Any:
        if schema is False:
            raise Refused(f"{path}: not allowed")
        if not isinstance(schema, dict):
            return value
        schema = self._deref(schema, path)
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                value = self._one_of(value, schema[key], path)
        if isinstance(schema.get("allOf"), list):
            for branch in schema["allOf"]:
                value = self.fix(value, branch, path)
        kinds = _types(schema)
        if kinds is None and ("properties" in schema or "required" in schema) and isinstance(value, dict):
            kinds = ["object"]
        if kinds is not None and not any(_is_type(value, k) for k in kinds):
            value = self._coerce(value, kinds, schema, path)
        if "enum" in schema and isinstance(schema["enum"], list):
            value = self._enum(value, schema["enum"], path)
        if "const" in schema and not _same(value, schema["const"]):
            raise Refused(f"{path}: must be {json.dumps(schema['const'])}")
        if isinstance(value, dict):
            return self._object(value, schema, path)
        if isinstance(value, list):
            return self._array(value, schema, path)
        return value

    def _one_of(self, value: Any, branches: list, path: str) -> Any:
        exact = _Checker(self.root, repair=False)
        for branch in branches:
            try:
                return exact.fix(copy.deepcopy(value), branch, path)
            except Refused:
                continue
        if self.repair:
            strict = _Checker(self.root, repair=True)
            for branch in branches:
                try:
                    return strict.fix(copy.deepcopy(value), branch, path)
                except Refused:
                    continue
        raise Refused(f"{path}: matches none of the allowed shapes")

    def _coerce(self, value: Any, kinds: list[str], schema: dict, path: str) -> Any:
        want = " or ".join(kinds)
        if not self.repair:
            raise Refused(f"{path}: expected {want}, got {_type_name(value)}")
        if isinstance(value, str):
            text = value.strip()
            if "object" in kinds or "array" in kinds:
                try:
                    parsed = json.loads(text, strict=False)
                except ValueError:
                    parsed = None
                if parsed is None and text[:1] in "{[":
                    parsed = _python_literal(text)
                if any(_is_type(parsed, k) for k in kinds if k in ("object", "array")):
                    return parsed
            if "integer" in kinds:
                if _INT_RE.fullmatch(text):
                    return int(text)
                if _FLOAT_RE.fullmatch(text) and float(text).is_integer():
                    return int(float(text))
            if "number" in kinds and _FLOAT_RE.fullmatch(text):
                number = float(text)
                if math.isfinite(number):
                    return int(text) if _INT_RE.fullmatch(text) else number
            if "boolean" in kinds and text.lower() in ("true", "false"):
                return text.lower() == "true"
            if "null" in kinds and text.lower() in ("null", "none"):
                return None
        elif isinstance(value, float) and not isinstance(value, bool):
            if "integer" in kinds and value.is_integer():
                return int(value)
            if "string" in kinds and math.isfinite(value):
                return json.dumps(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            if "string" in kinds:
                return str(value)
        if "array" in kinds and not isinstance(value, list) and value is not None:
            items = schema.get("items")
            if not isinstance(items, list):  # tuple-form items: a single value is ambiguous
                try:
                    return [self.fix(value, items if items is not None else {}, f"{path}[0]")]
                except Refused:
                    pass
        raise Refused(f"{path}: expected {want}, got {_type_name(value)}")

    def _enum(self, value: Any, allowed: list, path: str) -> Any:
        if any(_same(value, option) for option in allowed):
            return value
        if self.repair:
            if isinstance(value, str):
                folded = [o for o in allowed if isinstance(o, str) and o.lower() == value.lower()]
                if len(folded) == 1:
                    return folded[0]
                loose = [o for o in allowed if not isinstance(o, str) and json.dumps(o) == value.strip()]
                if len(loose) == 1:
                    return loose[0]
            elif value is not None:
                loose = [o for o in allowed if isinstance(o, str) and o == json.dumps(value)]
                if len(loose) == 1:
                    return loose[0]
        raise Refused(f"{path}: {json.dumps(value, ensure_ascii=False)[:60]} is not one of "
                      f"{json.dumps(allowed, ensure_ascii=False)[:120]}")

    def _object(self, value: dict, schema: dict, path: str) -> dict:
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        required = [r for r in schema.get("required") or [] if isinstance(r, str)]
        extra = schema.get("additionalProperties", True)
        out: dict = {}
        for key, item in value.items():
            name = key
            if key not in props and self.repair:
                folded = [p for p in props if p.lower() == key.lower() and p not in value]
                if len(folded) == 1:
                    name = folded[0]
            where = f"{path}.{name}"
            if name in props:
                optional = name not in required
                if item is None and optional and self.repair and not _allows_null(self._deref(props[name], where)):
                    continue  # null for an optional field: the model meant "not given"
                out[name] = self._fix_or_keep(item, props[name], where)
            elif extra is False:
                self._refuse(f"{where}: unknown field")
                out[name] = item
            elif isinstance(extra, dict):
                out[name] = self._fix_or_keep(item, extra, where)
            else:
                out[name] = item
        for name in required:
            if name not in out:
                self._refuse(f"{path}.{name}: required field missing")
        return out

    def _refuse(self, reason: str) -> None:
        if self.violations is None:
            raise Refused(reason)
        self.violations.append(reason)

    def _array(self, value: list, schema: dict, path: str) -> list:
        items = schema.get("items")
        if isinstance(items, list):
            extra = schema.get("additionalItems", True)
            out = []
            for i, item in enumerate(value):
                sub = items[i] if i < len(items) else extra
                out.append(self._fix_or_keep(item, sub, f"{path}[{i}]"))
            return out
        if isinstance(items, (dict, bool)):
            return [self._fix_or_keep(item, items, f"{path}[{i}]") for i, item in enumerate(value)]
        return value


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b
