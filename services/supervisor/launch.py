"""Everything between "start the supervisor" and its loop: ``python -m
anyclaude.services.supervisor`` (what ``anyclaude up`` spawns, in the foreground or
detached). The CLI only talks to it over the control socket."""

from __future__ import annotations

import logging
import sys

from anyclaude import bus, config, logs, pidfile
from anyclaude.errors import ConfigError
from anyclaude.preflight import preflight
from anyclaude.process_table import Plan, plan
from anyclaude.services.supervisor.supervisor import Supervisor

EXIT_CONFIG = 2
EXIT_RUNNING = pidfile.EXIT_RUNNING


def serve(p: Plan, *, console: bool = True) -> None:
    """Run the supervisor in this process until it is stopped. ``console=False`` keeps log
    lines off the terminal (a live view owns it; the log file still gets them).
    Raises ConfigError or pidfile.AlreadyRunning before anything starts."""
    logs.configure("supervisor", log_dir=p.settings.log_dir,
                   console_level=p.settings.logging.level)
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
                   config=config.config_path()).run()
    finally:
        pidfile.release(run_dir, fd)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        serve(plan(), console="--quiet" not in argv)
    except ConfigError as exc:
        print(f"anyclaude: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    except pidfile.AlreadyRunning as exc:
        print(f"anyclaude: {exc}", file=sys.stderr)
        return EXIT_RUNNING
    return 0
