"""Make the real engine say an exact text: a test hook that does not bypass the engine.

A force file (``EngineCore(force_file=...)`` or ``$ANYCLAUDE_FORCE_FILE``, re-read on every
request so a test can rewrite it) holds rules::

    {"rules": [{"match": "substring", "say": "text", "times": 1, "fail": false}, ...]}

The first rule whose ``match`` occurs in the text of the request's last message (its text
blocks and tool_result texts) applies; ``"match": ""`` matches anything; ``times`` limits how
often a rule applies (counted in memory, per file content). With no rule the model samples
normally. The chosen text is tokenized (special tokens such as ``<tool_call>`` become their
own ids) and a logits processor makes the model produce exactly those tokens, then EOS.
Everything downstream - detokenizing, stop sequences, output parsing, usage - runs as usual.
``"fail": true`` makes the engine fail after saying the text (instead of finishing), to
test what a client sees when a stream breaks midway. ``"hold_until": "<path>"`` keeps the
engine busy after the text until that file exists (at most HOLD_MAX_S): a test holds the
engine's slot exactly as long as it needs, without guessing how long a text takes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

from anyclaude.logs import get_logger

log = get_logger()

ENV = "ANYCLAUDE_FORCE_FILE"
HOLD_MAX_S = 120.0


class ForceRules:
    def __init__(self, force_file: str | os.PathLike | None = None):
        self._fixed = os.fspath(force_file) if force_file else None
        self._uses: dict[tuple[str, int], int] = {}

    def path(self) -> str | None:
        return self._fixed or os.environ.get(ENV) or None

    def pick(self, request: dict) -> str | None:
        """The text to force for this request, or None (also when there is no force file)."""
        rule = self.pick_rule(request)
        return rule["say"] if rule else None

    def pick_rule(self, request: dict) -> dict | None:
        """The rule that applies to this request, or None."""
        path = self.path()
        if not path:
            return None
        try:
            with open(path, "rb") as f:
                raw = f.read()
            rules = json.loads(raw).get("rules", [])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("engine.force.bad_file", path=path, error=str(exc))
            return None
        digest = hashlib.sha256(raw).hexdigest()
        text = last_message_text(request)
        for index, rule in enumerate(rules):
            if not isinstance(rule, dict) or not isinstance(rule.get("say"), str):
                continue
            if str(rule.get("match", "")) not in text:
                continue
            times = rule.get("times")
            used = self._uses.get((digest, index), 0)
            if isinstance(times, int) and used >= times:
                continue
            self._uses[(digest, index)] = used + 1
            log.info("engine.force.rule", path=path, rule=index, chars=len(rule["say"]))
            return rule
        return None


def last_message_text(request: dict) -> str:
    """Text of the last user message (role "system" messages after it are skipped: Claude
    Code appends reminders that way)."""
    messages = [m for m in request.get("messages") or [] if m.get("role") != "system"]
    if not messages:
        return ""
    parts = []
    for block in messages[-1].get("content") or []:
        if block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            content = block.get("content") or []
            if isinstance(content, str):
                parts.append(content)
            else:
                parts.extend(b.get("text", "") for b in content if b.get("type") == "text")
    return "\n".join(parts)


def encode_exact(tokenizer, text: str) -> list[int]:
    """Token ids for ``text``; added tokens (``<tool_call>``, ``<think>``) map to their ids."""
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    back = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if back != text:
        log.warning("engine.force.inexact", wanted=text[:80], decoded=back[:80])
    return ids


class ForcedText:
    """Logits processor for ``stream_generate``: the i-th sampled token is ``ids[i]``, then
    ``eos_id``. It counts its own calls (one per sampled token), so it works whatever prefix
    of the prompt came from a cache."""

    def __init__(self, ids: list[int], eos_id: int, *, hold_until: str | None = None):
        self.ids = list(ids)
        self.eos_id = eos_id
        self.hold_until = hold_until
        self.step = 0
        self._positions = None

    def __call__(self, tokens, logits):
        import mlx.core as mx

        if self.step == len(self.ids) and self.hold_until:
            self._hold()
        target = self.ids[self.step] if self.step < len(self.ids) else self.eos_id
        self.step += 1
        if self._positions is None or self._positions.shape[0] != logits.shape[-1]:
            self._positions = mx.arange(logits.shape[-1])
        # Keep the result dependent on the model's logits: otherwise MLX never evaluates the
        # forward pass while decoding and the deferred work lands all at once at the end.
        return mx.where(self._positions == target, logits * 0, float("-inf")).astype(logits.dtype)

    def _hold(self) -> None:
        deadline = time.monotonic() + HOLD_MAX_S
        while not os.path.exists(self.hold_until) and time.monotonic() < deadline:
            time.sleep(0.02)
