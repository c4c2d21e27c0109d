"""Optional reductions of the fixed part of the prompt (system + tools), per model profile.

Each is off by default, deterministic (the same input always gives the same output, so the
reduced prefix is as cacheable as the original) and reports the characters it removed; the
caller turns characters into tokens once it has an exact count.
"""

from __future__ import annotations

import json
import re

from anyclaude.optimizer_config import ProfileConfig

HEADING = re.compile(r"^(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
ELLIPSIS = " […]"


def apply(request: dict, profile: ProfileConfig) -> tuple[dict, list[dict]]:
    """(request with the profile's reductions applied, notes with ``chars_saved``)."""
    notes: list[dict] = []
    out = dict(request)
    if profile.tool_allowlist:
        out["tools"], removed, saved = allowlist(out["tools"], profile.tool_allowlist,
                                                 out.get("tool_choice"))
        if removed:
            notes.append({"action": "tool_allowlist", "removed": removed, "chars_saved": saved})
    if profile.tool_description_max_chars:
        out["tools"], trimmed, saved = trim_descriptions(out["tools"],
                                                         profile.tool_description_max_chars)
        if trimmed:
            notes.append({"action": "trim_tool_descriptions", "tools": trimmed,
                          "chars_saved": saved})
    if profile.system_drop_sections:
        out["system"], dropped, saved = drop_sections(out["system"], profile.system_drop_sections)
        if dropped:
            notes.append({"action": "drop_system_sections", "sections": dropped,
                          "chars_saved": saved})
    return out, notes


def allowlist(tools: list[dict], allowed, tool_choice) -> tuple[list[dict], list[str], int]:
    """Keep the allowed tools (and the one tool_choice names), in the client's order."""
    keep = set(allowed)
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "tool":
        keep.add(tool_choice.get("name"))
    kept = [t for t in tools if t.get("name") in keep]
    removed = [t.get("name", "") for t in tools if t.get("name") not in keep]
    return kept, removed, _size(tools) - _size(kept)


def trim_descriptions(tools: list[dict], max_chars: int) -> tuple[list[dict], int, int]:
    """Cut each description to about ``max_chars``, at a line or sentence end when one is near."""
    out, trimmed, saved = [], 0, 0
    for tool in tools:
        text = tool.get("description") or ""
        if len(text) <= max_chars:
            out.append(tool)
            continue
        short = trim_text(text, max_chars)
        out.append({**tool, "description": short})
        trimmed += 1
        saved += len(text) - len(short)
    return out, trimmed, saved


def trim_text(text: str, max_chars: int) -> str:
    head = text[:max_chars]
    floor = max_chars * 2 // 3
    for sep in ("\n", ". "):
        cut = head.rfind(sep, floor)
        if cut >= 0:
            head = head[:cut + (1 if sep == ". " else 0)]
            break
    return head.rstrip() + ELLIPSIS


def drop_sections(system: list[str], headings) -> tuple[list[str], list[str], int]:
    """Remove markdown sections whose heading text is listed (case-insensitive), each up to
    the next heading of the same or a higher level (``#`` lines inside fenced code are not
    headings). Blocks left empty are dropped."""
    wanted = {h.strip().lstrip("#").strip().casefold() for h in headings}
    out, dropped, saved = [], [], 0
    for block in system:
        kept_lines, skip_level, in_code = [], 0, False
        for line in block.split("\n"):
            if line.lstrip().startswith("```"):
                in_code = not in_code
            match = None if in_code else HEADING.match(line)
            if match:
                level = len(match.group(1))
                if skip_level and level <= skip_level:
                    skip_level = 0
                if not skip_level and match.group(2).casefold() in wanted:
                    skip_level = level
                    dropped.append(match.group(2))
            if not skip_level:
                kept_lines.append(line)
        new = "\n".join(kept_lines)
        saved += len(block) - len(new)
        if new.strip() or not block.strip():
            out.append(new)
    return out, dropped, saved


def _size(tools: list[dict]) -> int:
    return len(json.dumps(tools, ensure_ascii=False))
