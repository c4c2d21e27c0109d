"""The note a reply starts with when the optimizer left part of the conversation out.

The optimizer fits a conversation that outgrew the model's window by leaving out (or
shortening) older messages. The user must see that happen, so the front door starts that
reply with one bracketed line (``render``), and reports the usage of the conversation as
the client sent it (``CUT_KEY`` carries the numbers from the optimizer to the front door).
The client sends the line back inside the assistant message on its next turn; the optimizer
takes it out again (``strip``) so the model never sees it and the prompt matches the cached
generation byte for byte.
"""

from __future__ import annotations

import re

CUT_KEY = "anyclaude_context_cut"   # in the request the optimizer returns; the front door pops it
PREFIX = "[anyclaude: "
_NOTICE = re.compile(r"\[anyclaude: [^\]\n]*\]\n\n")


def render(cut: dict) -> str:
    """``cut``: client_tokens, prompt_tokens, window, and what was done (counts)."""
    done = []
    if cut.get("dropped_messages"):
        done.append(f"the {cut['dropped_messages']} oldest messages were left out")
    if cut.get("placeholder_tool_results"):
        done.append(f"{cut['placeholder_tool_results']} old tool outputs were replaced by a "
                    "placeholder")
    if cut.get("shortened_tool_results"):
        done.append(f"{cut['shortened_tool_results']} tool results were shortened")
    what = "; ".join(done) or "older messages were shortened"
    return (f"{PREFIX}this conversation is {cut['client_tokens']:,} tokens, more than the "
            f"model's {cut['window']:,}-token window takes: {what}, so the model saw "
            f"{cut['prompt_tokens']:,} tokens. Run /compact to summarize the conversation "
            "instead; Claude Code also does it by itself on the next turn.]\n\n")


def strip(messages: list[dict]) -> tuple[list[dict], int]:
    """The messages without notices in assistant text blocks; how many were removed."""
    out, removed = [], 0
    for message in messages:
        if message.get("role") != "assistant" or not any(
                _has_notice(b) for b in message.get("content") or []):
            out.append(message)
            continue
        blocks = []
        for block in message["content"]:
            if _has_notice(block):
                text, n = _NOTICE.subn("", block["text"], count=1)
                removed += n
                if not text:
                    continue
                block = {**block, "text": text}
            blocks.append(block)
        out.append({**message, "content": blocks or [{"type": "text", "text": ""}]})
    return out, removed


def _has_notice(block: dict) -> bool:
    return (block.get("type") == "text" and isinstance(block.get("text"), str)
            and block["text"].startswith(PREFIX) and _NOTICE.match(block["text"]) is not None)
