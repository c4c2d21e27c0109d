"""`anyclaude logs`: the tail of the JSON log files (<service>.log) and the captured
output of each process (<service>.stderr) in the log directory, optionally followed."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

TAIL_BYTES = 1024 * 1024


def services(log_dir: Path) -> list[str]:
    names = {p.name.rsplit(".", 1)[0] for p in log_dir.glob("*.log")}
    names |= {p.name[:-len(".stderr")] for p in log_dir.glob("*.stderr")}
    return sorted(names)


def tail_lines(path: Path, n: int) -> tuple[list[str], int]:
    """The last n lines of a file and the offset where it ends."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
            fh.seek(max(0, end - TAIL_BYTES))
            data = fh.read()
    except FileNotFoundError:
        return [], 0
    lines = data.decode("utf-8", "replace").splitlines()
    return (lines[-n:] if n > 0 else []), end


def render(line: str, service: str = "") -> str:
    """A JSON log line as `time service level event key=value ...`; other lines as they are."""
    try:
        record = json.loads(line)
    except ValueError:
        return f"{service}| {line}" if service else line
    if not isinstance(record, dict):
        return line
    record = dict(record)
    stamp = str(record.pop("timestamp", ""))[11:23]
    who = record.pop("service", service)
    level = record.pop("level", "")
    event = record.pop("event", "")
    record.pop("pid", None)
    rest = " ".join(f"{k}={v}" for k, v in record.items())
    return " ".join(part for part in (stamp, f"{who:<12}", f"{level:<7}", str(event), rest) if part)


def _stamp(line: str) -> str:
    try:
        return str(json.loads(line).get("timestamp", ""))
    except (ValueError, AttributeError):
        return ""


def initial(log_dir: Path, name: str | None, n: int) -> tuple[list[str], dict[Path, int]]:
    """The lines to show first, and the offsets to follow each file from."""
    offsets: dict[Path, int] = {}
    if name is None:
        merged = []
        for service in services(log_dir):
            path = log_dir / f"{service}.log"
            lines, offsets[path] = tail_lines(path, n)
            merged.extend((_stamp(line), render(line, service)) for line in lines)
        merged.sort(key=lambda pair: pair[0])
        return [text for _, text in merged[-n:]], offsets
    out = []
    log_path, err_path = log_dir / f"{name}.log", log_dir / f"{name}.stderr"
    lines, offsets[log_path] = tail_lines(log_path, n)
    out.extend(render(line, name) for line in lines)
    lines, offsets[err_path] = tail_lines(err_path, n)
    if lines:
        out.append(f"--- {err_path.name} (stdout and stderr of the process) ---")
        out.extend(lines)
    return out, offsets


def follow(offsets: dict[Path, int], poll: float = 0.25) -> Iterator[str]:
    """New lines appended to the files, forever (the caller stops on Ctrl-C)."""
    partial: dict[Path, bytes] = {}
    while True:
        for path, offset in list(offsets.items()):
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size < offset:  # truncated or rotated: start over
                offset = 0
            if size == offset:
                continue
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = partial.pop(path, b"") + fh.read()
                offsets[path] = fh.tell()
            *complete, rest = data.split(b"\n")
            if rest:
                partial[path] = rest
            service = path.name.rsplit(".", 1)[0]
            for raw in complete:
                line = raw.decode("utf-8", "replace")
                yield render(line, service) if path.suffix == ".log" else f"{service}| {line}"
        time.sleep(poll)
