"""Per-session fitting state: the plan of the last turn and what the engine has seen.

A session is keyed by a hash of system + tools + the first message (plus the model), which
stays the same while Claude Code extends one conversation. Each message is hashed into a
chain, so a request can tell how many leading messages it shares with the previous one:
those are ``seen`` (already in the engine's prefix cache), and the stored plan still applies
when every message it depends on is shared. Canonical JSON (sorted keys) makes the hashes
independent of dict order.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass

from .plan import Plan


def canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=str).encode("utf-8", "surrogatepass")


def session_key(request: dict) -> str:
    first = request["messages"][0] if request.get("messages") else None
    digest = hashlib.sha256(canonical([request.get("system"), request.get("tools"), first]))
    return digest.hexdigest()[:32]


def message_chain(messages: list[dict]) -> list[bytes]:
    """chain[i] identifies messages[:i + 1]."""
    out, h = [], b""
    for message in messages:
        h = hashlib.sha256(h + canonical(message)).digest()
        out.append(h)
    return out


def shared_prefix(a: list[bytes], b: list[bytes]) -> int:
    """How many leading messages two chains share (chains are prefix-closed: bisect)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        mid = (low + high + 1) // 2
        if a[mid - 1] == b[mid - 1]:
            low = mid
        else:
            high = mid - 1
    return low


@dataclass(frozen=True)
class State:
    plan: Plan
    chain: tuple          # message chain of the last request


class Store:
    """An LRU of session states; thread-safe."""

    def __init__(self, size: int = 256):
        self.size = size
        self._states: OrderedDict[tuple, State] = OrderedDict()
        self._lock = threading.Lock()

    def resume(self, key: tuple, chain: list[bytes]) -> tuple[Plan, int]:
        """(plan to start from, number of messages the engine has already seen)."""
        with self._lock:
            state = self._states.get(key)
            if state is not None:
                self._states.move_to_end(key)
        if state is None:
            return Plan(), 0
        seen = shared_prefix(list(state.chain), chain)
        plan = state.plan if state.plan.touched() <= seen else Plan()
        return plan, seen

    def save(self, key: tuple, plan: Plan, chain: list[bytes]) -> None:
        with self._lock:
            self._states[key] = State(plan, tuple(chain))
            self._states.move_to_end(key)
            while len(self._states) > self.size:
                self._states.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._states)
