"""The one start every process goes through (``services/*/__main__.py``): settings, logs,
signals, a graceful drain, a clean exit.

    service_main.run("optimizer", OptimizerService)

``start(loaded)`` builds the process: an object with ``run()`` (blocks until the process
ends; may return an exit code) and ``service`` (its bus.Service: heartbeats, the ready
signal, dispatch to handlers, per-thread replies; long work goes to ``bus.Workers`` and
``bus.ThreadClients``). Optional on the process:

- ``drain(why)``: what a stop signal does (the front door closes its listener and lets open
  requests finish; the supervisor stops its children). Default: stop the bus loop.
- ``stop_signals``: the signals that drain (default SIGTERM and SIGINT).

A configuration problem ends the process with one line on stderr, ``<label>: <message>``, and
exit code 2 (or the ``exit_code`` of the exception, e.g. the supervisor's "already running").
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable

import structlog

from anyclaude import config, logs
from anyclaude.errors import AnyclaudeError

EXIT_CONFIG = 2
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run(name: str, start: Callable[[object], object], *,
        load: Callable[[], object] = config.load_settings, label: str | None = None,
        console: bool = True) -> None:
    """Load settings (``load()``: Settings, or anything with ``.settings``), configure logging
    (``console=False``: the log file only), call ``start(loaded)``, install the stop signals,
    run; exits with ``run()``'s return value (None: 0)."""
    label = label or name
    try:
        loaded = load()
    except Exception as exc:
        _refuse(label, exc)
    settings = getattr(loaded, "settings", loaded)
    logs.configure(name, log_dir=settings.log_dir, console_level=settings.logging.level)
    if not console:
        _quiet_console()
    try:
        process = start(loaded)
    except Exception as exc:
        if _exit_code(exc) is not None:
            structlog.get_logger().error(f"{name.split('-')[0]}.start_failed",
                                         error=_message(exc))
        _refuse(label, exc)
    install_signals(process)
    code = process.run()
    if code:
        raise SystemExit(code)


def install_signals(process) -> None:
    drain = getattr(process, "drain", None)

    def on_signal(signum, _frame):
        why = signal.Signals(signum).name
        structlog.get_logger().info("service.signal", signal=why)
        if drain is not None:
            drain(why)
        else:
            process.service.stop()

    for sig in getattr(process, "stop_signals", STOP_SIGNALS):
        signal.signal(sig, on_signal)


def _exit_code(exc: BaseException) -> int | None:
    if isinstance(exc, AnyclaudeError):
        return EXIT_CONFIG
    code = getattr(exc, "exit_code", None)
    return code if isinstance(code, int) else None


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, AnyclaudeError) else str(exc)


def _refuse(label: str, exc: BaseException):
    """One line and the exit code for a problem a user can fix; anything else propagates."""
    code = _exit_code(exc)
    if code is None:
        raise exc
    print(f"{label}: {_message(exc)}", file=sys.stderr)
    raise SystemExit(code)


def _quiet_console() -> None:
    """Keep log lines off the terminal (a live view owns it); the log file still gets them."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
