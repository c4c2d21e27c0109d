"""Continuous batching: requests that arrive while others run join the running batch.

    runner = BatchRunner(core, size=4)
    runner.run(request, send, cancelled) -> Done     # in the caller's thread; blocks

One thread ("batch") owns the model and steps mlx-lm's ``BatchGenerator``: each step
decodes one token for every request in the batch and prefills the next chunk
(``prefill_step_size``) of the ones still reading their prompt, so a new request's prefill
runs beside the others' decoding instead of after it. Each request brings its own prompt
cache from the prefix cache (a hit for each), sampler, logits processors (force file,
tool_choice), token budget; stop sequences, parsing and usage are its own ``Turn``
(turn.py), the same object the one-at-a-time path drives. A request that ends (EOS,
max_tokens, a stop sequence), is cancelled or fails leaves the batch
(``BatchGenerator.remove``) and its KV goes to the prefix cache; the others go on.

What BatchGenerator lacked and is added here: admission up to ``size`` at once, cancel
between steps (also while still queued or prefilling), text-level stop sequences (ours
cut on decoded text; mlx-lm's match token ids), per-request errors that fail one request
only, and the hand-off of each finished request's KV to the prefix cache.

The caller's thread (a service worker) renders the prompt and builds the Turn, then only
relays the frames the batch thread queues for it, so every frame is sent from the thread
that owns the request's socket.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

from anyclaude.logs import get_logger
from anyclaude.messages import Done

from anyclaude.services.engine.mlx.turn import Cancelled, Turn

log = get_logger()


@dataclass(eq=False)
class _Slot:
    request: dict
    cancelled: object                      # () -> bool, polled between steps
    turn: Turn | None = None
    outbox: queue.Queue = field(default_factory=queue.Queue)   # frames, then Done or an exception
    uid: int | None = None

    def end(self, outcome) -> None:
        self.outbox.put(outcome)


class BatchRunner:
    def __init__(self, core, size: int):
        self.core = core
        self.size = max(int(size), 1)
        self._inbox: queue.Queue[_Slot] = queue.Queue()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.running = 0          # requests in the batch now (for status)
        self.peak = 0             # the most that ran together

    # -- the caller's side -------------------------------------------------------------------

    def run(self, request: dict, send, cancelled) -> Done:
        slot = _Slot(request, cancelled)
        slot.turn = Turn(self.core, request, slot.outbox.put)   # render + checks, here
        self._ensure_thread()
        self._inbox.put(slot)
        while True:
            item = slot.outbox.get()
            if isinstance(item, Done):
                return item
            if isinstance(item, BaseException):
                raise item
            send(item)

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="batch", daemon=True)
                self._thread.start()

    # -- the batch thread --------------------------------------------------------------------

    def _loop(self) -> None:
        import mlx.core as mx

        # The stream of this thread, as mlx_lm.server does: every array op of the batch and
        # of the prefix cache's fetch/store runs on it.
        stream = mx.default_stream(mx.default_device())
        make = lambda: _batch_generator(   # noqa: E731
            self.core.model, completion_batch_size=self.size, prefill_batch_size=self.size,
            prefill_step_size=self.core.prefill_step_size,
            stop_tokens=[(t,) for t in sorted(self.core.eos_ids)], stream=stream)
        batch = make()
        active: dict[int, _Slot] = {}
        while True:
            self._admit(batch, active, block=not active)
            self._drop_cancelled(batch, active)
            self.running = len(active)
            if not active:
                continue
            try:
                prompt_responses, generation_responses = batch.next()
            except Exception as exc:
                log.exception("engine.batch.step_failed", model=self.core.model_id,
                              requests=len(active))
                for slot in active.values():
                    slot.end(exc)
                active.clear()
                batch = make()
                continue
            for response in prompt_responses:
                slot = active.get(response.uid)
                if slot is not None:
                    slot.turn.progress(response.progress[0])
            for response in generation_responses:
                slot = active.get(response.uid)
                if slot is not None:
                    self._take_token(batch, active, slot, response)
            self.running = len(active)

    def _admit(self, batch, active: dict, *, block: bool) -> None:
        """Move queued requests into the batch while it has room."""
        while len(active) < self.size:
            try:
                slot = self._inbox.get() if block else self._inbox.get_nowait()
            except queue.Empty:
                return
            block = False
            if slot.cancelled():
                slot.end(Cancelled())
                continue
            try:
                self._insert(batch, slot)
            except Exception as exc:
                log.exception("engine.batch.admit_failed", model=self.core.model_id)
                slot.end(exc)
                continue
            active[slot.uid] = slot
        self.running = len(active)
        self.peak = max(self.peak, self.running)

    def _insert(self, batch, slot: _Slot) -> None:
        turn = slot.turn
        cache, turn.reused, turn.cache_note = self.core._prepare_cache(turn.ids, slot.request,
                                                                      turn.pin)
        turn.log_start()
        (slot.uid,) = batch.insert(
            [turn.ids[turn.reused:]], max_tokens=[turn.max_tokens], caches=[cache],
            all_tokens=[list(turn.ids[:turn.reused])], samplers=[turn.sampler],
            logits_processors=[list(turn.processors or [])])

    def _take_token(self, batch, active: dict, slot: _Slot, response) -> None:
        try:
            ended = slot.turn.feed(response.token, response.finish_reason)
        except Exception as exc:
            self._leave(batch, active, slot, exc)
            return
        if response.finish_reason is not None:     # the batch already let it go
            active.pop(slot.uid, None)
            self._store(slot.turn.tokens, response.prompt_cache)
            self._finish(slot)
        elif ended:                                 # our stop sequence: take it out
            self._leave(batch, active, slot, None)
        elif slot.cancelled():
            self._leave(batch, active, slot, Cancelled())

    def _drop_cancelled(self, batch, active: dict) -> None:
        for slot in [s for s in active.values() if s.cancelled()]:
            self._leave(batch, active, slot, Cancelled())

    def _leave(self, batch, active: dict, slot: _Slot, failure) -> None:
        """Take one request out of the batch, keep its KV, then end it: with ``failure``
        (an exception) or, when None, its Done. The others stay as they were."""
        active.pop(slot.uid, None)
        try:
            extracted = batch.remove([slot.uid], return_prompt_caches=True).get(slot.uid)
        except Exception:
            log.exception("engine.batch.remove_failed", model=self.core.model_id)
            batch.remove([slot.uid])
            extracted = None
        if extracted is not None:
            cache, tokens = extracted
            self._store(slot.turn.tokens if failure is None else list(tokens), cache)
        if failure is None:
            self._finish(slot)
        else:
            slot.end(failure)

    def _finish(self, slot: _Slot) -> None:
        try:
            slot.end(slot.turn.done())
        except Exception as exc:
            slot.end(exc)

    def _store(self, tokens: list[int], cache) -> None:
        if cache:
            self.core._finish_cache(cache, tokens)


def _batch_generator(model, **kwargs):
    """mlx-lm's BatchGenerator whose prompt batch hands over without copying when every
    request in it finished its prompt at once (always the case for a request alone):
    ``PromptProcessingBatch.split`` deep-copies the whole batch's KV and then gathers it
    again, two copies of the prefix per request for nothing."""
    from mlx_lm.generate import BatchGenerator, PromptProcessingBatch

    class PromptBatch(PromptProcessingBatch):
        def split(self, indices):
            if sorted(indices) != list(range(len(self.uids))):
                return super().split(indices)
            moved = self.__class__.__new__(self.__class__)
            moved.__dict__.update(self.__dict__)
            self.uids, self.prompt_cache, self.tokens = [], [], []
            self.samplers, self.logits_processors = [], []
            self.max_tokens, self.stop_sequences = [], []
            return moved

    generator = BatchGenerator(model, **kwargs)
    generator._prompt_batch = PromptBatch.empty(
        model, generator.sampler, prefill_step_size=generator.prefill_step_size)
    return generator
