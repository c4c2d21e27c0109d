"""EngineCore: one model; one request at a time in the caller's thread, or, with
``batch_size`` > 1, concurrent requests decoded together in one batch (batching.py).

    core = EngineCore(path, model_id=..., context_window=..., max_output_tokens=...)
    core.count(request) -> int          exact prompt tokens (template + tools)
    core.generate(request, emit, cancelled)

``generate`` sends ``Progress`` during prefill, ``Delta`` batches of neutral events while
decoding, then exactly one ``Done`` or ``Error`` (anyclaude.messages). ``cancelled()`` is
polled between prefill steps and between tokens.

The path of a request: render the chat template to ids -> check the context window ->
pick a prompt cache (``_prepare_cache``: the longest cached prefix) -> stream_generate with the
sampler and, for tests, a forcing logits processor -> decode tokens to text -> cut at stop
sequences -> parse tool calls and thinking (output.py) -> batch events -> Done with usage.
Everything from the render to the Done is one ``Turn`` (turn.py), shared with the batch.
"""

from __future__ import annotations

import time

from anyclaude import errors
from anyclaude.logs import get_logger
from anyclaude.messages import Done
from anyclaude.modelfiles.window import window_for_model_dir

from anyclaude.services.engine.parsing import tool_choice
from anyclaude.services.engine.envelope import run_generate
from anyclaude.services.engine.mlx.forcing import ForcedText, ForceRules, encode_exact
from anyclaude.services.engine.mlx.model import load_model
from anyclaude.services.engine.mlx.turn import Cancelled as _Cancelled, Turn
from anyclaude.services.engine.parsing.output import choose_family, declared_family
from anyclaude.prompt import handoff
from anyclaude.prompt.template import ChatRenderer

log = get_logger()

ANTHROPIC_DEFAULT_TEMPERATURE = 1.0




class EngineCore:
    slow_count = False      # counting is local and fast (see services/engine/core.py)

    def __init__(self, model_path: str, *, model_id: str, context_window: int,
                 max_output_tokens: int, prefill_step_size: int = 256,
                 tool_parser: str = "auto", force_file: str | None = None,
                 delta_interval: float = 0.03, memory_budget_mb: int = 0,
                 block_tokens: int = 256, kv_dir: str | None = None,
                 write_retry_s: float | None = None, batch_size: int = 1):
        self.loaded = load_model(model_path, model_id=model_id)
        self.model = self.loaded.model
        self.tokenizer = self.loaded.tokenizer
        self.model_id = model_id
        self.window = window_for_model_dir(int(context_window), self.loaded.config,
                                           self.loaded.path, reserved_mb=memory_budget_mb)
        self.context_window = self.window.tokens
        self.max_output_tokens = int(max_output_tokens)
        self.prefill_step_size = int(prefill_step_size)
        self.delta_interval = delta_interval
        self.renderer = ChatRenderer(self.tokenizer, model_id=model_id)
        self.pin_lengths = handoff.PinLengths(self.renderer)
        try:
            self.family = choose_family(self.loaded.chat_template, self.loaded.model_type,
                                        None if tool_parser in ("", "auto") else tool_parser,
                                        declared_family(self.loaded.path),
                                        getattr(self.tokenizer, "get_vocab", dict)())
        except ValueError as exc:
            raise errors.ConfigError(f"models.{model_id}.tool_parser: {exc}") from None
        self.forcing = ForceRules(force_file)
        self.eos_ids = set(self.tokenizer.eos_token_ids)
        self.eos_id = self.tokenizer.eos_token_id
        if self.eos_id is None:
            self.eos_id = min(self.eos_ids) if self.eos_ids else 0
        self.special_tokens = tuple(getattr(self.tokenizer, "all_special_tokens", ()) or ())
        self.prefix_cache = self.kv = None
        if memory_budget_mb > 0:
            self._enable_prefix_cache(memory_budget_mb, block_tokens, kv_dir)
        if self.kv is not None and write_retry_s is not None:
            self.kv.retry_after = write_retry_s   # after a failed disk write: memory-only this long
        if self.window.source == "configured" and 0 < self.window.memory_cap < self.context_window:
            log.warning("engine.window.above_memory_cap", model=model_id, **self.window.as_dict(),
                        note="the configured context_window may not fit in memory; "
                             "remove it to use what memory can hold")
        self.renders_tools = self.renderer.renders_tools()
        if not self.renders_tools:
            log.warning("engine.template.no_tools", model=model_id,
                        note="this model's chat template has no place for tools: the tools a "
                             "client offers (Claude Code's) never reach its prompt and it will "
                             "not call them; for tool use, configure a model whose template "
                             "supports tools")
        # batch_size > 1: concurrent generate calls join one running batch (batching.py);
        # 1: each call runs alone in the caller's thread (stream_generate).
        self.batch = None
        if batch_size > 1:
            from anyclaude.services.engine.mlx.batching import BatchRunner
            self.batch = BatchRunner(self, batch_size)
        log.info("engine.core.ready", model=model_id, family=self.family,
                 **self.window.as_dict(), max_output_tokens=self.max_output_tokens,
                 prefill_step_size=self.prefill_step_size, batch_size=max(1, batch_size),
                 renders_tools=self.renders_tools)

    @property
    def fingerprint(self) -> str:
        return self.loaded.fingerprint

    @property
    def model_dir(self) -> str:
        """Where the tokenizer and chat template live (the optimizer loads them from here)."""
        return str(self.loaded.path)

    # -- public -----------------------------------------------------------------------------

    def count(self, request: dict) -> int:
        """Exactly the number of tokens ``generate`` prefills for this request."""
        return len(self.renderer.render_prompt(request).ids)

    def generate(self, request: dict, emit, cancelled) -> None:
        """Thread-safe when batching (batch_size > 1): each caller waits for its own request."""
        if self.batch is not None:
            produce = lambda send: self.batch.run(request, send, cancelled)  # noqa: E731
        else:
            produce = lambda send: self._generate(request, send, cancelled)  # noqa: E731
        run_generate(emit, produce, model_id=self.model_id, cancelled=_Cancelled)

    # -- the request path -------------------------------------------------------------------

    def _generate(self, request: dict, send, cancelled) -> Done:
        from mlx_lm import stream_generate
        import mlx.core as mx

        turn = Turn(self, request, send)
        cache, turn.reused, turn.cache_note = self._prepare_cache(turn.ids, request, turn.pin)
        turn.log_start()

        def progress(processed: int, total: int) -> None:
            if cancelled():
                raise _Cancelled()
            turn.progress(processed)

        responses = stream_generate(
            self.model, self.tokenizer, mx.array(turn.ids[turn.reused:]),
            max_tokens=turn.max_tokens, sampler=turn.sampler,
            logits_processors=turn.processors, prompt_cache=cache,
            prefill_step_size=self.prefill_step_size, prompt_progress_callback=progress)
        try:
            for response in responses:
                if turn.feed(response.token, response.finish_reason):
                    break
                if cancelled():
                    raise _Cancelled()
        finally:
            responses.close()
            self._finish_cache(cache, turn.tokens)
        return turn.done(peak_mb=round(mx.get_peak_memory() / 2**20, 1))

    # -- pieces -----------------------------------------------------------------------------

    def _prompt(self, request: dict):
        """(the prompt's ids etc., its system+tools length): the optimizer's render when it
        handed one over for this very request and model, else rendered here (and logged:
        the straight path renders once, in the optimizer)."""
        prompt, pin, why = handoff.unpack(request, self.fingerprint)
        if prompt is not None:
            return prompt, pin
        prompt = self.renderer.render_prompt(request)
        log.info("engine.prompt.rendered_here", model=self.model_id, reason=why)
        return prompt, self.pin_lengths(request, prompt.ids)

    def _clamp_max_tokens(self, request: dict, n_prompt: int) -> int:
        asked = int(request.get("max_tokens") or self.max_output_tokens)
        allowed = min(asked, self.max_output_tokens, self.context_window - n_prompt)
        if allowed < asked:   # the optimizer clamps; reaching this is a bug upstream of us
            log.warning("engine.max_tokens_clamped", model=self.model_id, requested=asked,
                        clamped=allowed, max_output_tokens=self.max_output_tokens,
                        room_in_context=self.context_window - n_prompt,
                        note="bug: the optimizer should have clamped max_tokens")
        return max(1, allowed)

    def _sampler(self, request: dict):
        from mlx_lm.sample_utils import make_sampler

        defaults = self.loaded.generation_defaults
        temp = request.get("temperature")
        if temp is None:
            temp = defaults.get("temperature", ANTHROPIC_DEFAULT_TEMPERATURE)
        top_p = request.get("top_p")
        if top_p is None:
            top_p = defaults.get("top_p", 0.0)
        top_k = request.get("top_k")
        if top_k is None:
            top_k = defaults.get("top_k", 0)
        return make_sampler(temp=float(temp), top_p=float(top_p), top_k=int(top_k))

    def _forcing(self, request: dict, prompt):
        """(logits processors, fail afterwards?): the force file's rule if one applies (it
        wins), else what enforces tool_choice any / tool (tool_choice.py), else none."""
        rule = self.forcing.pick_rule(request)
        if rule is None:
            return tool_choice.processors(self, request, prompt), False
        hold = rule.get("hold_until") if isinstance(rule.get("hold_until"), str) else None
        return ([ForcedText(encode_exact(self.tokenizer, rule["say"]), self.eos_id,
                            hold_until=hold)], bool(rule.get("fail")))

    def _usage(self, n_prompt: int, reused: int, output_tokens: int) -> dict:
        # Anthropic: total input = input_tokens + cache_read + cache_creation. With the
        # prefix cache on, every prompt token not read from the cache is written to it.
        created = n_prompt - reused if self.prefix_cache is not None else 0
        return {"input_tokens": n_prompt - reused - created, "output_tokens": output_tokens,
                "cache_read_input_tokens": reused, "cache_creation_input_tokens": created}

    # -- prompt cache (the prefix cache plugs in here) --------------------------------------

    def _enable_prefix_cache(self, memory_budget_mb: int, block_tokens: int, kv_dir) -> None:
        from anyclaude.services.engine.prefix.prefix_cache import PrefixCache
        from anyclaude.kvstore_client import KVStoreClient

        self.kv = KVStoreClient(kv_dir) if kv_dir else None
        self.prefix_cache = PrefixCache(self.model, memory_budget_bytes=memory_budget_mb * 2**20,
                                        fingerprint=self.fingerprint, block_tokens=block_tokens,
                                        store=self.kv)

    def _prepare_cache(self, ids: list[int], request: dict | None = None, pin: int = 0):
        """(prompt cache, number of leading ``ids`` it already holds, a note for Done.cache).
        The remainder ``ids[reused:]`` is never empty (on an exact hit one token is re-fed)."""
        from mlx_lm.models.cache import make_prompt_cache

        if self.prefix_cache is None:
            return make_prompt_cache(self.model), 0, {}
        if request is not None and request.get("tools"):
            # Requests with tools are the main session's: keep their system+tools prefix
            # even when side calls (titles, summaries: no tools) fill the cache.
            self.prefix_cache.pin(ids[:pin])
        cache, reused, source = self.prefix_cache.fetch(ids)
        note = {"prompt_tokens": len(ids), "reused": reused, "source": source}
        if reused < len(ids) // 2:
            matched, entry = self.prefix_cache.divergence(ids)
            log.info("engine.cache.miss", model=self.model_id, prompt_tokens=len(ids),
                     reused=reused, closest_match=matched, closest_entry_tokens=entry,
                     diverged_at=self._context_at(ids, matched))
            # positions only (the status page must not show prompt text)
            fixed = self.pin_lengths.system_tools_length(request, ids) if request else pin
            note.update(diverged_at=matched, closest_match=entry,
                        diverged_in="system+tools" if matched < fixed else "messages")
        else:
            log.info("engine.cache.hit", model=self.model_id, prompt_tokens=len(ids),
                     reused=reused, source=source)
        return cache, reused, note

    def _context_at(self, ids: list[int], position: int) -> str:
        """A short piece of the prompt text where it diverged from the closest cached one."""
        if position >= len(ids):
            return ""
        return self.tokenizer.decode(ids[max(0, position - 8):position + 8])[:120]

    def _finish_cache(self, cache, tokens: list[int]) -> None:
        """Keep the KV of the prompt + every generated token (EOS included), so the next
        turn, which starts with this reply, hits. After a cancel during prefill the cache
        holds a prefix of the prompt only; the prefix cache keeps just that."""
        if self.prefix_cache is not None:
            self.prefix_cache.store(tokens, cache)

    def warm_start(self) -> None:
        """A (re)started engine's first step, before it takes requests from its queue: load
        the kvstore's most recently used file of this model into memory, so the session
        that was going on continues at memory speed. Never fails: a miss is a cold start."""
        if self.prefix_cache is None or self.kv is None:
            return
        started = time.monotonic()
        try:
            found = self.kv.recent(self.fingerprint, self.prefix_cache.budget)
            tokens = self.prefix_cache.preload(found[0]) if found else 0
        except Exception:
            log.exception("engine.cache.preload_failed", model=self.model_id)
            return
        if tokens:
            log.info("engine.cache.preloaded", model=self.model_id, tokens=tokens,
                     seconds=round(time.monotonic() - started, 3))

    def cache_stats(self) -> dict:
        return self.prefix_cache.stats() if self.prefix_cache is not None else {}

    def close(self) -> None:
        if self.kv is not None:
            self.kv.close()
