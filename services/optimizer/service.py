"""The optimizer process: answers ``Optimize`` with ``Optimized`` over the bus.

It counts exactly with the model's own tokenizer and template (local_count.py), and hands
the prompt it rendered on in the request it returns (``request["prompt"]``), so the engine
does not render it again. Tokenizing a long prompt takes tens of milliseconds, so requests
run on a few worker threads; the bus loop only hands them out and stays free for heartbeats.
"""

from __future__ import annotations

import threading

from anyclaude import bus, messages, optimizer_config

from .core import Optimizer
from .local_count import LocalCounter


class OptimizerService:
    def __init__(self, settings):
        config = getattr(settings, "optimizer", None) or optimizer_config.OptimizerConfig()
        optimizer_config.check(config, list(settings.models), settings.source)
        self.counter = LocalCounter(settings, timeout=config.count_timeout_s)
        self.optimizer = Optimizer(settings, self.counter, window=self.counter.window)
        self.workers = bus.Workers("optimizer", config.workers)
        self.service = bus.Service("optimizer",
                                   {messages.Optimize: self.workers.handler(self.work)},
                                   info=self.info)

    def work(self, call: bus.Call) -> messages.Message:
        self.counter.begin()
        request, notes = self.optimizer.optimize(_without_prompt(call.message.request))
        prompt = self.counter.prompt_for(request)
        if prompt is not None:
            request = {**request, "prompt": prompt}
        return messages.Optimized(request, notes)

    def info(self) -> dict:
        return {**self.optimizer.info(), "counts": dict(self.counter.stats),
                "tokenizers": self.counter.loaded()}

    def run(self) -> None:
        threading.Thread(target=self.counter.warm, name="warm", daemon=True).start()
        try:
            self.service.run()
        finally:
            self.workers.shutdown()


def _without_prompt(request):
    """A prompt rendered for an earlier request is never handed on for this one."""
    if isinstance(request, dict) and "prompt" in request:
        return {k: v for k, v in request.items() if k != "prompt"}
    return request
