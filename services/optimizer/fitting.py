"""Context fitting: make a conversation fit the token budget, keeping its prefix stable.

The plan of the previous turn (see plan.py) is applied first; if the result fits, nothing
else happens, so the already-sent part of the prompt stays byte-identical. Only when it does
not fit does the plan grow, in two ways:

- free: oversized tool results in messages the engine has not seen yet (index >= ``seen``)
  are shortened, largest first, until the prompt is within ``aim`` (or at least within
  ``budget``). No cached prefix is lost.
Two sizes matter: ``budget``, the most the prompt may use (the window less the output floor,
see core.py), and ``aim``, the budget with the full output reserve. A prompt within
``budget`` is never changed; when it must change, shortening and cutting aim below ``aim``.

- cut: the prompt is brought down to ``fit_target_ratio`` of ``aim`` (a large step, so
  cuts are rare) by, in order and only as far as needed: (1) shortening oversized tool
  results, oldest first; (2) replacing old tool outputs with placeholders, oldest first;
  (3) dropping the oldest exchanges. The last ``keep_last_turns`` exchanges are left whole;
  if even that is too much they shrink to the minimum (the last user message and the tool
  exchange it answers), and finally messages[0] goes too.

Token sizes of candidate plans are estimated from characters with the tokens-per-character
ratio of the last exact count, and every result is confirmed by one exact count. ``count``
is any callable messages -> exact tokens, so this module is pure and testable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from anyclaude.errors import PromptTooLong
from anyclaude.optimizer_config import ProfileConfig

from . import plan as P
from .plan import Plan

MAX_EXACT_COUNTS = 12
MARKER_CHARS = 110
MIN_KEEP = 200


class DoesNotFit(Exception):
    """The prompt needs cutting on this model; raised instead when cuts are not allowed."""

    def __init__(self, tokens: int, budget: int):
        super().__init__(f"{tokens} tokens > {budget}")
        self.tokens, self.budget = tokens, budget


@dataclass
class Fit:
    plan: Plan
    messages: list
    tokens: int
    counts: int                      # exact counts used
    notes: list = field(default_factory=list)
    cut: bool = False                # the already-seen part of the prompt changed


def fit(messages: list[dict], *, fixed: int, plan0: Plan, seen: int,
        count: Callable[[list[dict]], int], budget: int, profile: ProfileConfig,
        allow_cuts: bool = True, aim: int | None = None) -> Fit:
    out0 = P.apply(plan0, messages)
    tokens0 = count(out0)
    counts = 1
    if tokens0 <= budget:
        return _done(messages, plan0, plan0, out0, tokens0, counts, seen)
    if not allow_cuts:
        raise DoesNotFit(tokens0, budget)
    work = _Work(messages, fixed, plan0, tokens0, budget, profile, aim)
    candidate = work.free(seen) or work.cut(plan0, work.target)
    for attempt in range(MAX_EXACT_COUNTS):
        out = P.apply(candidate, messages)
        tokens = count(out)
        counts += 1
        if tokens <= budget:
            return _done(messages, plan0, candidate, out, tokens, counts, seen, tokens0)
        work.anchor(candidate, tokens)      # the estimate was low: re-measure and go further
        better = work.cut(candidate, work.target if attempt < 2 else 0)
        if better == candidate:
            better = work.tighten(candidate)
        if better == candidate:
            break
        candidate = better
    raise PromptTooLong(max(tokens0, tokens), budget)


def _done(messages, plan0: Plan, final: Plan, out, tokens, counts, seen, tokens0=None) -> Fit:
    notes = effects(final, messages)
    first = first_changed(plan0, final, messages)
    cut = first is not None and first < seen
    if first is not None:
        notes.append({"action": "cut" if cut else "fit_new_messages",
                      "first_changed_message": first,
                      "tokens_before": tokens0, "tokens_after": tokens})
    return Fit(final, out, tokens, counts, notes, cut)


def effects(plan: Plan, messages: list[dict]) -> list[dict]:
    """What the plan does to this conversation, as notes."""
    notes = []
    visible = plan.visible_from(messages)
    shortened = sum(1 for m, _, _, _ in plan.shortened
                    if m >= visible and m >= plan.placeholder_to)
    if shortened:
        notes.append({"action": "shorten_tool_result", "count": shortened})
    placeholders = sum(1 for i in range(visible, min(plan.placeholder_to, len(messages)))
                       for b in messages[i].get("content") or [] if b.get("type") == "tool_result")
    if placeholders:
        notes.append({"action": "placeholder_tool_results", "count": placeholders})
    dropped = P.dropped_count(plan, messages)
    if dropped:
        notes.append({"action": "drop_turns", "messages": dropped,
                      "kept_first": P.keeps_first(plan, messages)})
    return notes


def first_changed(before: Plan, after: Plan, messages: list[dict]) -> int | None:
    """The first original message whose rewriting differs between two plans (None: none)."""
    if before == after:
        return None
    if (P.dropped_count(before, messages), P.keeps_first(before, messages)) != \
            (P.dropped_count(after, messages), P.keeps_first(after, messages)):
        return 0
    maybe = {m for m, b, k, t in set(after.shortened) ^ set(before.shortened)}
    low, high = sorted((before.placeholder_to, after.placeholder_to))
    maybe.update(range(low, min(high, len(messages))))
    short_before = {(m, b): (k, t) for m, b, k, t in before.shortened}
    short_after = {(m, b): (k, t) for m, b, k, t in after.shortened}
    for i in sorted(maybe):
        if i < len(messages) and (P.transform(before, short_before, i, messages[i])
                                  != P.transform(after, short_after, i, messages[i])):
            return i
    return None


def _has_tool_content(message: dict) -> bool:
    return any(b.get("type") in ("tool_result", "tool_use") for b in message.get("content") or [])


class _Work:
    """Candidate plans with estimated sizes, anchored on the last exact count."""

    def __init__(self, messages, fixed, plan0, tokens0, budget, profile: ProfileConfig,
                 aim: int | None = None):
        self.messages, self.fixed, self.budget = messages, fixed, budget
        self.aim = min(budget, aim) if aim else budget
        self.profile = profile
        self.target = int(self.aim * profile.fit_target_ratio)
        self._memo: dict = {}
        self.bounds = P.boundaries(messages)
        lu = P.last_user(messages)
        self.minimal = max((c for c in self.bounds if c <= lu), default=0)
        turns = [c for c in self.bounds if c <= self.minimal
                 and messages[c].get("role") == "assistant"]
        k = profile.keep_last_turns
        self.protect = turns[-k] if len(turns) >= k else 0
        self.plan0 = plan0
        self.anchor(plan0, tokens0)

    # -- estimates --
    def anchor(self, plan: Plan, tokens: int) -> None:
        self.anchor_chars = self.chars(plan)
        self.anchor_tokens = tokens
        self.scale = tokens / max(1, self.anchor_chars)   # tokens per character

    def estimate(self, plan: Plan) -> float:
        return self.anchor_tokens + self.scale * (self.chars(plan) - self.anchor_chars)

    def chars(self, plan: Plan) -> int:
        short = {(m, b): (k, t) for m, b, k, t in plan.shortened}
        by_message: dict[int, tuple] = {}
        for m, b, k, t in plan.shortened:
            by_message[m] = (*by_message.get(m, ()), (b, k, t))
        total = self.fixed
        start = 0
        if P.dropped_count(plan, self.messages):
            total += P.MESSAGE_OVERHEAD + MARKER_CHARS
            if P.keeps_first(plan, self.messages):
                total += self._message(plan, short, by_message, 0)
            start = plan.drop_to
        for i in range(start, len(self.messages)):
            total += self._message(plan, short, by_message, i)
        return total

    def _message(self, plan: Plan, short: dict, by_message: dict, i: int) -> int:
        old = i < plan.placeholder_to
        key = (i, old, () if old else by_message.get(i, ()))
        size = self._memo.get(key)
        if size is None:
            size = self._memo[key] = P.message_chars(
                P.transform(plan, short, i, self.messages[i]))
        return size

    # -- growing a plan --
    def oversized(self, plan: Plan, start: int) -> list[tuple[int, int, int, int]]:
        """(message, block, chars, keep) of tool results over their share of the cap."""
        cap_chars = self.aim * self.profile.tool_result_max_ratio / max(self.scale, 1e-9)
        done = {(m, b) for m, b, _, _ in plan.shortened}
        out = []
        first = max(start, plan.visible_from(self.messages), plan.placeholder_to)
        for i in range(first, len(self.messages)):
            blocks = [(b, blk) for b, blk in enumerate(self.messages[i].get("content") or [])
                      if blk.get("type") == "tool_result"]
            if not blocks:
                continue
            keep = max(MIN_KEEP, int(cap_chars / len(blocks)))
            for b, blk in blocks:
                size = len(P.result_text(blk))
                if (i, b) not in done and size > keep:
                    out.append((i, b, size, keep))
        return out

    def _shorten(self, plan: Plan, item) -> Plan:
        i, b, size, keep = item
        return plan.with_short(i, b, keep, round((size - keep) * self.scale))

    def free(self, seen: int) -> Plan | None:
        """Shorten new oversized results, largest first, until the prompt is within the aim
        (else within the budget); None if that is not enough."""
        plan = self.plan0
        items = sorted(self.oversized(plan, seen), key=lambda it: (-it[2], it[0], it[1]))
        for item in items:
            plan = self._shorten(plan, item)
            if self.estimate(plan) <= self.aim:
                return plan
        return plan if items and self.estimate(plan) <= self.budget else None

    def tighten(self, plan: Plan) -> Plan:
        """Last resort when even the smallest plan is too big: cut every visible tool result
        to a quarter of what it keeps now (never below MIN_KEEP characters)."""
        kept = {(m, b): k for m, b, k, _ in plan.shortened}
        first = max(plan.visible_from(self.messages), plan.placeholder_to)
        for i in range(first, len(self.messages)):
            for b, blk in enumerate(self.messages[i].get("content") or []):
                if blk.get("type") != "tool_result":
                    continue
                size = len(P.result_text(blk))
                keep = max(MIN_KEEP, min(size, kept.get((i, b), size)) // 4)
                if keep < size and keep < kept.get((i, b), size):
                    plan = self._shorten(plan, (i, b, size, keep))
        return plan

    def cut(self, plan: Plan, target: float) -> Plan:
        plan = self._reduce(plan, target, self.protect)
        if self.estimate(plan) > self.budget or target == 0:
            plan = self._reduce(plan, target, self.minimal)
            if (self.estimate(plan) > self.budget or target == 0) and plan.keep_first:
                plan = self._reduce(replace(plan, keep_first=False), target, self.minimal)
        return plan

    def _reduce(self, plan: Plan, target: float, protect: int) -> Plan:
        for item in self.oversized(plan, 0):
            if self.estimate(plan) <= target:
                return plan
            plan = self._shorten(plan, item)
        start = max(plan.placeholder_to, plan.visible_from(self.messages))
        for i in range(start, protect):
            if self.estimate(plan) <= target:
                return plan
            if _has_tool_content(self.messages[i]):
                plan = replace(plan, placeholder_to=i + 1)
        first_ok = 2 if P.keeps_first(plan, self.messages) else 1
        options = [c for c in self.bounds if max(plan.drop_to + 1, first_ok) <= c <= protect
                   and (c == protect or self.messages[c].get("role") == "assistant")]
        for c in options:
            if self.estimate(plan) <= target:
                return plan
            plan = replace(plan, drop_to=c)
        return plan
