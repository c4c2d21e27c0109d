"""A reply to a conversation the optimizer had to cut: it says so, and its usage counts the
conversation the client sent (anyclaude/context_notice.py has the why).

The notice goes out just before the engine's first output, never earlier: an immediate
refusal (prompt too long, queue full) must still reach the client as an HTTP status.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from anyclaude import context_notice, messages


def with_cut_notice(frames, cut: dict) -> Iterator[messages.Message]:
    """``frames`` with the notice before the first Delta / Done, and the left-out tokens
    added to the Done's usage (as input tokens: the client sent them, no cache held them)."""
    noticed = False
    try:
        for frame in frames:
            if isinstance(frame, (messages.Delta, messages.Done)) and not noticed:
                noticed = True
                yield messages.Delta(events=[{"type": "text",
                                              "text": context_notice.render(cut)}])
            if isinstance(frame, messages.Done):
                usage = dict(frame.usage or {})
                usage["input_tokens"] = int(usage.get("input_tokens") or 0) + cut["left_out_tokens"]
                frame = dataclasses.replace(frame, usage=usage)
            yield frame
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()
