"""Placeholder services for the supervisor tests: ``python placeholders.py NAME MODE [ARG]``.

ok          a heartbeating bus.Service, ready at once; answers Search with one result
slow SECS   the same, ready only after SECS seconds (heartbeats meanwhile)
after DEP   pings DEP over the bus at start, writes what it saw to <log dir>/NAME.deps,
            and exits 1 unless DEP said it was ready; then behaves like ok
crash       writes a line to stderr and exits 1 at once, on every start
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from anyclaude import bus, messages

HEARTBEAT_S = 0.2


def serve(name: str, ready_after: float = 0.0) -> None:
    served = {"searches": 0}

    def search(call: bus.Call) -> None:
        served["searches"] += 1
        call.send(messages.Results([{"url": "https://example.org/", "title": call.message.query,
                                     "snippet": "", "page_age": None}]))

    service = bus.Service(name, {messages.Search: search},
                          info=lambda: {"mode": "placeholder", **served},
                          heartbeat_interval=HEARTBEAT_S)
    signal.signal(signal.SIGTERM, lambda *_: service.stop())
    if ready_after:
        threading.Timer(ready_after, service.mark_ready).start()
    service.run(ready=not ready_after)


def check_dependency(name: str, dep: str) -> None:
    client = bus.Client(dep)
    try:
        reply = client.request(messages.Command("ping"), timeout=5.0)
        seen = reply.data.get("state", "?")
    except Exception as exc:
        seen = f"unreachable ({exc})"
    finally:
        client.close()
    log_dir = Path(os.environ["ANYCLAUDE_LOGGING_DIR"])
    with open(log_dir / f"{name}.deps", "a") as fh:
        fh.write(f"{dep} {seen}\n")
    if seen != "ready":
        print(f"{name}: dependency {dep} is {seen}", file=sys.stderr)
        sys.exit(1)


def main(argv: list[str]) -> None:
    name, mode, arg = argv[1], argv[2], (argv[3] if len(argv) > 3 else "")
    if mode == "crash":
        print(f"{name}: crashing on purpose (mode crash)", file=sys.stderr)
        sys.exit(1)
    if mode == "after":
        check_dependency(name, arg)
    serve(name, ready_after=float(arg) if mode == "slow" else 0.0)


if __name__ == "__main__":
    main(sys.argv)
