"""The engine process: one generation thread owns the model, fed by a bounded queue.

The bus loop (main thread) only admits, cancels and answers counts; the generation thread
loads the model, marks the service ready, then runs requests one at a time in order.

The core depends on the model's kind: "mlx" runs the model here (EngineCore); "openai" and
"anthropic" forward to an upstream server (backend_openai / backend_anthropic). Every kind
runs ``concurrency`` requests at once (anyclaude/engine_slots.py), one worker thread each:
the MLX core joins them into one continuous batch (mlx/batching.py) when it is above 1, the
upstream cores forward them side by side (and count on a small thread pool, since their
counts may wait on the network).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field

import structlog

from anyclaude import bus, errors, messages
from anyclaude.config import Settings
from anyclaude.engine_slots import engine_concurrency
from anyclaude.services.engine.core import Core
from anyclaude.token_count import is_estimate

log = structlog.get_logger()


@dataclass
class Job:
    call: bus.Call
    enqueued: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def key(self) -> bytes:
        return self.call.peer + b"/" + self.call.request_id

    def is_cancelled(self) -> bool:
        return self.cancelled.is_set() or self.call.gone.is_set()


class EngineService:
    def __init__(self, settings: Settings, model_id: str):
        self.settings = settings
        self.model_id = model_id
        self.model_config = settings.model(model_id)
        self.name = f"engine-{model_id}"
        self.core: Core | None = None
        self.jobs: dict[bytes, Job] = {}          # queued or running, for dedup and cancel
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=settings.engine.queue_size)
        self.concurrency = _concurrency(self.model_config)
        self.running: dict[bytes, Job] = {}
        self.count_workers: bus.Workers | None = None
        self.counters = {"requests": 0, "completed": 0, "cancelled": 0, "failed": 0,
                         "rejected": 0, "output_tokens": 0, "input_tokens": 0,
                         "cache_read_tokens": 0}
        self.load_error = ""
        self.model_facts: dict = {}                # model_note / weights, for `anyclaude status`
        self.started = time.time()
        self.service = bus.Service(self.name, {
            messages.Generate: self.on_generate,
            messages.Cancel: self.on_cancel,
            messages.Count: self.on_count,
        }, info=self.info)

    # -- bus handlers (loop thread) --
    def on_generate(self, call: bus.Call) -> None:
        key = call.peer + b"/" + call.request_id
        if key in self.jobs:  # a resend of a request we already have (Lazy Pirate)
            call.send(messages.Accepted(self._position(self.jobs[key])))
            return
        if self.core is None:
            raise errors.ServiceUnavailable(f"{self.name} is still loading the model")
        job = Job(call)
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            self.counters["rejected"] += 1
            raise errors.Overloaded(f"{self.name} queue is full ({self.queue.maxsize} waiting)")
        self.jobs[key] = job
        self.counters["requests"] += 1
        call.send(messages.Accepted(self._position(job)))

    def on_cancel(self, call: bus.Call) -> None:
        job = self.jobs.get(call.peer + b"/" + call.request_id)
        if job is not None:
            job.cancelled.set()
            log.info("engine.cancel_requested", request_id=call.request_id.decode(errors="replace"))

    def on_count(self, call: bus.Call) -> None:
        if self.core is None:
            raise errors.ServiceUnavailable(f"{self.name} is still loading the model")
        if self.count_workers is not None:   # the count may wait on an upstream: not here
            self.count_workers.handler(self._count)(call)
            return
        call.send(self._count(call))

    def _count(self, call: bus.Call) -> messages.Message:
        tokens = self.core.count(call.message.request)
        return self._counted(tokens)

    def _counted(self, tokens: int) -> messages.Counted:
        return messages.Counted(int(tokens), self.core.context_window,
                                estimated=is_estimate(tokens))

    def _position(self, job: Job) -> int:
        """Requests ahead of this one (0: it runs next or now)."""
        ahead = self.queue.qsize() - 1 + len(self.running) - (self.concurrency - 1)
        return max(0, ahead)

    # -- generation thread --
    def generation_loop(self) -> None:
        try:
            self.core = self._load()
        except errors.AnyclaudeError as exc:
            self.load_error = exc.message
            log.error("engine.load_failed", model=self.model_id, error=exc.message)
            self.service.stop()
            return
        if self.core.slow_count:
            self.count_workers = bus.Workers(
                "engine.count", 4,
                on_crash=lambda exc: bus.error_reply(exc, "engine.count", crash_type="engine"))
        self.service.mark_ready()
        self.core.warm_start()   # requests wait in the queue meanwhile (Accepted is sent)
        # The other workers start after the warm start, which fills the prefix cache alone.
        for i in range(1, self.concurrency):
            threading.Thread(target=self._work, name=f"generation-{i}", daemon=True).start()
        self._work()

    def _work(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                break
            self._run(job)
        self.service.close_thread_sockets()

    def _run(self, job: Job) -> None:
        rid = job.call.request_id.decode(errors="replace")
        request = job.call.message.request
        if job.is_cancelled():
            log.info("engine.dropped_cancelled", request_id=rid)
            self.counters["cancelled"] += 1
            self.jobs.pop(job.key, None)
            return
        self.running[job.key] = job
        outcome = {"kind": None}

        def emit(msg: messages.Message) -> None:
            if isinstance(msg, (messages.Done, messages.Error)):
                outcome["kind"] = msg
            job.call.send(msg)

        try:
            self.core.generate(request, emit, job.is_cancelled)
        except errors.AnyclaudeError as exc:
            emit(messages.Error(exc.type, exc.message, exc.retryable))
        except Exception as exc:
            log.exception("engine.generate_crashed", request_id=rid)
            emit(messages.Error("engine", f"engine failure: {exc.__class__.__name__}: {exc}", True))
        finally:
            self.running.pop(job.key, None)
            self.jobs.pop(job.key, None)
        final = outcome["kind"]
        if isinstance(final, messages.Done):
            self.counters["completed"] += 1
            usage = final.usage
            self.counters["output_tokens"] += usage.get("output_tokens", 0)
            self.counters["input_tokens"] += usage.get("input_tokens", 0)
            self.counters["cache_read_tokens"] += usage.get("cache_read_input_tokens", 0)
        elif isinstance(final, messages.Error) and final.type == "cancelled":
            self.counters["cancelled"] += 1
        else:
            self.counters["failed"] += 1

    def _load(self):
        kind = self.model_config.kind
        if kind in ("openai", "anthropic"):
            if kind == "openai":
                from anyclaude.services.engine.backends.backend_openai import OpenAICore as Core
            else:
                from anyclaude.services.engine.backends.backend_anthropic import AnthropicCore as Core
            log.info("engine.loading", model=self.model_id, kind=kind)
            core = Core(self.model_id, self.model_config)
            log.info("engine.loaded", model=self.model_id, kind=kind, concurrency=self.concurrency)
            return core
        from anyclaude import blas
        from anyclaude.modelfiles.resolve import describe_weights, resolve_model
        from anyclaude.services.engine.mlx.generation import EngineCore
        resolved = resolve_model(self.model_config.path, model_id=self.model_id,
                                 cache_dir=self.settings.cache_dir)
        path = str(resolved.path)
        self.model_facts = {"model_note": resolved.note,
                            "weights": resolved.weights or describe_weights(resolved.path)}
        log.info("engine.loading", model=self.model_id, path=path, blas=blas.active_blas(),
                 **self.model_facts)
        force_file = self.settings.engine.force_file or os.environ.get("ANYCLAUDE_FORCE_FILE") or None
        core = EngineCore(path, model_id=self.model_id,
                          context_window=self.model_config.context_window,  # 0: the model's
                          max_output_tokens=self.model_config.max_output_tokens,
                          prefill_step_size=self.settings.engine.prefill_step_size,
                          tool_parser=self.model_config.tool_parser, force_file=force_file,
                          memory_budget_mb=self.settings.cache.memory_budget_mb,
                          block_tokens=self.settings.cache.block_tokens,
                          kv_dir=str(self.settings.kv_dir),
                          write_retry_s=self.settings.cache.write_retry_s,
                          batch_size=self.concurrency)
        log.info("engine.loaded", model=self.model_id, concurrency=self.concurrency)
        return core

    def info(self) -> dict:
        from anyclaude import blas
        from anyclaude.modelfiles import hub
        cache = self.core.cache_stats() if self.core is not None else {}
        looked = cache.get("hits", 0) + cache.get("misses", 0)
        out = {"model": self.model_id, "blas": blas.active_blas(), "kind": self.model_config.kind,
               "device": _device(self.model_config.kind),
               "context_window": self.model_config.context_window,
               "queue": self.queue.qsize(), "busy": bool(self.running),
               "running": len(self.running),
               "load_error": self.load_error, **self.model_facts, **self.counters,
               "cache": {"hit_rate": round(cache.get("hits", 0) / looked, 3) if looked else None,
                         **{k: cache[k] for k in ("hits", "misses", "disk_hits", "reused_tokens",
                                                  "cached_tokens", "bytes", "budget", "entries")
                            if k in cache}}}
        if self.core is not None:   # what Claude Code's launcher and the optimizer read
            out.update(model_dir=self.core.model_dir, fingerprint=self.core.fingerprint,
                       context_window=self.core.context_window,
                       max_output_tokens=self.core.max_output_tokens,
                       window_source=getattr(getattr(self.core, "window", None), "source",
                                             "configured"))
        download = hub.progress() if self.core is None else None
        if download:   # heartbeats flow while the model downloads (state starting)
            out["download"] = download
        return out

    def run(self) -> None:
        worker = threading.Thread(target=self.generation_loop, name="generation", daemon=True)
        worker.start()
        self.service.run(ready=False)
        if self.core is not None:
            self.core.close()
        if self.load_error:
            raise SystemExit(2)


def _device(kind: str) -> str:
    """Where the model runs: MLX's default device, or the upstream for remote kinds."""
    if kind != "mlx":
        return "upstream"
    try:
        import mlx.core as mx
        return str(mx.default_device())
    except Exception:   # the status must never fail over this
        return "unknown"


def _concurrency(cfg) -> int:
    """Requests run at once (anyclaude/engine_slots.py); for mlx, the batch size."""
    return engine_concurrency(cfg)
