"""What the engine service asks of a core: the one interface every kind implements.

``kind = "mlx"`` runs ``mlx.generation.EngineCore`` (the model in this process); the
remote kinds run ``backends.backend_openai.OpenAICore`` / ``backends.backend_anthropic
.AnthropicCore`` (an upstream server). service.py talks to all of them through this
Protocol and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from anyclaude.messages import Message

Emit = Callable[[Message], None]


class Core(Protocol):
    context_window: int
    """Tokens the model takes, prompt + output (anyclaude/modelfiles/window.py's rule)."""

    max_output_tokens: int

    slow_count: bool
    """``count`` may wait on the network: the service counts on a thread pool, not in its
    bus loop (the remote kinds)."""

    model_dir: str
    """The local model directory whose tokenizer and chat template render the prompt, so the
    optimizer can count and render with the same code ("" for the remote kinds: their
    upstream tokenizes)."""

    fingerprint: str
    """The model's id for caches and for the optimizer's handed-over prompt ("" remote)."""

    def count(self, request: dict) -> int:
        """The prompt tokens ``generate`` would process for this request."""

    def generate(self, request: dict, emit: Emit, cancelled: Callable[[], bool]) -> None:
        """Progress / Delta frames, then exactly one Done or Error, through ``emit``."""

    def warm_start(self) -> None:
        """Runs once after the service is ready, before the first queued request (the MLX
        core preloads the most recent cache file; the others do nothing). Never raises."""

    def cache_stats(self) -> dict:
        """Prefix-cache counters for status (empty when the core has no cache)."""

    def close(self) -> None:
        """Release connections and threads at shutdown."""
