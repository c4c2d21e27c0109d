"""The optimizer process: answers ``Optimize`` with ``Optimized`` over the bus.

Optimizing needs exact token counts from an engine (a bus round trip), so requests run on a
few worker threads; the bus loop only hands them out and stays free for heartbeats.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import structlog

from anyclaude import bus, errors, messages, optimizer_config

from .core import Optimizer
from .counter import EngineCounter

log = structlog.get_logger()


class OptimizerService:
    def __init__(self, settings):
        config = getattr(settings, "optimizer", None) or optimizer_config.OptimizerConfig()
        optimizer_config.check(config, list(settings.models), settings.source)
        self.counter = EngineCounter(settings, timeout=config.count_timeout_s)
        self.optimizer = Optimizer(settings, self.counter, window=self.counter.window)
        self.pool = ThreadPoolExecutor(config.workers, thread_name_prefix="optimize")
        self.service = bus.Service("optimizer", {messages.Optimize: self.handle},
                                   info=self.optimizer.info)

    def handle(self, call: bus.Call) -> None:
        self.pool.submit(self.work, call)

    def work(self, call: bus.Call) -> None:
        try:
            request, notes = self.optimizer.optimize(call.message.request)
            reply = messages.Optimized(request, notes)
        except errors.AnyclaudeError as exc:
            reply = messages.Error(exc.type, exc.message, exc.retryable)
        except Exception as exc:
            log.exception("optimizer.failed")
            reply = messages.Error("internal", f"optimizer: {exc.__class__.__name__}: {exc}")
        call.send(reply)

    def run(self) -> None:
        try:
            self.service.run()
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)
