"""Prefix hygiene: make the start of the prompt identical from turn to turn.

Claude Code puts ``x-anthropic-billing-header: cc_version=…; cc_entrypoint=…;`` at the very
start of the system prompt, with a hash that changes per session; left in place it defeats
every prefix cache. We remove that one line (and its block when nothing else is in it) and
touch nothing else.

Tool order: we keep the client's order. It is already stable within a session, and sorting
would not add cache hits (the order is the same every turn either way) while it would change
what the model sees. Key order inside dicts is also left as the client sent it: msgpack keeps
it, and every dict this package creates is built with a fixed key order, so the output is a
pure function of the input.
"""

from __future__ import annotations

BILLING_HEADER = "x-anthropic-billing-header:"


def remove_billing_header(system: list[str]) -> tuple[list[str], bool]:
    """(system blocks without the first billing-header line, whether one was removed)."""
    for index, block in enumerate(system):
        if block.startswith(BILLING_HEADER):
            start = 0
        else:
            found = block.find("\n" + BILLING_HEADER)
            if found < 0:
                continue
            start = found + 1
        end = block.find("\n", start)
        rest = block[:start] + ("" if end < 0 else block[end + 1:])
        if start > 0 and end < 0:
            rest = block[:start - 1]  # the header was the last line: drop its newline too
        out = list(system[:index])
        if rest.strip():
            out.append(rest)
        out.extend(system[index + 1:])
        return out, True
    return list(system), False
