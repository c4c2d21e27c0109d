"""Helpers shared by the engine tests (imported by name: tests/engine is on sys.path)."""

from __future__ import annotations

CONTEXT_WINDOW = 2048
MAX_OUTPUT = 64
PREFILL_STEP = 64


def make_request(text="hello", **overrides):
    request = {
        "model": "tiny", "system": [], "tools": [], "tool_choice": None,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
        "max_tokens": 32, "temperature": 0.0, "top_p": None, "top_k": None,
        "stop_sequences": [], "thinking": False,
    }
    request.update(overrides)
    return request


def run(core, request, cancelled=lambda: False):
    out = []
    core.generate(request, out.append, cancelled)
    return out


def events_of(messages):
    from anyclaude.messages import Delta
    return [e for m in messages if isinstance(m, Delta) for e in m.events]


def text_of(messages, kind="text"):
    return "".join(e["text"] for e in events_of(messages) if e["type"] == kind)


BASH_TOOL = {"name": "Bash", "description": "Run a shell command.",
             "input_schema": {"type": "object", "properties": {"command": {"type": "string"}},
                              "required": ["command"]}}
