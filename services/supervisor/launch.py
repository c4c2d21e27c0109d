"""Everything between "start the supervisor" and its loop: ``python -m
anyclaude.services.supervisor [--quiet]`` (what ``anyclaude up`` spawns, in the foreground or
detached), started through service_main like every process. The CLI only talks to it over
the control socket."""

from __future__ import annotations

import sys

from anyclaude import bus, config, pidfile, service_main
from anyclaude.preflight import preflight
from anyclaude.process_table import Plan, plan
from anyclaude.services.supervisor.supervisor import Supervisor



class SupervisorProcess(Supervisor):
    """The supervisor holding the pidfile lock from start to the end of ``run``.
    Raises ConfigError or pidfile.AlreadyRunning (service_main's exit 2 or 3) before
    anything starts."""

    def __init__(self, p: Plan):
        self.run_dir = bus.run_dir()
        self.fd = pidfile.acquire(self.run_dir)
        try:
            preflight(p.services, p.settings)
            super().__init__(p.services, p.table.restart, log_dir=p.settings.log_dir,
                             config=config.config_path())
        except BaseException:
            pidfile.release(self.run_dir, self.fd)
            raise

    def run(self) -> None:
        try:
            super().run()
        finally:
            pidfile.release(self.run_dir, self.fd)


def main(argv: list[str] | None = None) -> None:
    """``--quiet`` keeps log lines off the terminal (a live view owns it; the log file
    still gets them)."""
    argv = sys.argv[1:] if argv is None else argv
    service_main.run("supervisor", SupervisorProcess, load=plan, label="anyclaude",
                     console="--quiet" not in argv)
