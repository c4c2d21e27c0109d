"""The rendered prompt, handed from the optimizer (which renders and counts it) to the engine
(which runs it), so a request is rendered and tokenized once.

The optimizer puts it into the internal request as ``request["prompt"]`` (see
anyclaude/messages.py); it rides along in ``Optimized`` and ``Generate`` unchanged:

    {"ids": bytes (int32 little-endian token ids), "tokens": int,
     "starts_in_thinking": bool, "prefill": str,
     "pin": int (tokens of the system+tools prefix, for the prefix cache's pin),
     "fingerprint": str (the model it was rendered for),
     "key": str (digest of the request fields the render read)}

The engine uses it only when the fingerprint is its own and the key matches the request it
got: a request changed after rendering (a search-loop continuation run without the
optimizer, say) is rendered again by the engine, never run with stale ids.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from array import array

from anyclaude.prompt.template import ChatRenderer, Rendered

RENDER_FIELDS = ("system", "tools", "messages", "tool_choice", "thinking")


def render_key(request: dict) -> str:
    """A digest of everything ChatRenderer.render_prompt reads from a request."""
    data = json.dumps([request.get(k) for k in RENDER_FIELDS], sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.blake2b(data.encode(), digest_size=16).hexdigest()


def pack_ids(ids: list[int]) -> bytes:
    packed = array("i", ids)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def unpack_ids(data: bytes) -> list[int]:
    packed = array("i")
    packed.frombytes(data)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tolist()


def pack(rendered: Rendered, *, key: str, fingerprint: str, pin: int) -> dict:
    return {"ids": pack_ids(rendered.ids), "tokens": len(rendered.ids),
            "starts_in_thinking": rendered.starts_in_thinking, "prefill": rendered.prefill,
            "pin": int(pin), "fingerprint": fingerprint, "key": key}


def unpack(request: dict, fingerprint: str) -> tuple[Rendered | None, int, str]:
    """(the handed-over prompt, its pin length, "") when it is valid for this request and
    model; else (None, 0, why not)."""
    prompt = request.get("prompt")
    if not prompt:
        return None, 0, "no rendered prompt in the request"
    if not isinstance(prompt, dict) or not isinstance(prompt.get("ids"), bytes):
        return None, 0, "the rendered prompt is malformed"
    if prompt.get("fingerprint") != fingerprint:
        return None, 0, "it was rendered for another model (fingerprint differs)"
    if prompt.get("key") != render_key(request):
        return None, 0, "the request changed after it was rendered"
    ids = unpack_ids(prompt["ids"])
    if len(ids) != prompt.get("tokens"):
        return None, 0, "the rendered prompt is truncated"
    rendered = Rendered(ids=ids, text="", prefill=str(prompt.get("prefill") or ""),
                        starts_in_thinking=bool(prompt.get("starts_in_thinking")))
    return rendered, int(prompt.get("pin") or 0), ""


class PinLengths:
    """Tokens of a prompt that belong to system + tools, remembered per system+tools: the
    prompt's common prefix with a probe render of the same system and tools and a one-
    character user turn."""

    LIMIT = 64

    def __init__(self, renderer: ChatRenderer):
        self.renderer = renderer
        self._known: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, request: dict, ids: list[int]) -> int:
        if not request.get("tools"):
            return 0   # only requests with tools (the main session) pin their prefix
        return self.system_tools_length(request, ids)

    def system_tools_length(self, request: dict, ids: list[int]) -> int:
        """The system+tools length itself, with or without tools (where a miss diverged)."""
        key = hashlib.blake2b(json.dumps([request.get("system"), request.get("tools")],
                                         sort_keys=True).encode(), digest_size=16).hexdigest()
        with self._lock:
            known = self._known.get(key)
        if known is not None:
            return known
        probe = {**request, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "\u2063"}]}]}
        other = self.renderer.render(probe)
        n = 0
        for a, b in zip(ids, other):
            if a != b:
                break
            n += 1
        with self._lock:
            self._known[key] = n
            while len(self._known) > self.LIMIT:
                self._known.pop(next(iter(self._known)))
        return n
