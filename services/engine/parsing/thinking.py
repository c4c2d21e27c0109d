"""The inside of a reasoning block, streamed up to its closing marker.

Families mark reasoning differently (``THINK_PAIRS``): ``<think>`` (Qwen, DeepSeek, GLM,
Kimi, MiniMax), ``[THINK]`` (Magistral / Mistral reasoning), ``<seed:think>`` (Seed-OSS),
``<longcat_think>``, ``<|think:start|>``, Gemma 4's ``<|channel>thought`` … ``<channel|>`` and
Kimi K3's ``<|open|>think<|sep|>``. A block opened by one pair ends only at that pair's
closing marker; a block the template opened (``starts_in_thinking``) ends at any of them.

Whitespace is trimmed the way a reader expects: the newline(s) after the opening marker and
before the closing one are not part of the thought. Trailing whitespace is therefore held
back until more thought follows. A repeated opening marker at the very start is dropped (the
template opened the block and the model opened it again).
"""

from __future__ import annotations

from anyclaude.services.engine.parsing.toolcall_base import PARTIAL, hold_len, lit, skip_ws

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
THINK_PAIRS = ((THINK_OPEN, THINK_CLOSE), ("[THINK]", "[/THINK]"),
               ("<seed:think>", "</seed:think>"), ("<longcat_think>", "</longcat_think>"),
               ("<|think:start|>", "<|think:end|>"), ("<|channel>thought", "<channel|>"),
               ("<|open|>think<|sep|>", "<|close|>think<|sep|>"))
THINK_MARKERS = frozenset(m for pair in THINK_PAIRS for m in pair)


def closer_of(opener: str) -> str:
    return next(close for open_, close in THINK_PAIRS if open_ == opener)


class ThinkBlock:
    def __init__(self, opener: str | None = None) -> None:
        pairs = [p for p in THINK_PAIRS if opener is None or p[0] == opener]
        self._opens = tuple(p[0] for p in pairs)
        self._closes = tuple(p[1] for p in pairs)
        self._buf = ""
        self._fresh = True   # nothing emitted yet
        self._ws = ""        # trailing whitespace held back

    def _reopened(self, i: int) -> int | str | None:
        found = [lit(self._buf, i, word) for word in self._opens]
        ends = [f for f in found if isinstance(f, int)]
        if ends:
            return ends[0]
        return PARTIAL if PARTIAL in found else None

    def _close_at(self) -> tuple[int, str] | None:
        hits = [(self._buf.find(c), c) for c in self._closes]
        hits = [h for h in hits if h[0] >= 0]
        return min(hits) if hits else None

    def feed(self, text: str, final: bool = False) -> tuple[list[str], str | None]:
        """Thinking texts, and the text after the closing marker once it is seen (else None).
        With ``final`` everything held back is settled (trailing whitespace is dropped)."""
        self._buf += text
        out: list[str] = []
        while self._fresh:
            i = skip_ws(self._buf, 0)
            opened = self._reopened(i)
            if (i == len(self._buf) or opened == PARTIAL) and not final:
                return out, None
            if isinstance(opened, int):
                self._buf = self._buf[opened:]
                continue
            self._buf = self._buf[i:]
            self._fresh = False
        found = self._close_at()
        if found is not None:
            at, close = found
            self._emit(self._buf[:at], out)
            rest = self._buf[at + len(close):]
            self._buf, self._ws = "", ""
            return out, rest
        keep = 0 if final else hold_len(self._buf, self._closes)
        self._emit(self._buf[:len(self._buf) - keep], out)
        self._buf = self._buf[len(self._buf) - keep:]
        if final:
            self._ws = ""
        return out, None

    def _emit(self, text: str, out: list[str]) -> None:
        if not text:
            return
        text = self._ws + text
        kept = text.rstrip()
        self._ws = text[len(kept):]
        if kept:
            out.append(kept)
