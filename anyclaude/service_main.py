"""The common start of every service process: settings, logs, signals, clean exit."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

import structlog

from anyclaude import config, logs
from anyclaude.errors import AnyclaudeError


def run(name: str, start: Callable[[config.Settings], object]) -> None:
    """Load settings, configure logging, call ``start(settings)`` -> an object with ``run()``
    and ``service`` (a bus.Service); SIGTERM/SIGINT stop the service's loop."""
    try:
        settings = config.load_settings()
    except AnyclaudeError as exc:
        print(f"{name}: {exc.message}", file=sys.stderr)
        raise SystemExit(2)
    logs.configure(name, log_dir=settings.log_dir, console_level=settings.logging.level)
    try:
        process = start(settings)
    except AnyclaudeError as exc:
        structlog.get_logger().error(f"{name.split('-')[0]}.start_failed", error=exc.message)
        print(f"{name}: {exc.message}", file=sys.stderr)
        raise SystemExit(2)

    def stop(signum, _frame):
        structlog.get_logger().info("service.signal", signal=signal.Signals(signum).name)
        process.service.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    process.run()
