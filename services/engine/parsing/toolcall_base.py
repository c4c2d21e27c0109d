"""Shared pieces of the tool-call readers: the candidate they produce, the reader protocol,
and small matching helpers that tell "matches", "cannot match" and "too early to say" apart.

A reader is created when the content scanner meets the start of a call. It owns ``raw``:
everything from that start on (the scanner hands it every later piece of text). ``step``
looks at ``raw`` and either waits for more text or decides where the call ended: ``end`` is
then an index into ``raw``; what follows it goes back to the scanner as ordinary output.
``items`` holds what was read: parsed calls, or pieces that could not be parsed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PARTIAL = "partial"      # the text so far is a proper prefix of what is looked for
WS = " \t\r\n"


@dataclass
class Candidate:
    """One call as read from the text, before the tool and its schema are consulted.

    ``args`` is a dict for JSON calls, and a list of ``(key, raw string)`` pairs for
    Qwen3-Coder XML calls (``xml=True``), whose values are typed by the schema later.
    ``error`` is set when the text could not be read as a call; ``raw`` is always the exact
    text the call was read from, shown to the user as is when the call is not usable.
    ``incomplete``: the output ended before the call was closed (max_tokens, a stop
    sequence): such a call is never executed. ``body``: the XML function text, read again
    once the tool's parameter names are known.
    """

    raw: str
    name: str | None = None
    args: Any = None
    xml: bool = False
    error: str | None = None
    incomplete: bool = False
    body: str | None = None


@dataclass
class Reader:
    raw: str
    start: int = 0                  # where the call's own marker begins in ``raw``
    closer: str | None = None       # a fence / wrapper tag opened just before it, closed after
    end: int | None = None
    items: list[Candidate] = field(default_factory=list)

    def feed(self, text: str) -> None:
        self.raw += text

    def step(self, final: bool) -> bool:  # pragma: no cover - interface
        """Consume what can be consumed; True once ``end`` and ``items`` are set."""
        raise NotImplementedError

    def fail(self, reason: str, end: int | None = None, incomplete: bool = False) -> bool:
        self.end = len(self.raw) if end is None else end
        self.items = [Candidate(raw=self.raw[:self.end], error=reason, incomplete=incomplete)]
        return True


def skip_ws(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in WS:
        i += 1
    return i


def lit(text: str, i: int, word: str) -> int | str | None:
    """Index after ``word`` at ``i``; PARTIAL if the text ends inside it; None if not there."""
    if text.startswith(word, i):
        return i + len(word)
    rest = text[i:]
    if len(rest) < len(word) and word.startswith(rest):
        return PARTIAL
    return None


def is_prefix(text: str, i: int, word: str) -> bool:
    """The text from ``i`` to its end is a (possibly empty) proper prefix of ``word``."""
    rest = text[i:]
    return len(rest) < len(word) and word.startswith(rest)


def hold_len(text: str, words) -> int:
    """Length of the longest end of ``text`` that is a proper prefix of one of ``words``:
    the part that must be held back until the next piece of text decides it."""
    best = 0
    for word in words:
        for k in range(min(len(word) - 1, len(text)), best, -1):
            if text.endswith(word[:k]):
                best = k
                break
    return best
