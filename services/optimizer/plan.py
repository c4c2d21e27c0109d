"""A fitting plan and how it rewrites a conversation.

A plan names what is done to which original message, by index, so applying the same plan to
the same conversation extended by new turns rewrites the old part byte for byte the same way.
That is what keeps the prompt prefix (and the engine's KV cache) stable between turns.

    shortened       ((message, block, keep_chars, approx_tokens), ...): tool results cut to
                    their head and tail
    placeholder_to  tool outputs (and long tool inputs) in messages[:placeholder_to] are
                    replaced by short placeholders
    drop_to         messages before it are removed (messages[0], the task, stays in front
                    while keep_first is true); a note saying so takes their place
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

INPUT_KEEP_CHARS = 300      # long string values of old tool inputs keep this much
INPUT_LONG_CHARS = 1000     # ... when they are longer than this
MEDIA_CHARS = 3000          # size we assume for an image or document block
MESSAGE_OVERHEAD = 12       # chat-template tokens around a message, in characters
BLOCK_OVERHEAD = 8


@dataclass(frozen=True)
class Plan:
    shortened: tuple = ()
    placeholder_to: int = 0
    drop_to: int = 0
    keep_first: bool = True

    def with_short(self, message: int, block: int, keep: int, tokens: int) -> "Plan":
        entries = {(m, b): (k, t) for m, b, k, t in self.shortened}
        entries[(message, block)] = (keep, tokens)
        rows = sorted((m, b, k, t) for (m, b), (k, t) in entries.items())
        return replace(self, shortened=tuple(rows))

    def touched(self) -> int:
        """How many leading messages this plan depends on."""
        last = max((m + 1 for m, _, _, _ in self.shortened), default=0)
        return max(last, self.placeholder_to, self.drop_to)

    def visible_from(self, messages: list[dict]) -> int:
        """Index of the first original message kept after the dropped part (or 0)."""
        return self.drop_to if dropped_count(self, messages) else 0


def keeps_first(plan: Plan, messages: list[dict]) -> bool:
    return plan.keep_first and bool(messages) and messages[0].get("role") == "user"


def dropped_count(plan: Plan, messages: list[dict]) -> int:
    start = 1 if keeps_first(plan, messages) else 0
    return max(0, min(plan.drop_to, len(messages)) - start)


# --- applying -------------------------------------------------------------------------------

def apply(plan: Plan, messages: list[dict]) -> list[dict]:
    """The rewritten conversation. Untouched messages are the very same objects."""
    short = {(m, b): (k, t) for m, b, k, t in plan.shortened}
    dropped = dropped_count(plan, messages)
    out: list[dict] = []
    start = 0
    if dropped:
        marker = text_block(f"[anyclaude: {dropped} earlier messages were removed here to fit "
                            "the context window]")
        if keeps_first(plan, messages):
            first = transform(plan, short, 0, messages[0])
            out.append({**first, "content": [*first["content"], marker]})
        else:
            out.append({"role": "user", "content": [marker]})
        start = plan.drop_to
    for index in range(start, len(messages)):
        out.append(transform(plan, short, index, messages[index]))
    return out


def transform(plan: Plan, short: dict, index: int, message: dict) -> dict:
    old = index < plan.placeholder_to
    content = message.get("content") or []
    new_content, changed = [], False
    for b, block in enumerate(content):
        kind = block.get("type")
        new = block
        if kind == "tool_result":
            if old:
                new = placeholder(block)
            elif (index, b) in short:
                new = shorten(block, *short[(index, b)])
        elif kind == "tool_use" and old:
            new = shorten_input(block)
        changed = changed or new is not block
        new_content.append(new)
    if not changed:
        return message
    return {**message, "content": new_content}


def text_block(text: str) -> dict:
    return {"type": "text", "text": text}


def _is_text(part: dict) -> bool:
    return part.get("type") == "text" or (
        part.get("type") == "document" and str(part.get("media_type", "")).startswith("text/"))


def result_text(block: dict) -> str:
    """The text of a tool result (text parts and plain-text documents)."""
    content = block.get("content") or []
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text", "") if part.get("type") == "text" else part.get("data", "")
                     for part in content if _is_text(part))


def placeholder(block: dict) -> dict:
    chars = len(result_text(block))
    return {**block, "content": [text_block(
        f"[anyclaude: tool output removed to fit the context window ({chars:,} characters)]")]}


def shorten(block: dict, keep: int, tokens: int) -> dict:
    """Keep the head (two thirds) and tail of the text; media parts stay as they are."""
    text = result_text(block)
    if len(text) <= keep:
        return block
    head_len = keep * 2 // 3
    head = text[:head_len]
    cut = head.rfind("\n", head_len * 4 // 5)
    if cut > 0:
        head = head[:cut + 1]
    tail = text[len(text) - (keep - head_len):] if keep > head_len else ""
    nl = tail.find("\n", 0, max(1, len(tail) // 5))
    if nl >= 0:
        tail = tail[nl + 1:]
    removed = len(text) - len(head) - len(tail)
    note = f"\n[… {removed:,} characters (≈{tokens:,} tokens) cut by anyclaude …]\n"
    content = block.get("content")
    media = [p for p in content if not _is_text(p)] if isinstance(content, list) else []
    return {**block, "content": [text_block(head + note + tail), *media]}


def shorten_input(block: dict) -> dict:
    """Long string values of an old tool call's input (a whole file written, say) cut short."""
    value = block.get("input")
    new = _shorten_strings(value)
    return block if new is value else {**block, "input": new}


def _shorten_strings(value):
    if isinstance(value, str) and len(value) > INPUT_LONG_CHARS:
        return (value[:INPUT_KEEP_CHARS]
                + f"[… {len(value) - INPUT_KEEP_CHARS:,} characters cut by anyclaude …]")
    if isinstance(value, dict):
        items = {k: _shorten_strings(v) for k, v in value.items()}
        return value if all(items[k] is value[k] for k in value) else items
    if isinstance(value, list):
        items = [_shorten_strings(v) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


# --- sizes (characters; the fitting turns them into tokens with a measured ratio) ----------

def message_chars(message: dict) -> int:
    return MESSAGE_OVERHEAD + sum(block_chars(b) for b in message.get("content") or [])


def block_chars(block: dict) -> int:
    kind = block.get("type")
    if kind == "text":
        size = len(block.get("text", ""))
    elif kind == "tool_use":
        size = len(block.get("name", "")) + len(json.dumps(block.get("input"), ensure_ascii=False))
    elif kind == "tool_result":
        content = block.get("content") or []
        size = len(result_text(block)) + (
            MEDIA_CHARS * sum(1 for p in content if not _is_text(p))
            if isinstance(content, list) else 0)
    elif kind == "thinking":
        size = len(block.get("thinking", ""))
    elif kind in ("image", "document"):
        size = MEDIA_CHARS
    else:
        size = len(json.dumps(block, ensure_ascii=False, default=str))
    return BLOCK_OVERHEAD + size


def fixed_chars(request: dict) -> int:
    """System prompt and tools: the part no fitting step touches."""
    return (sum(len(s) for s in request.get("system") or [])
            + len(json.dumps(request.get("tools") or [], ensure_ascii=False)))


# --- where a conversation may be cut -------------------------------------------------------

def boundaries(messages: list[dict]) -> list[int]:
    """Indices c >= 1 where messages[c:] can start without splitting a tool call from its
    result: no tool_result at or after c answers a tool_use before c."""
    where: dict[str, int] = {}
    for i, message in enumerate(messages):
        for block in message.get("content") or []:
            if block.get("type") == "tool_use" and "id" in block:
                where.setdefault(block["id"], i)
    blocked = [0] * (len(messages) + 1)
    for i, message in enumerate(messages):
        for block in message.get("content") or []:
            if block.get("type") == "tool_result":
                use = where.get(block.get("tool_use_id"))
                if use is not None and use < i:   # c in (use, i] would orphan this result
                    blocked[use + 1] += 1
                    blocked[i + 1] -= 1
    out, running = [], 0
    for c in range(1, len(messages)):
        running += blocked[c]
        if running == 0:
            out.append(c)
    return out


def last_user(messages: list[dict]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return i
    return len(messages) - 1
