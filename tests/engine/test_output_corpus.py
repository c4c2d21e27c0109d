"""Corpus-driven tests of the output parser: realistic model outputs per tool-call family
(tests/engine/corpus/*.json) with the events they must give.

Every case is fed whole, one character at a time, in two pieces split at every boundary,
and in random small pieces (fixed seeds); each way must give the expected events once
consecutive text / thinking events are merged. Expected events are written compactly:
{"text": …}, {"thinking": …}, {"tool": NAME, "input": {…}} (tool_start + tool_args + tool_end).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from anyclaude.services.engine.parsing.output import FAMILIES, OutputParser
from anyclaude.services.engine.parsing.toolcall_scan import TOOL_FAMILIES

CORPUS = Path(__file__).parent / "corpus"
TOOLS = json.loads((CORPUS / "tools.json").read_text(encoding="utf-8"))
ID_RE = re.compile(r"^toolu_[0-9A-Za-z]{24}$")


def load_cases():
    cases = []
    for path in sorted(CORPUS.glob("*.json")):
        if path.name == "tools.json":
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        for case in data["cases"]:
            cases.append(pytest.param({**data["defaults"], **case}, id=f"{path.stem}:{case['name']}"))
    return cases


CASES = load_cases()


def expand(expected: list[dict]) -> list[dict]:
    out = []
    for item in expected:
        if "text" in item:
            out.append({"type": "text", "text": item["text"]})
        elif "thinking" in item:
            out.append({"type": "thinking", "text": item["thinking"]})
        else:
            out.append({"type": "tool_start", "id": "ID", "name": item["tool"]})
            out.append({"type": "tool_args",
                        "json": json.dumps(item["input"], ensure_ascii=False, separators=(",", ":"))})
            out.append({"type": "tool_end"})
    return out


def merge(events: list[dict]) -> list[dict]:
    out: list[dict] = []
    for event in events:
        if out and event["type"] in ("text", "thinking") and out[-1]["type"] == event["type"]:
            out[-1] = {**out[-1], "text": out[-1]["text"] + event["text"]}
        else:
            out.append(dict(event))
    return out


def run(case: dict, pieces: list[str]) -> tuple[list[dict], OutputParser]:
    parser = OutputParser(family=case["family"], tools=TOOLS, thinking=case.get("thinking", True),
                          starts_in_thinking=case.get("starts_in_thinking", False),
                          special_tokens=case.get("special_tokens", ()))
    events = []
    for piece in pieces:
        events += parser.feed(piece)
    events += parser.finish()
    return events, parser


def normalized(events: list[dict]) -> list[dict]:
    out = merge(events)
    for event in out:
        assert all(isinstance(v, str) for v in event.values()), event
        if event["type"] in ("text", "thinking"):
            assert event["text"], "empty text event"
        if event["type"] == "tool_start":
            assert ID_RE.match(event["id"]), event["id"]
            event["id"] = "ID"
    return out


def random_pieces(text: str, seed: int, most: int = 6) -> list[str]:
    rng = random.Random(seed)
    pieces, i = [], 0
    while i < len(text):
        n = rng.randint(1, most)
        pieces.append(text[i:i + n])
        i += n
    return pieces


@pytest.mark.parametrize("case", CASES)
def test_corpus_case(case):
    text, expected = case["output"], expand(case["expected"])
    with capture_logs() as logs:
        events, parser = run(case, [text])
    assert normalized(events) == expected
    warnings = [e for e in logs if e["log_level"] == "warning"]
    unparsed = [w for w in warnings if w["event"] == "engine.toolcall.unparsed"]
    invalid = [w for w in warnings if w["event"] == "engine.toolcall.invalid"]
    assert len(unparsed) == case.get("warnings", 0), warnings
    assert len(invalid) == case.get("invalid", 0), warnings   # violations passed on
    assert len(unparsed) + len(invalid) == len(warnings), warnings
    assert all(w["reason"] for w in unparsed) and all(w["violations"] for w in invalid)
    calls = sum(1 for e in expected if e["type"] == "tool_start")
    assert parser.tool_calls == calls
    ids = [e["id"] for e in events if e["type"] == "tool_start"]
    assert len(set(ids)) == len(ids)
    for event in events:
        if event["type"] == "tool_args":
            assert isinstance(json.loads(event["json"]), dict)


@pytest.mark.parametrize("case", CASES)
def test_corpus_case_chunked(case):
    text, expected = case["output"], expand(case["expected"])
    splits = [list(text)]                                          # token by token, worst case
    splits += [[text[:k], text[k:]] for k in range(1, len(text))]  # every boundary
    splits += [random_pieces(text, seed) for seed in range(5)]
    for pieces in splits:
        events, parser = run(case, pieces)
        assert normalized(events) == expected, pieces
        assert parser.tool_calls == sum(1 for e in expected if e["type"] == "tool_start")


def test_corpus_covers_every_family():
    families = {c.values[0]["family"] for c in CASES}
    assert families == set(FAMILIES)
    for family in FAMILIES:
        if family == "none":
            continue
        cases = [c.values[0] for c in CASES if c.values[0]["family"] == family]
        assert len(cases) >= (10 if family in TOOL_FAMILIES else 4), family
        assert any(c.get("warnings") for c in cases), f"{family}: no malformed case"
        assert any(c.get("truncated") for c in cases), f"{family}: no truncated-call case"
        assert any(sum("tool" in e for e in c["expected"]) >= 2 for c in cases), f"{family}: no two-call case"


@pytest.mark.parametrize("case", [c for c in CASES if c.values[0].get("truncated")])
def test_truncated_call_is_never_a_tool_use(case):
    """A call cut by max_tokens / a stop sequence stays visible text in every family, and
    still is when cut at any earlier point of the output."""
    text = case["output"]
    for k in range(1, len(text) + 1):
        events, parser = run(case, [text[:k]])
        assert parser.tool_calls == 0, text[:k]
        shown = "".join(e["text"] for e in events if e["type"] in ("text", "thinking"))
        assert shown.strip() or not text[:k].strip(), text[:k]
