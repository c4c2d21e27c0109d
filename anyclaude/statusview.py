"""Readable views of the supervisor's status: the `anyclaude status` table, state changes
as lines, and the live table of the foreground `anyclaude up`."""

from __future__ import annotations

import shutil
import time
from typing import TextIO

COLUMNS = ("SERVICE", "STATE", "PID", "UPTIME", "RESTARTS", "HEARTBEAT", "INFO")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _mb(n) -> str:
    return f"{(n or 0) / 2**20:.0f}MB"


def download_text(d: dict) -> str:
    """A model download in progress, as `anyclaude status` and `up` show it."""
    total, done = d.get("total") or 0, d.get("done") or 0
    text = f"downloading {d.get('repo')} {_mb(done)}/{_mb(total)}"
    if total:
        text += f" ({done / total:.0%})"
    if d.get("rate_bps"):
        text += f" {d['rate_bps'] / 2**20:.1f}MB/s"
    if d.get("eta_s") is not None:
        text += f" eta {duration(d['eta_s'])}"
    return text


def _engine(i: dict) -> list[str]:
    if i.get("download"):
        return [download_text(d) for d in i["download"]]
    cache = i.get("cache") or {}
    rate = cache.get("hit_rate")
    window = ([f"window={i['context_window']}({i.get('window_source', '?')})"]
              if i.get("context_window") else [])
    return [f"model={i.get('model')}", *window, f"blas={i.get('blas')}",
            f"queue={i.get('queue', 0)}",
            f"done={i.get('completed', 0)}",
            f"cache hit={'-' if rate is None else f'{rate:.0%}'}",
            f"cached={cache.get('cached_tokens', 0)}tok/{_mb(cache.get('bytes'))}",
            f"disk hits={cache.get('disk_hits', 0)}"]


def _kvstore(i: dict) -> list[str]:
    looked = (i.get("hits") or 0) + (i.get("misses") or 0)
    rate = f"{i.get('hits', 0) / looked:.0%}" if looked else "-"
    return [f"store={_mb(i.get('bytes'))}/{_mb(i.get('budget'))}", f"files={i.get('entries', 0)}",
            f"hit={rate}", *(["DEGRADED (disk writes failing)"] if i.get("degraded") else [])]


def _websearch(i: dict) -> list[str]:
    if not i.get("configured"):
        return ["search off (set search.searxng_url)"]
    reach = {True: "reachable", False: "UNREACHABLE", None: "unchecked"}[i.get("reachable")]
    return [f"searxng {reach}", f"breaker={(i.get('breaker') or {}).get('state')}",
            f"searches={(i.get('counters') or {}).get('searches', 0)}"]


def _optimizer(i: dict) -> list[str]:
    routes = ",".join(f"{k}:{v}" for k, v in (i.get("routes") or {}).items()) or "-"
    reduced = ",".join(f"{k}:{v}" for k, v in (i.get("reductions") or {}).items())
    return [f"requests={i.get('requests', 0)}", f"routes={routes}", f"cuts={i.get('cuts', 0)}",
            f"saved={i.get('tokens_saved', 0)}tok", *([f"reduced={reduced}"] if reduced else [])]


_SUMMARIES = {"engine": _engine, "kvstore": _kvstore, "websearch": _websearch,
              "optimizer": _optimizer}


def service_summary(name: str, info: dict, width: int = 90) -> str:
    """What matters about a service at a glance; the full info is in `status --json`."""
    summarize = _SUMMARIES.get(name.split("-")[0])
    if summarize is None or not info:
        return info_summary(info, width)
    try:
        text = " ".join(summarize(info))
    except (TypeError, ValueError, AttributeError, KeyError):
        return info_summary(info, width)
    return text if len(text) <= width else text[:width - 1] + "…"


def info_summary(info: dict, width: int = 60) -> str:
    parts = []
    for key, value in info.items():
        if isinstance(value, dict):
            value = ",".join(f"{k}:{v}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.3g}"
        parts.append(f"{key}={value}")
    text = " ".join(parts)
    return text if len(text) <= width else text[:width - 1] + "…"


def rows(status: dict) -> list[tuple[str, ...]]:
    out = []
    for s in status["services"]:
        age = s.get("last_heartbeat_age_s")
        out.append((s["name"], s["state"], str(s["pid"] or "-"), duration(s.get("uptime_s")),
                    str(s["restarts"]), "-" if age is None else f"{age:.1f}s ago",
                    service_summary(s["name"], s.get("info") or {})))
    return out


def table(status: dict, *, details: bool = True) -> list[str]:
    """The status as aligned lines; fatal and backoff services get their reason below."""
    body = rows(status)
    widths = [max(len(r[i]) for r in [COLUMNS, *body]) for i in range(len(COLUMNS) - 1)]
    lines = []
    for row in [COLUMNS, *body]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    if details:
        for s in status["services"]:
            if s["state"] in ("fatal", "backoff") and s.get("reason"):
                lines.extend(failure(s))
        lines.extend(model_notes(status))
    return [line.rstrip() for line in lines]


def model_notes(status: dict) -> list[str]:
    """Which model each engine runs and how its weights are held (from its info)."""
    lines = []
    for s in status["services"]:
        info = s.get("info") or {}
        if s["name"].startswith("engine-") and (info.get("model_note") or info.get("weights")):
            weights = f" [weights: {info['weights']}]" if info.get("weights") else ""
            lines.append(f"{s['name']}: {info.get('model_note') or info.get('model')}{weights}")
    return lines


def failure(service: dict, indent: str = "  ") -> list[str]:
    lines = [f"{service['name']} is {service['state']}: {service['reason']}"]
    tail = service.get("stderr_tail") or []
    if tail:
        lines.append(f"{indent}last output:")
        lines.extend(f"{indent}| {line}" for line in tail)
    return lines


class LineView:
    """Prints each service's state change as one line (for pipes, logs and --detach)."""

    def __init__(self, out: TextIO):
        self.out = out
        self.seen: dict[str, tuple] = {}

    def update(self, status: dict) -> None:
        for s in status["services"]:
            key = (s["state"], s["pid"])
            if self.seen.get(s["name"]) == key:
                continue
            before = self.seen.get(s["name"], ("-",))[0]
            self.seen[s["name"]] = key
            if before == "-" and s["state"] == "stopped":
                continue
            line = f"{time.strftime('%H:%M:%S')} {s['name']}: {before} -> {s['state']}"
            if s["pid"]:
                line += f" (pid {s['pid']})"
            if s["state"] in ("backoff", "fatal") and s.get("reason"):
                line += f": {s['reason']}"
            print(line, file=self.out, flush=True)


class LiveView:
    """Redraws the status table in place on a terminal, a few times a second at most."""

    def __init__(self, out: TextIO, header: str, interval: float = 0.25):
        self.out, self.header, self.interval = out, header, interval
        self.drawn = 0
        self.last = 0.0
        self.last_lines: list[str] = []

    def update(self, status: dict, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        width = shutil.get_terminal_size().columns
        state = status["supervisor"]["state"]
        lines = [self.header + ("  (stopping…)" if state == "stopping" else ""), "",
                 *table(status)]
        lines = [line[:width - 1] for line in lines]  # a wrapped line would break the redraw
        if lines == self.last_lines:
            return
        self.last_lines = lines
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F\x1b[J")
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self.drawn = len(lines)
