"""Automatic reductions: make a system prompt and tool list that are too big for a small
window fit, by themselves, in tiers.

Claude Code sends ~20-28K tokens of system prompt and tools before the first word of the
conversation. When that fixed part takes more than ``auto_reduce_above`` of the prompt
limit (the window less the output floor), tiers run in order until it takes at most
``auto_reduce_to`` of it:

1. ``tool_descriptions``: every tool description cut to ``DESCRIPTION_CHARS`` and every
   parameter description in the input schemas to ``PARAMETER_DESCRIPTION_CHARS``.
2. ``core_tools``: only the profile's ``core_tools`` are offered, plus any tool the
   conversation already called, the one ``tool_choice`` names and the server tools the
   client asked for (web_search).
3. ``system_sections``: markdown sections of the system prompt dropped, largest first
   (``PROTECTED_SECTIONS`` stay), only as many as needed.

Then context fitting cuts the conversation as for any request.

Which tiers run is decided from the system prompt and tools alone (never from the growing
conversation), once per distinct system+tools+model+limit, and remembered: every turn of a
session gets the same tiers and the same dropped sections, so the reduced prefix is byte
for byte the same turn after turn and the prefix cache keeps hitting.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from anyclaude.optimizer_config import ProfileConfig

from . import reductions
from .sessions import canonical

log = structlog.get_logger()

TIERS = ("tool_descriptions", "core_tools", "system_sections")
DESCRIPTION_CHARS = 200
PARAMETER_DESCRIPTION_CHARS = 100
PROTECTED_SECTIONS = ("environment",)   # the working directory, platform, date: keep
SECTION_LEVELS = 2                      # "#" and "##" headings are candidates
TEMPLATE_SLACK = 64                     # tokens a chat template may add per tool (bound)
PROBE = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


@dataclass(frozen=True)
class Decision:
    tiers: tuple = ()            # tier names that ran, in order
    sections: tuple = ()         # headings tier 3 drops
    fixed_before: int = 0        # tokens of system + tools (+ a one-word message) before
    fixed_after: int = 0         # ... and after the tiers


class AutoReducer:
    """Decides the tiers for a system+tools once and applies them to every request."""

    def __init__(self, size: int = 64):
        self.size = size
        self._decisions: OrderedDict[str, Decision] = OrderedDict()
        self._lock = threading.Lock()

    def reduce(self, request: dict, *, count: Callable[[dict], int], limit: int,
               profile: ProfileConfig) -> tuple[dict, list[dict]]:
        """(request with the tiers applied, notes). ``limit``: tokens the prompt may use."""
        if not profile.auto_reductions or surely_small(request, limit * profile.auto_reduce_above):
            return request, []
        key = _key(request, limit, profile)
        with self._lock:
            decision = self._decisions.get(key)
            if decision is not None:
                self._decisions.move_to_end(key)
        if decision is None:
            decision = decide(request, count=count, limit=limit, profile=profile)
            with self._lock:
                self._decisions[key] = decision
                while len(self._decisions) > self.size:
                    self._decisions.popitem(last=False)
            if decision.tiers:
                log.info("optimizer.auto_reductions", model=request["model"],
                         tiers=list(decision.tiers), sections=list(decision.sections),
                         fixed_before=decision.fixed_before, fixed_after=decision.fixed_after,
                         limit=limit)
        if not decision.tiers:
            return request, []
        out, removed = apply(request, decision, profile)
        note = {"action": "auto_reduce", "tiers": list(decision.tiers),
                "fixed_tokens_before": decision.fixed_before,
                "fixed_tokens_after": decision.fixed_after,
                "tokens_saved": max(0, decision.fixed_before - decision.fixed_after)}
        if removed:
            note["removed_tools"] = removed
        if decision.sections:
            note["dropped_sections"] = list(decision.sections)
        return out, [note]


def surely_small(request: dict, tokens: float) -> bool:
    """True when system + tools cannot be over ``tokens`` (no count needed): a token is at
    least one byte of UTF-8, and a template adds less than TEMPLATE_SLACK per tool."""
    size = len(canonical([request.get("system"), request.get("tools"), PROBE]))
    return size + TEMPLATE_SLACK * (len(request.get("tools") or []) + 1) <= tokens


def decide(request: dict, *, count: Callable[[dict], int], limit: int,
           profile: ProfileConfig) -> Decision:
    """Run tiers in order until system + tools take at most ``auto_reduce_to`` of the limit."""
    def probe(req: dict) -> int:
        return count({**req, "messages": PROBE})

    before = probe(request)
    if before <= limit * profile.auto_reduce_above:
        return Decision((), (), before, before)
    target = limit * profile.auto_reduce_to
    tiers: list[str] = []
    sections: tuple = ()
    current, tokens = request, before
    for tier in TIERS:
        if tier == "system_sections":
            scale = tokens / max(1, _fixed_chars(current))
            sections = pick_sections(current["system"], (tokens - target) / max(scale, 1e-9))
            candidate = {**current, "system": reductions.drop_sections(current["system"],
                                                                       sections)[0]}
        else:
            candidate = _apply_tier(tier, current, profile)
        if candidate == current:
            continue
        tiers.append(tier)
        current, tokens = candidate, probe(candidate)
        if tokens <= target:
            break
    return Decision(tuple(tiers), sections, before, tokens)


def apply(request: dict, decision: Decision, profile: ProfileConfig) -> tuple[dict, list[str]]:
    """The decided tiers applied to this request: (request, names of tools left out)."""
    out, removed = dict(request), []
    for tier in decision.tiers:
        if tier == "system_sections":
            out["system"] = reductions.drop_sections(out["system"], decision.sections)[0]
        elif tier == "core_tools":
            before = [t.get("name", "") for t in out["tools"]]
            out = _apply_tier(tier, out, profile)
            kept = {t.get("name") for t in out["tools"]}
            removed = [name for name in before if name not in kept]
        else:
            out = _apply_tier(tier, out, profile)
    return out, removed


def _apply_tier(tier: str, request: dict, profile: ProfileConfig) -> dict:
    if tier == "tool_descriptions":
        tools, _, _ = reductions.trim_descriptions(request["tools"], DESCRIPTION_CHARS)
        tools = [{**t, "input_schema": trim_schema(t["input_schema"])}
                 if isinstance(t.get("input_schema"), dict) else t for t in tools]
        return {**request, "tools": tools}
    if tier == "core_tools":
        keep = set(profile.core_tools) | used_tools(request["messages"]) | server_tools(request)
        tools, _, _ = reductions.allowlist(request["tools"], keep, request.get("tool_choice"))
        return {**request, "tools": tools}
    raise ValueError(f"unknown tier {tier}")   # pragma: no cover


def trim_schema(schema, max_chars: int = PARAMETER_DESCRIPTION_CHARS):
    """The schema with every string ``description`` cut to about ``max_chars`` (a property
    that is *named* description has a schema as its value and is walked, not cut)."""
    if isinstance(schema, list):
        return [trim_schema(v, max_chars) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "description" and isinstance(value, str) and len(value) > max_chars:
            out[key] = reductions.trim_text(value, max_chars)
        else:
            out[key] = trim_schema(value, max_chars)
    return out


def used_tools(messages: list[dict]) -> set[str]:
    """Names of the tools the conversation already called."""
    return {b.get("name") for m in messages for b in m.get("content") or []
            if b.get("type") == "tool_use" and isinstance(b.get("name"), str)}


def server_tools(request: dict) -> set[str]:
    """Names of the server tools the client asked for (web_search is offered as a tool)."""
    return {t.get("name") for t in request.get("server_tools") or []
            if isinstance(t, dict) and isinstance(t.get("name"), str)}


def pick_sections(system: list[str], chars_needed: float) -> tuple:
    """Headings to drop, largest section first, until about ``chars_needed`` characters go
    (all unprotected ones if that is not enough). Ties go by position: deterministic."""
    found = sections(system)
    order = sorted(range(len(found)), key=lambda i: (-found[i][1], i))
    chosen, saved = set(), 0
    for i in order:
        if saved >= chars_needed:
            break
        heading, size = found[i]
        if heading.casefold() not in PROTECTED_SECTIONS:
            chosen.add(i)
            saved += size
    return tuple(found[i][0] for i in sorted(chosen))


def sections(system: list[str]) -> list[tuple[str, int]]:
    """(heading text, characters up to the next heading of the same or a higher level) of
    the ``#`` and ``##`` sections outside fenced code, in order of first appearance (a
    heading that repeats is one entry: dropping it drops every such section)."""
    found: list[list] = []              # [heading, level, chars]
    for block in system:
        open_: list[list] = []
        in_code = False
        for line in block.split("\n"):
            if line.lstrip().startswith("```"):
                in_code = not in_code
            match = None if in_code else reductions.HEADING.match(line)
            if match and len(match.group(1)) <= SECTION_LEVELS:
                level = len(match.group(1))
                while open_ and open_[-1][1] >= level:
                    open_.pop()
                entry = [match.group(2), level, 0]
                found.append(entry)
                open_.append(entry)
            for entry in open_:
                entry[2] += len(line) + 1
    merged: dict[str, int] = {}
    for heading, _, size in found:
        merged[heading] = merged.get(heading, 0) + size
    return list(merged.items())


def _fixed_chars(request: dict) -> int:
    return len(canonical([request.get("system"), request.get("tools"), PROBE]))


def _key(request: dict, limit: int, profile: ProfileConfig) -> str:
    digest = hashlib.sha256(canonical([request["model"], limit, request.get("system"),
                                       request.get("tools"), request.get("tool_choice"),
                                       profile.auto_reduce_above, profile.auto_reduce_to,
                                       profile.core_tools]))
    return digest.hexdigest()
