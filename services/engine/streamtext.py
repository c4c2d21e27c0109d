"""Token ids -> text, incrementally; stop sequences on that text; coalescing of events.

mlx-lm's BPE streaming detokenizer drops a leading space of the first token and holds
single spaces back, so forced texts would not come out exactly. ``IncrementalDecoder``
decodes with the tokenizer itself over a short window (the "prefix offset" method): exact
for byte-level BPE, and right for SentencePiece, whose decode depends on the previous token.
"""

from __future__ import annotations

import time


class IncrementalDecoder:
    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0    # start of the window decoded for context
        self._read = 0      # everything before this has been returned as text

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=False,
                                      clean_up_tokenization_spaces=False)

    def add(self, token: int) -> str:
        """Text that ``token`` completes ("" while a multi-byte character is unfinished)."""
        self._ids.append(token)
        return self._take(final=False)

    def flush(self) -> str:
        return self._take(final=True) if self._read < len(self._ids) else ""

    def _take(self, *, final: bool) -> str:
        before = self._decode(self._ids[self._prefix:self._read])
        after = self._decode(self._ids[self._prefix:])
        if len(after) > len(before) and (final or not after.endswith("\ufffd")):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before):]
        return ""


class StopMatcher:
    """Finds the first stop sequence in streamed text. Text is released as soon as it can no
    longer be part of a stop sequence (at most the longest stop minus one character is held
    back); text from a match on is never released."""

    def __init__(self, stop_sequences: list[str]):
        self.stops = [s for s in stop_sequences or [] if s]
        self._hold = max((len(s) for s in self.stops), default=1) - 1
        self._buffer = ""
        self.matched: str | None = None

    def feed(self, text: str) -> str:
        if self.matched is not None:
            return ""
        if not self.stops:
            return text
        self._buffer += text
        hits = [(self._buffer.find(s), -len(s), s) for s in self.stops if s in self._buffer]
        if hits:
            index, _, stop = min(hits)  # earliest match; the longest one at the same place
            self.matched = stop
            out, self._buffer = self._buffer[:index], ""
            return out
        keep = self._partial_match(self._buffer)
        cut = len(self._buffer) - keep
        out, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return out

    def _partial_match(self, text: str) -> int:
        """Length of the longest end of ``text`` that begins some stop sequence."""
        for k in range(min(self._hold, len(text)), 0, -1):
            tail = text[-k:]
            if any(s.startswith(tail) for s in self.stops):
                return k
        return 0

    def flush(self) -> str:
        out, self._buffer = ("" if self.matched is not None else self._buffer), ""
        return out


def merge_events(events: list[dict]) -> list[dict]:
    """Join consecutive text / thinking / tool_args events into one."""
    out: list[dict] = []
    for event in events:
        prev = out[-1] if out else None
        kind = event["type"]
        if prev is not None and prev["type"] == kind and kind in ("text", "thinking", "tool_args"):
            key = "json" if kind == "tool_args" else "text"
            out[-1] = {**prev, key: prev[key] + event[key]}
        else:
            out.append(dict(event))
    return out


class EventBatcher:
    """Collects neutral events and sends them as one Delta at most every ``interval``
    seconds (the first batch at once), so fast decoding does not send a frame per token."""

    def __init__(self, send, *, interval: float = 0.03, clock=time.monotonic):
        self._send = send
        self._interval = interval
        self._clock = clock
        self._pending: list[dict] = []
        self._last = None
        self.sent_any = False

    def add(self, events: list[dict]) -> None:
        if not events:
            return
        self._pending.extend(events)
        now = self._clock()
        if self._last is None or now - self._last >= self._interval:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        if self._pending:
            events, self._pending = merge_events(self._pending), []
            self._send(events)
            self.sent_any = True
            self._last = self._clock() if now is None else now
