"""The `anyclaude` command: up, down, status, restart, logs.

Everything talks to the supervisor through its control socket with the same Command
messages tests use. Errors are one line saying what to do next, never a traceback.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time

import click

from anyclaude import bus, errors, logtail, messages, pidfile, statusview
from anyclaude.preflight import FRONTDOOR, preflight
from anyclaude.process_table import Plan, plan

EXIT_NOT_RUNNING = 3


class Failed(Exception):
    """A one-line message for the user, and the exit code."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def main() -> None:
    try:
        cli(prog_name="anyclaude", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Failed as exc:
        text = str(exc)
        click.echo(text if text.startswith("anyclaude ") else f"anyclaude: {text}", err=True)
        sys.exit(exc.code)
    except errors.AnyclaudeError as exc:
        click.echo(f"anyclaude: {exc.message}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"anyclaude: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
        sys.exit(1)
    except Exception as exc:  # a bug: still one line, the details are in the logs
        click.echo(f"anyclaude: unexpected {exc.__class__.__name__}: {exc}", err=True)
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Claude Code on a model that runs on your own machine."""


# --- talking to the supervisor ----------------------------------------------------------

def running() -> int | None:
    return pidfile.running_pid(bus.run_dir())


def require_running() -> int:
    pid = running()
    if pid is None:
        raise Failed("anyclaude is not running; start it with `anyclaude up`", EXIT_NOT_RUNNING)
    return pid


def command(name: str, args: dict | None = None, timeout: float = 5.0) -> dict:
    client = bus.Client("control")
    try:
        reply = client.request(messages.Command(name, args or {}), timeout=timeout)
    except errors.AnyclaudeError as exc:
        raise Failed(f"the supervisor did not answer ({exc.message}); "
                     "`anyclaude logs supervisor` may say why") from None
    finally:
        client.close()
    if not reply.ok:
        raise Failed(reply.error)
    return reply.data


def url(p: Plan) -> str | None:
    if not any(s.kind == FRONTDOOR for s in p.services):
        return None
    host = p.settings.server.host
    return f"http://{'[' + host + ']' if ':' in host else host}:{p.settings.server.port}"


def ready_lines(p: Plan) -> list[str]:
    address = url(p)
    if address is None:
        return [f"anyclaude is ready ({len(p.services)} services)."]
    return [f"anyclaude is ready: {address}",
            f"Point Claude Code at it: `anyclaude claude`, or ANTHROPIC_BASE_URL={address} claude",
            f"Status page: {address}/status  (Prometheus: {address}/metrics)"]


def already_running(pid: int) -> Failed:
    return Failed(f"anyclaude is already running (pid {pid}); `anyclaude status` shows it")


# --- up ----------------------------------------------------------------------------------

@cli.command()
@click.option("--detach", "-d", is_flag=True, help="Run in the background; return once ready.")
@click.option("--timeout", type=float, default=None,
              help="With --detach: seconds to wait for readiness "
                   "(default: the longest ready timeout plus 30).")
def up(detach: bool, timeout: float | None) -> None:
    """Start anyclaude (foreground: Ctrl-C stops it)."""
    p = plan()
    pid = running()
    if pid is not None:
        raise already_running(pid)
    preflight(p.services, p.settings)
    if detach:
        _up_detached(p, timeout)
    else:
        _up_foreground(p)


def _up_foreground(p: Plan) -> None:
    """Start the supervisor as a child process and show its status until it stops. Ctrl-C
    (which the terminal also delivers to the supervisor) stops everything."""
    out = sys.stdout
    tty = out.isatty()
    if tty:
        view = statusview.LiveView(out, f"anyclaude — {url(p) or 'no front door'} — Ctrl-C stops")
    else:
        view = statusview.LineView(out)
    err_path = _supervisor_stderr(p)
    with open(err_path, "ab") as err:
        # with a live view the terminal is the view's; otherwise log lines go to it as usual
        proc = subprocess.Popen([sys.executable, "-m", "anyclaude.services.supervisor",
                                 *(["--quiet"] if tty else [])], stdin=subprocess.DEVNULL,
                                stdout=err if tty else None, stderr=err if tty else None)
    last: dict = {}
    try:
        last = _follow(proc, view, p, last)
    except KeyboardInterrupt:
        _ask_stop(proc)
        try:
            last = _follow(proc, view, p, last)
        except KeyboardInterrupt:
            proc.kill()
            proc.wait()
    _check_exit(proc.returncode, err_path)
    if last and isinstance(view, statusview.LiveView):
        view.update(last, force=True)  # the final states, past the redraw throttle
    click.echo("anyclaude stopped.")


def _follow(proc: subprocess.Popen, view, p: Plan, last: dict) -> dict:
    """Show status changes until the supervisor exits; the last status seen."""
    announced = bool(last) and all(s["state"] == "ready" for s in last["services"])
    while proc.poll() is None:
        status = _try_status()
        if status is not None:
            last = status
            view.update(status)
            if not announced and all(s["state"] == "ready" for s in status["services"]):
                announced = True
                if isinstance(view, statusview.LineView):
                    for line in ready_lines(p):
                        click.echo(line)
                else:
                    view.header += "  (all ready)"
        time.sleep(0.1)
    return last


def _ask_stop(proc: subprocess.Popen) -> None:
    try:
        command("stop", timeout=2.0)
    except Failed:
        proc.send_signal(signal.SIGTERM)   # the control socket is not up (yet): same effect


def _check_exit(code: int, err_path) -> None:
    if code == pidfile.EXIT_RUNNING:
        raise already_running(pidfile.read_pid(bus.run_dir()))
    if code not in (0, -signal.SIGINT, -signal.SIGTERM):
        tail = [line for line in logtail.tail_lines(err_path, 5)[0] if line.strip()]
        raise Failed(f"the supervisor exited (code {code}): {tail[-1] if tail else 'no output'}; "
                     f"see {err_path}")


def _supervisor_stderr(p: Plan):
    log_dir = p.settings.log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    return log_dir / "supervisor.stderr"


def _up_detached(p: Plan, timeout: float | None) -> None:
    err_path = _supervisor_stderr(p)
    with open(err_path, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "anyclaude.services.supervisor"],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)
    if timeout is None:
        timeout = max((s.ready_timeout for s in p.services), default=0) + 30
    deadline = time.monotonic() + timeout
    view = statusview.LineView(sys.stdout)
    status = None
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            if code == pidfile.EXIT_RUNNING:
                raise already_running(pidfile.read_pid(bus.run_dir()))
            tail = [line for line in logtail.tail_lines(err_path, 5)[0] if line.strip()]
            raise Failed(f"the supervisor exited (code {code}): {tail[-1] if tail else 'no output'}; "
                         f"see {err_path}")
        status = _try_status()
        if status is not None:
            view.update(status)
            states = [s["state"] for s in status["services"]]
            if all(state in ("ready", "fatal") for state in states):
                break
        time.sleep(0.1)
    else:
        waiting = [s for s in (status or {"services": []})["services"] if s["state"] != "ready"]
        names = ", ".join(f"{s['name']} ({s['state']})" for s in waiting) or "the supervisor"
        raise Failed(f"not ready after {timeout:g} s: {names}; it keeps trying in the "
                     "background: `anyclaude status` shows it, `anyclaude down` stops it")
    failed = [s for s in status["services"] if s["state"] == "fatal"]
    if not failed:
        for line in ready_lines(p) + statusview.model_notes(status):
            click.echo(line)
        return
    for s in failed:
        for line in statusview.failure(s):
            click.echo(line, err=True)
    names = ", ".join(s["name"] for s in failed)
    raise Failed(f"{names} failed to start; the rest keeps running. Fix the cause, then "
                 f"`anyclaude restart {failed[0]['name']}`, or `anyclaude down`")


def _try_status() -> dict | None:
    if not pidfile.socket_ready(bus.run_dir()):
        return None
    try:
        return command("status", timeout=1.0)
    except Failed:
        return None


# --- down, status, restart ---------------------------------------------------------------

@cli.command()
@click.option("--timeout", type=float, default=120.0, show_default=True,
              help="Seconds to wait for everything to stop.")
def down(timeout: float) -> None:
    """Stop anyclaude and every process it started."""
    pid = running()
    if pid is None:
        click.echo("anyclaude is not running.")
        return
    try:
        command("stop")
    except Failed:
        os.kill(pid, signal.SIGTERM)  # the control socket is wedged; the signal does the same
    deadline = time.monotonic() + timeout
    while pidfile.alive(pid):
        if time.monotonic() > deadline:
            raise Failed(f"anyclaude (pid {pid}) did not stop within {timeout:g} s; "
                         f"`anyclaude logs supervisor` may say why; `kill {pid}` to insist")
        time.sleep(0.1)
    click.echo("anyclaude stopped.")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
def status(as_json: bool) -> None:
    """Show each service: state, pid, uptime, restarts, heartbeat, counters."""
    require_running()
    data = command("status")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    sup = data["supervisor"]
    click.echo(f"anyclaude supervisor pid {sup['pid']}, up {statusview.duration(sup['uptime_s'])}"
               f"{' (stopping)' if sup['state'] == 'stopping' else ''}")
    for line in statusview.table(data):
        click.echo(line)


@cli.command()
@click.argument("name")
@click.option("--timeout", type=float, default=None,
              help="Seconds to wait for it to be ready again (default: its ready timeout + 30).")
def restart(name: str, timeout: float | None) -> None:
    """Restart one service and wait until it is ready again."""
    require_running()
    old_pid = command("restart", {"name": name})["old_pid"]
    wait = timeout
    deadline = None
    while True:
        service = next(s for s in command("status")["services"] if s["name"] == name)
        if deadline is None:
            wait = wait if wait is not None else service["ready_timeout"] + 30
            deadline = time.monotonic() + wait
        if service["state"] == "ready" and service["pid"] != old_pid:
            click.echo(f"{name} restarted (pid {service['pid']}).")
            return
        if service["state"] == "fatal":
            for line in statusview.failure(service):
                click.echo(line, err=True)
            raise Failed(f"{name} did not come back; see `anyclaude logs {name}`")
        if time.monotonic() > deadline:
            raise Failed(f"{name} is still {service['state']} after {wait:g} s; "
                         f"`anyclaude status` shows it")
        time.sleep(0.1)


# --- logs --------------------------------------------------------------------------------

@cli.command()
@click.argument("name", required=False)
@click.option("-n", "lines", type=int, default=50, show_default=True, help="Lines to show.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C ends).")
def logs(name: str | None, lines: int, follow: bool) -> None:
    """Show the logs: all services' JSON logs merged by time, or NAME's log and output."""
    p = plan()
    log_dir = p.settings.log_dir
    known = logtail.services(log_dir) if log_dir.is_dir() else []
    if name is not None and name not in known:
        raise Failed(f"no logs for {name!r} in {log_dir}; "
                     f"services with logs: {', '.join(known) or 'none yet'}")
    if not known:
        click.echo(f"no logs yet in {log_dir}")
        return
    shown, offsets = logtail.initial(log_dir, name, lines)
    for line in shown:
        click.echo(line)
    if follow:
        try:
            for line in logtail.follow(offsets):
                click.echo(line)
        except KeyboardInterrupt:
            pass


# --- commands other modules provide -----------------------------------------------------

def _add_optional_commands() -> None:
    """`claude`, `env`, `cache`, `pull` and `models` live in their own modules; a missing
    one is skipped."""
    for module, names in (("anyclaude.cli_claude", ("claude_command", "env_command")),
                          ("anyclaude.cli_cache", ("cache",)),
                          ("anyclaude.cli_models", ("pull", "models"))):
        try:
            found = importlib.import_module(module)
        except ImportError:
            continue
        for name in names:
            command = getattr(found, name, None)
            if isinstance(command, click.Command):
                cli.add_command(command)


_add_optional_commands()

if __name__ == "__main__":
    main()
