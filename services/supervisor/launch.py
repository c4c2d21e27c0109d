"""Everything between "start the supervisor" and its loop, shared by ``python -m
anyclaude.services.supervisor`` (what ``anyclaude up --detach`` spawns) and the foreground
``anyclaude up``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

from anyclaude import bus, config, logs
from anyclaude.config import ProcessTable, Settings
from anyclaude.errors import ConfigError
from anyclaude.services.supervisor import pidfile
from anyclaude.services.supervisor.supervisor import Supervisor, preflight
from anyclaude.services.supervisor.table import Planned, expand

EXIT_CONFIG = 2
EXIT_RUNNING = 3


@dataclass(frozen=True)
class Plan:
    settings: Settings
    table: ProcessTable
    services: list[Planned]


def plan() -> Plan:
    """Settings and the expanded process table. Raises ConfigError."""
    settings = config.load_settings()
    table = config.load_process_table()
    return Plan(settings, table, expand(table, settings))


def serve(p: Plan, *, console_level: str | None = None, console: bool = True,
          on_tick: Callable[[dict], None] | None = None) -> None:
    """Run the supervisor in this process until it is stopped. ``console=False`` keeps log
    lines off the terminal (the live view owns it; the log file still gets them).
    Raises ConfigError or pidfile.AlreadyRunning before anything starts."""
    logs.configure("supervisor", log_dir=p.settings.log_dir,
                   console_level=console_level or p.settings.logging.level)
    if not console:
        root = logging.getLogger()
        for handler in list(root.handlers):
            if type(handler) is logging.StreamHandler:
                root.removeHandler(handler)
    run_dir = bus.run_dir()
    fd = pidfile.acquire(run_dir)
    try:
        preflight(p.services, p.settings)
        Supervisor(p.services, p.table.restart, log_dir=p.settings.log_dir,
                   config=config.config_path(), on_tick=on_tick).run()
    finally:
        pidfile.release(run_dir, fd)


def main() -> int:
    try:
        serve(plan())
    except ConfigError as exc:
        print(f"anyclaude: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    except pidfile.AlreadyRunning as exc:
        print(f"anyclaude: {exc}", file=sys.stderr)
        return EXIT_RUNNING
    return 0
