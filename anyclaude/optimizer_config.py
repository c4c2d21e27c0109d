"""The ``[optimizer]`` section of anyclaude.toml: context fitting and optional reductions.

``[optimizer]`` holds the defaults for every model; ``[optimizer.models.<id>]`` overrides
any profile key for one model::

    [optimizer]
    fit_target_ratio = 0.6          # after a cut the prompt is about 60% of the budget
    keep_last_turns = 2             # exchanges left whole (unless nothing else fits)

    [optimizer.models.qwen-small]
    tool_description_max_chars = 300
    tool_allowlist = ["Bash", "Read", "Edit", "Write", "Glob", "Grep"]
    system_drop_sections = ["Tone and style"]

Configured reductions are off by default; automatic ones (auto_reduce.py) run only when the
system prompt and tools are too big for the model's window. Lists may also be given as comma-separated strings (so
ANYCLAUDE_OPTIMIZER_TOOL_ALLOWLIST="Bash,Read" works).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from anyclaude.errors import ConfigError


@dataclass(frozen=True)
class ProfileConfig:
    """What the optimizer may do to a prompt for one model."""
    fit_target_ratio: float = 0.6        # a cut brings the prompt down to this share of the budget
    keep_last_turns: int = 2             # exchanges left whole by placeholders and drops
    output_reserve_ratio: float = 0.25   # the output reserve is at most this share of the window
    tool_result_max_ratio: float = 0.2   # tool output of one message above this share of the
                                         # budget is "oversized"
    tool_description_max_chars: int = 0  # reduction: trim tool descriptions (0 = off)
    tool_allowlist: tuple = ()           # reduction: only these tools (empty = all)
    system_drop_sections: tuple = ()     # reduction: markdown sections removed from the system
    auto_reductions: bool = True         # when system + tools are too big for the window,
    auto_reduce_above: float = 0.75      # (over this share of the prompt limit) reduce them
    auto_reduce_to: float = 0.5          # in tiers until they take at most this share
    core_tools: tuple = ("Bash", "Read", "Edit", "MultiEdit", "Write", "Glob", "Grep", "LS")


@dataclass(frozen=True)
class OptimizerConfig(ProfileConfig):
    count_timeout_s: float = 10.0        # one Count round trip to an engine
    workers: int = 4                     # requests optimized at once
    small_for_tiny_requests: bool = False  # route tiny tool-less requests to routes.small
    models: dict = field(default_factory=dict)  # model id -> table of ProfileConfig overrides


_PROFILE_KEYS = tuple(f.name for f in dataclasses.fields(ProfileConfig))
_LIST_KEYS = ("tool_allowlist", "system_drop_sections", "core_tools")
_RANGES = {
    "fit_target_ratio": (0.1, 1.0),
    "output_reserve_ratio": (0.0, 0.9),
    "tool_result_max_ratio": (0.01, 1.0),
    "auto_reduce_above": (0.05, 1.0),
    "auto_reduce_to": (0.05, 1.0),
}


def check(config: OptimizerConfig, model_ids, where: str = "anyclaude.toml") -> None:
    """Validate the whole section at start-up so a bad value fails fast, naming its key."""
    _check_profile(config, where, "optimizer")
    if config.workers < 1:
        raise ConfigError(f"{where}: optimizer.workers = {config.workers}; must be at least 1")
    if not isinstance(config.models, dict):
        raise ConfigError(f"{where}: optimizer.models must be a table of [optimizer.models.<id>]")
    for model_id in config.models:
        if model_id not in model_ids:
            raise ConfigError(f"{where}: optimizer.models.{model_id} names no configured model; "
                              f"configured: {', '.join(model_ids)}")
        profile(config, model_id, where)


def profile(config: OptimizerConfig, model_id: str, where: str = "anyclaude.toml") -> ProfileConfig:
    """The effective profile of one model: the [optimizer] defaults plus its overrides."""
    base = {key: getattr(config, key) for key in _PROFILE_KEYS}
    overrides = (config.models or {}).get(model_id) or {}
    prefix = f"optimizer.models.{model_id}"
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: {prefix} must be a table")
    unknown = set(overrides) - set(_PROFILE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {prefix}.{sorted(unknown)[0]}; "
                          f"allowed: {', '.join(_PROFILE_KEYS)}")
    from anyclaude.config import build  # late: config.py imports this module
    scalars = {k: v for k, v in overrides.items() if k not in _LIST_KEYS}
    built = build(ProfileConfig, scalars, where, prefix)
    merged = {**base, **{k: getattr(built, k) for k in scalars}}
    for key in _LIST_KEYS:
        value = overrides.get(key, merged[key])
        merged[key] = _names(value, f"{where}: {prefix if key in overrides else 'optimizer'}.{key}")
    result = ProfileConfig(**merged)
    _check_profile(result, where, prefix)
    return result


def _names(value, what: str) -> tuple:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{what} = {value!r}: expected a list of names")
    return tuple(value)


def _check_profile(p: ProfileConfig, where: str, prefix: str) -> None:
    for key, (low, high) in _RANGES.items():
        value = getattr(p, key)
        if not isinstance(value, (int, float)) or not low <= value <= high:
            raise ConfigError(f"{where}: {prefix}.{key} = {value!r}; "
                              f"must be between {low} and {high}")
    if p.keep_last_turns < 1:
        raise ConfigError(f"{where}: {prefix}.keep_last_turns = {p.keep_last_turns}; "
                          "must be at least 1")
    for key in _LIST_KEYS:
        _names(getattr(p, key), f"{where}: {prefix}.{key}")
    if p.auto_reduce_to > p.auto_reduce_above:
        raise ConfigError(f"{where}: {prefix}.auto_reduce_to = {p.auto_reduce_to} is above "
                          f"auto_reduce_above = {p.auto_reduce_above}; it must not be")
