"""A token count that is only an estimate, told apart from an exact one by its type.

``Estimate`` is an ``int``: every caller that adds, compares or prints counts keeps working,
and one that must say so (the engine's ``Counted.estimated``, the front door's
``anyclaude-token-count`` header) asks ``is_estimate(n)``. Arithmetic on it gives a plain
``int``, so a count built from an estimate must be wrapped again where that matters.
"""

from __future__ import annotations

HEADER = "anyclaude-token-count"   # "exact" or "estimate" on count_tokens answers


class Estimate(int):
    """A prompt token count guessed from the request's size, not from a tokenizer."""

    def __repr__(self) -> str:
        return f"Estimate({int(self)})"


def is_estimate(tokens: int) -> bool:
    return isinstance(tokens, Estimate)
