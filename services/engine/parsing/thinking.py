"""The inside of a ``<think>`` block, streamed up to ``</think>``.

Whitespace is trimmed the way a reader expects: the newline(s) after ``<think>`` and before
``</think>`` are not part of the thought. Trailing whitespace is therefore held back until
more thought follows. A repeated ``<think>`` at the very start is dropped (the template
opened the block and the model opened it again).
"""

from __future__ import annotations

from anyclaude.services.engine.parsing.toolcall_base import PARTIAL, hold_len, lit, skip_ws

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


class ThinkBlock:
    def __init__(self) -> None:
        self._buf = ""
        self._fresh = True   # nothing emitted yet
        self._ws = ""        # trailing whitespace held back

    def feed(self, text: str, final: bool = False) -> tuple[list[str], str | None]:
        """Thinking texts, and the text after ``</think>`` once it is seen (else None).
        With ``final`` everything held back is settled (trailing whitespace is dropped)."""
        self._buf += text
        out: list[str] = []
        while self._fresh:
            i = skip_ws(self._buf, 0)
            opened = lit(self._buf, i, THINK_OPEN)
            if (i == len(self._buf) or opened == PARTIAL) and not final:
                return out, None
            if isinstance(opened, int):
                self._buf = self._buf[opened:]
                continue
            self._buf = self._buf[i:]
            self._fresh = False
        at = self._buf.find(THINK_CLOSE)
        if at >= 0:
            self._emit(self._buf[:at], out)
            rest = self._buf[at + len(THINK_CLOSE):]
            self._buf, self._ws = "", ""
            return out, rest
        keep = 0 if final else hold_len(self._buf, (THINK_CLOSE,))
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
