"""The command table: one place serving the CLI, signals and tests alike.

Each command takes the supervisor and the Command's args and returns a Reply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from anyclaude.messages import Command, Error, Message, Reply

if TYPE_CHECKING:
    from anyclaude.services.supervisor.supervisor import Supervisor

log = structlog.get_logger()


def status(sup: "Supervisor", args: dict) -> Reply:
    return Reply(True, sup.status())


def restart(sup: "Supervisor", args: dict) -> Reply:
    name = args.get("name")
    child = sup.children.get(name) if isinstance(name, str) else None
    if child is None:
        return Reply(False, error=f"unknown service {name!r}; services: {', '.join(sup.order)}")
    if sup.stopping:
        return Reply(False, error="anyclaude is stopping")
    old_pid = child.pid
    log.info("supervisor.restart", child=name, old_pid=old_pid)
    child.stop("restart")
    return Reply(True, {"name": name, "old_pid": old_pid})


def stop(sup: "Supervisor", args: dict) -> Reply:
    sup.request_stop("stop command")
    return Reply(True, {"pid": sup.status()["supervisor"]["pid"]})


def ready(sup: "Supervisor", args: dict) -> Reply:
    name, pid = args.get("service"), args.get("pid")
    child = sup.children.get(name) if isinstance(name, str) else None
    if child is None:
        return Reply(False, error=f"unknown service {name!r}")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return Reply(False, error="ready needs an integer pid")
    if not child.mark_ready(pid):
        return Reply(False, error=f"{name} (pid {pid}) is not the starting process "
                                  f"(state {child.state}, pid {child.pid})")
    return Reply(True)


COMMANDS = {"status": status, "restart": restart, "stop": stop, "ready": ready}


def handle(sup: "Supervisor", msg: Message) -> Message:
    if not isinstance(msg, Command):
        return Error("bad_frame", f"the supervisor takes Command messages, not {msg.kind}")
    command = COMMANDS.get(msg.name)
    if command is None:
        return Reply(False, error=f"unknown command {msg.name!r}; commands: {', '.join(COMMANDS)}")
    return command(sup, msg.args)
