"""The kvstore's in-memory index: which file holds which token prefix, LRU order, budget.

Pure bookkeeping (no I/O): the store decides what to do with the files this returns.

A file covering blocks 1..n of a prompt can serve any shorter block-aligned prefix of it
(the engine slices the KV), so every hash of its chain points at it, not only its last one.
A lookup answers in whole blocks; the engine extends the match into the file's tail.
A new file whose chain contains an older file's last hash makes that file redundant: it is
superseded (removed), unless pinned.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(eq=False)
class Entry:
    fingerprint: str
    hashes: list          # the chain, shortest first; the last one names the file
    tokens: int
    size: int
    path: str
    last_used: float
    pinned: bool = False
    block: int = 0        # tokens per block (0: tokens / blocks, a file without a tail)
    depth: dict = field(default_factory=dict)   # hash -> number of blocks up to it

    def __post_init__(self):
        self.depth = {h: i + 1 for i, h in enumerate(self.hashes)}

    @property
    def key(self) -> tuple[str, str]:
        return (self.fingerprint, self.hashes[-1])

    @property
    def block_tokens(self) -> int:
        return self.block or self.tokens // len(self.hashes)


class Index:
    def __init__(self, budget_bytes: int):
        self.budget = int(budget_bytes)
        self.entries: dict[tuple[str, str], Entry] = {}
        self._by_hash: dict[tuple[str, str], set] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entry: Entry) -> list[Entry]:
        """Index ``entry``; return the entries it replaces or supersedes (now removed)."""
        gone = []
        old = self.entries.get(entry.key)
        if old is not None:
            entry.pinned = entry.pinned or old.pinned
            gone.append(self.remove(old))
        for h in entry.hashes[:-1]:
            older = self.entries.get((entry.fingerprint, h))
            if older is not None and not older.pinned:
                gone.append(self.remove(older))
        self.entries[entry.key] = entry
        self.bytes += entry.size
        for h in entry.hashes:
            self._by_hash.setdefault((entry.fingerprint, h), set()).add(entry.key)
        return gone

    def remove(self, entry: Entry) -> Entry:
        if self.entries.pop(entry.key, None) is entry:
            self.bytes -= entry.size
            for h in entry.hashes:
                keys = self._by_hash.get((entry.fingerprint, h))
                if keys is not None:
                    keys.discard(entry.key)
                    if not keys:
                        del self._by_hash[(entry.fingerprint, h)]
        return entry

    def lookup(self, fingerprint: str, hashes: list) -> tuple[Entry, int] | None:
        """The entry holding the longest prefix of ``hashes`` and that prefix's length in
        tokens; among several, the smallest file (cheapest to load)."""
        for h in reversed(hashes):
            keys = self._by_hash.get((fingerprint, h))
            if keys:
                best = min((self.entries[k] for k in keys), key=lambda e: (e.size, -e.last_used))
                return best, best.depth[h] * best.block_tokens
        return None

    def set_pin(self, fingerprint: str, key: tuple[str, str] | None) -> None:
        """One pinned entry per model: ``key`` (or none) and no other."""
        for entry in self.entries.values():
            if entry.fingerprint == fingerprint:
                entry.pinned = entry.key == key

    def over_budget(self, protect: Entry | None = None) -> list[Entry]:
        """Remove least recently used entries until under budget (pinned ones last,
        ``protect`` never) and return them."""
        gone = []
        order = sorted(self.entries.values(), key=lambda e: (e.pinned, e.last_used))
        for entry in order:
            if self.bytes <= self.budget:
                break
            if entry is not protect:
                gone.append(self.remove(entry))
        return gone

    def pins(self) -> dict[str, str]:
        return {e.fingerprint: e.hashes[-1] for e in self.entries.values() if e.pinned}
