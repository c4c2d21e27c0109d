"""One request's generation state, the same whether it runs alone or inside a batch.

A ``Turn`` is made from the request (render, window check, max_tokens, sampler, logits
processors, parser, stop sequences), then fed one generated token at a time (``feed``)
and finally turned into ``Done`` (``done``). The one-at-a-time path (generation.py, with
``stream_generate``) and the batch (batching.py, with mlx-lm's ``BatchGenerator``) both
drive it, so a request's text, tool calls, stop reason and usage cannot depend on which
path ran it or on what ran beside it.
"""

from __future__ import annotations

import time

from anyclaude import errors
from anyclaude.logs import get_logger
from anyclaude.messages import Delta, Done, Progress

from anyclaude.services.engine.parsing.output import OutputParser
from anyclaude.services.engine.streamtext import EventBatcher, IncrementalDecoder, StopMatcher

log = get_logger()


class Cancelled(Exception):
    """The client cancelled (or went away); the envelope reports it as "cancelled"."""


class Turn:
    def __init__(self, core, request: dict, send):
        self.core = core
        self.send = send
        self.started = time.monotonic()
        prompt, self.pin = core._prompt(request)   # the optimizer's render, or one made here
        self.ids: list[int] = list(prompt.ids)
        n_prompt = len(self.ids)
        if n_prompt > core.context_window - 1:  # room for at least one output token
            raise errors.PromptTooLong(n_prompt, core.context_window - 1)
        self.max_tokens = core._clamp_max_tokens(request, n_prompt)
        self.sampler = core._sampler(request)
        self.processors, self.fail_after = core._forcing(request, prompt)
        tools = request.get("tools") or []
        if (request.get("tool_choice") or {}).get("type") == "none":
            tools = []
        self.parser = OutputParser(family=core.family, tools=tools,
                                   thinking=bool(request.get("thinking")),
                                   starts_in_thinking=prompt.starts_in_thinking,
                                   special_tokens=core.special_tokens)
        self.stops = StopMatcher(request.get("stop_sequences") or [])
        self.decoder = IncrementalDecoder(core.tokenizer)
        self.batcher = EventBatcher(lambda events: send(Delta(events=events)),
                                    interval=core.delta_interval)
        self.reused = 0
        self.cache_note: dict = {}       # what the prefix cache did (Done.cache, the status page)
        self.generated: list[int] = []   # every token the model produced, EOS included
        self.finish = "end_turn"
        self.first_token_at: float | None = None

    @property
    def n_prompt(self) -> int:
        return len(self.ids)

    def log_start(self) -> None:
        log.info("engine.generate.start", model=self.core.model_id, prompt_tokens=self.n_prompt,
                 reused_tokens=self.reused, max_tokens=self.max_tokens,
                 forced=bool(self.processors))

    def progress(self, processed: int) -> None:
        """``processed``: prompt tokens after the reused prefix that are in the cache now."""
        self.send(Progress(processed=self.reused + processed, total=self.n_prompt))

    def feed(self, token: int, finish_reason: str | None) -> bool:
        """Take one generated token; True when the turn has ended (EOS, stop sequence,
        max_tokens). ``finish_reason`` is mlx-lm's: "stop" for EOS, "length", or None."""
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        self.generated.append(token)
        if finish_reason == "stop":     # EOS: never text
            return True
        text = self.stops.feed(self.decoder.add(token))
        self.batcher.add(self.parser.feed(text) if text else [])
        if self.stops.matched is not None:
            self.finish = "stop_sequence"
            return True
        if finish_reason == "length":
            self.finish = "max_tokens"
            return True
        return False

    @property
    def tokens(self) -> list[int]:
        """What the KV cache holds once the turn ended: prompt + every generated token."""
        return self.ids + self.generated

    def done(self, peak_mb: float | None = None) -> Done:
        """Flush the text, close the parser and make the Done (raises the force file's
        injected failure instead, when its rule asked for one)."""
        if self.finish != "stop_sequence":
            tail = self.stops.feed(self.decoder.flush())
            tail += self.stops.flush() if self.stops.matched is None else ""
            if self.stops.matched is not None:
                self.finish = "stop_sequence"
            self.batcher.add(self.parser.feed(tail) if tail else [])
        self.batcher.add(self.parser.finish())
        self.batcher.flush()
        if self.finish == "end_turn" and self.parser.tool_calls > 0:
            self.finish = "tool_use"
        if self.fail_after:
            raise errors.EngineFailed("injected failure after the forced text (force file)")
        output_tokens = sum(1 for t in self.generated if t not in self.core.eos_ids)
        done_at = time.monotonic()
        ttft = (self.first_token_at or done_at) - self.started
        decode_s = done_at - (self.first_token_at or done_at)
        log.info("engine.generate.done", model=self.core.model_id, stop_reason=self.finish,
                 prompt_tokens=self.n_prompt, output_tokens=output_tokens,
                 ttft_s=round(ttft, 3),
                 prefill_tps=round((self.n_prompt - self.reused) / ttft, 1) if ttft > 0 else None,
                 decode_tps=round((output_tokens - 1) / decode_s, 1) if decode_s > 0 else None,
                 peak_mb=peak_mb)
        return Done(stop_reason=self.finish, stop_sequence=self.stops.matched,
                    usage=self.core._usage(self.n_prompt, self.reused, output_tokens),
                    cache=self.cache_note)
