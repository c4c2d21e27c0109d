"""How many requests one engine runs at once: the engine service and the front door's
admission (one slot per request it runs) must agree, so both ask here.

``models.<id>.concurrency`` when set (> 0). Unset: 4, for every kind. An MLX model with
``concurrency`` > 1 runs that many requests as one continuous batch
(services/engine/mlx/batching.py); 1 runs them one at a time (stream_generate).

Why 4 for MLX: Claude Code's main turn, its side calls and a few Task subagents rarely
exceed four at once; on the 2-core CPU four clients got 2.4x one client's throughput, and
a lone request through the batch was as fast as one at a time (docs/performance.md,
section 8). Each running request holds its own KV, so a larger batch trades memory (and
the window each request can use) for throughput: raise it per model on a bigger machine.
"""

from __future__ import annotations

DEFAULT_CONCURRENCY = 4


def engine_concurrency(model_config) -> int:
    configured = int(getattr(model_config, "concurrency", 0) or 0)
    if configured > 0:
        return configured
    return DEFAULT_CONCURRENCY
