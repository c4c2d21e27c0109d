"""Internal-request builders shared by the engine and backend tests.

Imported by name: tests/ is on sys.path for the backend tests (a package under it), and
tests/engine/engine_helpers.py puts it there for the engine tests.
"""

from __future__ import annotations


def make_request(text="hello", **overrides):
    """A one-turn internal request (the shape in anyclaude/messages.py), greedy by default."""
    request = {
        "model": "tiny", "system": [], "tools": [], "tool_choice": None,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
        "max_tokens": 32, "temperature": 0.0, "top_p": None, "top_k": None,
        "stop_sequences": [], "thinking": False,
    }
    request.update(overrides)
    return request


def run(core, request, cancelled=lambda: False):
    """Every frame one ``core.generate`` call sends."""
    out = []
    core.generate(request, out.append, cancelled)
    return out


def events_of(frames):
    from anyclaude.messages import Delta
    return [e for m in frames if isinstance(m, Delta) for e in m.events]


def text_of(frames, kind="text"):
    return "".join(e["text"] for e in events_of(frames) if e["type"] == kind)
