"""How many requests one engine runs at once: the engine service and the front door's
admission (one slot per request it runs) must agree, so both ask here.

``models.<id>.concurrency`` when set (> 0). Unset: 4 for the remote kinds (openai,
anthropic); 1 for mlx. An MLX model with ``concurrency`` > 1 runs that many requests as one
continuous batch (services/engine/mlx/batching.py). Its default stays 1 until a lone
request is shown to be as fast through the batch as on the one-at-a-time path: measured on
a loaded shared machine it cost ~8 % more CPU (docs/performance.md, section 4).
"""

from __future__ import annotations

DEFAULT_CONCURRENCY = {"mlx": 1}
DEFAULT_REMOTE_CONCURRENCY = 4


def engine_concurrency(model_config) -> int:
    configured = int(getattr(model_config, "concurrency", 0) or 0)
    if configured > 0:
        return configured
    kind = getattr(model_config, "kind", "mlx")
    return DEFAULT_CONCURRENCY.get(kind, DEFAULT_REMOTE_CONCURRENCY)
