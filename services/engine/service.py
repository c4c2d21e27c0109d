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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import structlog

from anyclaude import bus, errors, messages
from anyclaude.config import Settings
from anyclaude.engine_slots import engine_concurrency
from anyclaude.services.engine.core import Core

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
        self.count_pool: ThreadPoolExecutor | None = None
        self.counters = {"requests": 0, "completed": 0, "cancelled": 0, "failed": 0,
                         "rejected": 0, "output_tokens": 0, "input_tokens": 0,
                         "cache_read_tokens": 0}
        self.load_error = ""
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
        if self.count_pool is not None:   # the count may wait on an upstream: not in this loop
            self.count_pool.submit(self._count, call)
            return
        tokens = self.core.count(call.message.request)
        call.send(messages.Counted(tokens, self.model_config.context_window))

    def _count(self, call: bus.Call) -> None:
        try:
            tokens = self.core.count(call.message.request)
            call.send(messages.Counted(tokens, self.model_config.context_window))
        except errors.AnyclaudeError as exc:
            call.send(messages.Error(exc.type, exc.message, exc.retryable))
        except Exception as exc:
            log.exception("engine.count_failed")
            call.send(messages.Error("engine", f"count failed: {exc.__class__.__name__}: {exc}"))

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
            self.count_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="count")
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
        from anyclaude.services.engine.mlx.generation import EngineCore
        path = self.model_config.path
        if not path:
            path = str(self._demo_model())
        log.info("engine.loading", model=self.model_id, path=path, blas=blas.active_blas())
        force_file = self.settings.engine.force_file or os.environ.get("ANYCLAUDE_FORCE_FILE") or None
        core = EngineCore(path, model_id=self.model_id,
                          context_window=self.model_config.context_window,
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

    def _demo_model(self):
        from anyclaude.tinymodel import ensure_tiny_model
        out = self.settings.cache_dir / "models"
        log.warning("engine.demo_model", path=str(out),
                    note="random-weight demo model: it answers gibberish. Set models.<id>.path "
                         "to a real model, e.g. mlx-community/Qwen2.5-Coder-7B-Instruct-4bit")
        return ensure_tiny_model(out)

    def info(self) -> dict:
        from anyclaude import blas
        cache = self.core.cache_stats() if self.core is not None else {}
        looked = cache.get("hits", 0) + cache.get("misses", 0)
        return {"model": self.model_id, "blas": blas.active_blas(),
                "queue": self.queue.qsize(), "busy": bool(self.running),
                "running": len(self.running),
                "load_error": self.load_error, **self.counters,
                "cache": {"hit_rate": round(cache.get("hits", 0) / looked, 3) if looked else None,
                          **{k: cache[k] for k in ("hits", "misses", "disk_hits", "reused_tokens",
                                                   "cached_tokens", "bytes", "entries") if k in cache}}}

    def run(self) -> None:
        worker = threading.Thread(target=self.generation_loop, name="generation", daemon=True)
        worker.start()
        self.service.run(ready=False)
        if self.core is not None:
            self.core.close()
        if self.load_error:
            raise SystemExit(2)


def _concurrency(cfg) -> int:
    """Requests run at once (anyclaude/engine_slots.py); for mlx, the batch size."""
    return engine_concurrency(cfg)
