"""The supervisor loop: start children in dependency order, watch them, answer commands.

One thread does everything: the control socket's bus.Service loop (the dispatch every service
uses) also polls the events SUB, and before each poll moves every child's state machine on.
Signals (installed by service_main, see ``drain``) only set a flag.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import structlog
import zmq

from anyclaude import bus, messages
from anyclaude.config import RestartPolicy
from anyclaude.services.supervisor import control
from anyclaude import pidfile
from anyclaude.services.supervisor.child import Child
from anyclaude.process_table import Planned, dependents

log = structlog.get_logger()

TICK_S = 0.05


def child_env(plan: Planned, base: dict, run_dir: Path, config: Path | None) -> dict:
    env = dict(base)
    env["ANYCLAUDE_RUN_DIR"] = str(run_dir)
    env["PYTHONUNBUFFERED"] = "1"
    env["ANYCLAUDE_GRACEFUL_S"] = f"{plan.graceful_timeout:g}"   # how long a stop may take
    if config is not None:
        env["ANYCLAUDE_CONFIG"] = str(config.resolve())
    if plan.kind == "engine":
        try:
            from anyclaude import blas
        except ImportError:
            return env
        env = blas.engine_env(env)
    return env


class Supervisor:
    stop_signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)   # each one calls drain()

    def __init__(self, plans: list[Planned], policy: RestartPolicy, *, log_dir: Path,
                 config: Path | None = None, base_env: dict | None = None,
                 on_tick: Callable[[dict], None] | None = None, clock=time.monotonic):
        self.plans = plans
        self.clock = clock
        self.run_dir = bus.run_dir()
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        base = dict(os.environ if base_env is None else base_env)
        self.children = {p.name: Child(p, policy, log_dir, child_env(p, base, self.run_dir, config),
                                       clock=clock) for p in plans}
        self.order = [p.name for p in plans]
        self.on_tick = on_tick
        self.stopping = False
        self.signals = 0
        self.started_at = clock()

    # -- commands (see control.py) --
    def request_stop(self, why: str) -> None:
        if not self.stopping:
            log.info("supervisor.stopping", why=why)
        self.stopping = True

    def status(self) -> dict:
        now = self.clock()
        return {
            "supervisor": {"pid": os.getpid(), "uptime_s": round(now - self.started_at, 1),
                           "state": "stopping" if self.stopping else "running",
                           "run_dir": str(self.run_dir), "log_dir": str(self.log_dir)},
            "services": [self.children[name].status(now) for name in self.order],
        }

    # -- the loop --
    def run(self) -> None:
        """Run until stopped; returns once every child is gone. Needs the pidfile lock.
        The control socket is a bus.Service named "control" (the same dispatch as every
        service; commands run in this thread, between ticks); the events SUB is watched by
        the same loop, and every tick moves the children's state machines on."""
        removed = pidfile.clean_sockets(self.run_dir)
        if removed:
            log.info("supervisor.stale_sockets_removed", sockets=removed)
        self.service = bus.Service("control", {}, fallback=self._command, supervised=False,
                                   on_tick=self._tick, tick_s=TICK_S)
        events = bus.make_socket(self.service.ctx, zmq.SUB)
        events.setsockopt(zmq.SUBSCRIBE, b"")
        try:
            events.bind(bus.endpoint("events"))
            self.service.watch(events, self._drain_events)
            log.info("supervisor.started", services=self.order)
            self.service.run()
        finally:
            self._kill_all()
            events.close(0)
            pidfile.clean_sockets(self.run_dir)
            log.info("supervisor.stopped")

    def _tick(self) -> None:
        self._step(self.clock())
        if self.on_tick is not None:
            self.on_tick(self.status())
        if self.stopping and self._all_down():
            self.service.stop()

    def _command(self, call: bus.Call) -> None:
        call.send(control.handle(self, call.message))

    def _step(self, now: float) -> None:
        for name in self.order:
            self.children[name].tick(now)
        if self.stopping:
            if self.signals > 1:
                self._kill_all()
            for name in reversed(self.order):
                child = self.children[name]
                if child.state in ("starting", "ready", "backoff") and all(
                        self._down(d) for d in dependents(self.plans, name)):
                    child.stop()
            return
        for name in self.order:
            child = self.children[name]
            if (child.state == "stopped" or child.due(now)) and self._deps_settled(child):
                child.start()

    def _deps_settled(self, child: Child) -> bool:
        return all(self.children[d].settled for d in child.plan.depends_on)

    def _down(self, name: str) -> bool:
        return self.children[name].state in ("stopped", "fatal")

    def _all_down(self) -> bool:
        return all(self._down(name) for name in self.order)

    def _kill_all(self) -> None:
        for child in self.children.values():
            child.kill_now()
        for child in self.children.values():
            if child.proc is not None:
                try:
                    child.proc.wait(timeout=5)
                except Exception:
                    log.error("supervisor.child_unkillable", child=child.name)
                if child.state in ("starting", "ready", "stopping"):
                    child.state = "stopped"

    # -- sockets --
    def _drain_events(self, sock: zmq.Socket) -> None:
        for _ in range(1000):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                beat, _ = messages.decode(frames)
            except messages.WireError:
                continue
            if isinstance(beat, messages.Heartbeat):
                child = self.children.get(beat.service)
                if child is not None:
                    child.heartbeat(beat.pid, beat.info)

    # -- signals (service_main installs them) --
    def drain(self, why: str) -> None:
        """A stop signal: children stop in reverse dependency order; a second one kills."""
        self.signals += 1
        self.request_stop(why)
