"""How many requests one engine runs at once: the engine service and the front door's
admission (one slot per request it runs) must agree, so both ask here.

``models.<id>.concurrency`` when set (> 0). Unset: 4 for every kind. An MLX model runs
them as one continuous batch (services/engine/mlx/batching.py): decoding is bound by
reading the weights, so 4 sequences per step cost little more than one, and a fifth
request waits in the admission queue rather than slowing the four. ``concurrency = 1``
keeps the one-request-at-a-time path.
"""

from __future__ import annotations

DEFAULT_CONCURRENCY = 4


def engine_concurrency(model_config) -> int:
    configured = int(getattr(model_config, "concurrency", 0) or 0)
    return configured if configured > 0 else DEFAULT_CONCURRENCY
