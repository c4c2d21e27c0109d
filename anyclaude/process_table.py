"""The process table as the supervisor runs it: each_model services expanded, placeholders
filled in, and the services put in dependency order. The CLI reads the same plan (what
will run, the front door's address) without importing the supervisor."""

from __future__ import annotations

import dataclasses
import sys

from anyclaude import config
from anyclaude.config import ProcessTable, ServiceSpec, Settings
from anyclaude.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Planned:
    """One process to run. ``kind`` is the table entry it came from (``engine`` for
    ``engine-demo``); ``depends_on`` names planned processes, not table entries."""
    name: str
    kind: str
    command: tuple
    depends_on: tuple
    ready_timeout: float
    graceful_timeout: float
    heartbeat_timeout: float
    model: str = ""


@dataclasses.dataclass(frozen=True)
class Plan:
    settings: Settings
    table: ProcessTable
    services: list


def plan() -> Plan:
    """Settings and the expanded process table. Raises ConfigError."""
    settings = config.load_settings()
    table = config.load_process_table()
    return Plan(settings, table, expand(table, settings))


def expand(table: ProcessTable, settings: Settings, python: str | None = None) -> list[Planned]:
    """Planned processes in an order where every dependency comes before its dependents."""
    python = python or sys.executable
    instances: dict[str, list[str]] = {}   # table entry -> planned names
    planned: list[Planned] = []
    for spec in table.services:
        models = _models_for(spec, settings) if spec.each_model else [""]
        instances[spec.name] = []
        for model in models:
            name = f"{spec.name}-{model}" if spec.each_model else spec.name
            instances[spec.name].append(name)
            planned.append(Planned(
                name=name, kind=spec.name, model=model,
                command=tuple(_fill(part, python, model) for part in spec.command),
                depends_on=spec.depends_on, ready_timeout=spec.ready_timeout,
                graceful_timeout=spec.graceful_timeout, heartbeat_timeout=spec.heartbeat_timeout))
    resolved = [dataclasses.replace(p, depends_on=tuple(
        name for dep in p.depends_on for name in instances[dep])) for p in planned]
    return _in_dependency_order(resolved, table.source)


def _models_for(spec: ServiceSpec, settings: Settings) -> list[str]:
    return [model_id for model_id, model in settings.models.items()
            if not spec.model_kinds or model.kind in spec.model_kinds]


def _fill(part: str, python: str, model: str) -> str:
    return part.replace("{python}", python).replace("{model}", model)


def _in_dependency_order(planned: list[Planned], source: str) -> list[Planned]:
    """Stable topological sort (file order among equals); a cycle is a ConfigError."""
    by_name = {p.name: p for p in planned}
    done: list[Planned] = []
    placed: set[str] = set()
    visiting: list[str] = []

    def place(p: Planned) -> None:
        if p.name in placed:
            return
        if p.name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(p.name):], p.name])
            raise ConfigError(f"{source}: services depend on each other in a cycle: {cycle}")
        visiting.append(p.name)
        for dep in p.depends_on:
            place(by_name[dep])
        visiting.pop()
        placed.add(p.name)
        done.append(p)

    for p in planned:
        place(p)
    return done


def dependents(planned: list[Planned], name: str) -> list[str]:
    return [p.name for p in planned if name in p.depends_on]
