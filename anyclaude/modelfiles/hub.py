"""Models from the Hugging Face hub: the local cache first, then a download with progress.

While a download runs, :func:`progress` says how far it is (bytes done / total, rate, ETA):
the engine puts it in its heartbeat while it is ``starting``, so `anyclaude status`, the
`up` live view and the status page show it; `anyclaude pull` draws a bar from it.

How the bytes are counted: a dry run first lists the files (sizes, which are cached), then
``done`` is the cached bytes plus the size of every blob (finished or ``*.incomplete``) that
appeared in the repo's blob folder since the download began. That reads the cache on disk,
so it holds for plain HTTP and Xet transfers alike, whatever tqdm bars the library draws.

An interrupted transfer is resumed by huggingface_hub itself (HTTP Range, a few tries);
when it gives up, finished files stay in the cache and the next `pull`/`up` fetches only
the rest. ``HF_ENDPOINT`` / ``HF_HUB_CACHE`` are read at call time (tests point them at a
fake hub on loopback).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from anyclaude.errors import ModelLoadError

log = structlog.get_logger()   # a lazy proxy: follows logs.configure() done after this import


@dataclass
class _Download:
    repo: str
    model_id: str
    blobs: Path
    total: int
    cached: int                 # bytes of the wanted files already in the cache at start
    files: int
    preexisting: frozenset = frozenset()
    started: float = field(default_factory=time.monotonic)

    def done(self) -> int:
        n = self.cached
        try:
            for entry in os.scandir(self.blobs):
                if entry.name.endswith(".incomplete") or entry.name not in self.preexisting:
                    n += entry.stat().st_size
        except OSError:          # the folder appears with the first file
            pass
        return min(n, self.total) if self.total else n

    def snapshot(self) -> dict:
        done, elapsed = self.done(), time.monotonic() - self.started
        rate = (done - self.cached) / elapsed if elapsed > 0.5 else 0.0
        left = self.total - done
        return {"repo": self.repo, "model": self.model_id, "done": done, "total": self.total,
                "files": self.files, "elapsed_s": round(elapsed, 1),
                "rate_bps": round(rate), "eta_s": round(left / rate) if rate > 0 else None}


_lock = threading.Lock()
_active: dict[str, _Download] = {}


def progress() -> list[dict]:
    """The downloads running in this process, one dict each (empty when none)."""
    with _lock:
        running = list(_active.values())
    return [d.snapshot() for d in running]


def hub_endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def hub_cache_dir() -> str | None:
    """The Hugging Face cache the library would use, read from the environment now."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def allow_patterns() -> list[str]:
    from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS
    return list(DEFAULT_ALLOW_PATTERNS)


def cached_path(repo: str) -> Path | None:
    """The complete local snapshot of ``repo``, or None (nothing is fetched)."""
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(repo, local_files_only=True, allow_patterns=allow_patterns(),
                                      cache_dir=hub_cache_dir()))
    except Exception:  # not (completely) in the local cache
        return None


def from_hub(repo: str, model_id: str) -> Path:
    """The local directory of ``repo``: from the cache, else downloaded (with progress)."""
    path = cached_path(repo)
    if path is not None:
        log.info("engine.model.cached", model=model_id, repo=repo, path=str(path))
        return path
    return download(repo, model_id=model_id)


def download(repo: str, *, model_id: str = "") -> Path:
    """Fetch the model files of ``repo`` into the Hugging Face cache; raises ModelLoadError
    with what to do next. Progress is visible through :func:`progress` meanwhile."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE
    from huggingface_hub.file_download import repo_folder_name

    model_id = model_id or repo
    kwargs = dict(allow_patterns=allow_patterns(), cache_dir=hub_cache_dir(),
                  endpoint=hub_endpoint())
    try:
        plan = snapshot_download(repo, dry_run=True, **kwargs)
    except Exception as exc:
        raise _explain(exc, repo, model_id) from None
    cache_root = Path(kwargs["cache_dir"] or HF_HUB_CACHE).expanduser()
    blobs = cache_root / repo_folder_name(repo_id=repo, repo_type="model") / "blobs"
    job = _Download(repo=repo, model_id=model_id, blobs=blobs, files=len(plan),
                    total=sum(f.file_size or 0 for f in plan),
                    cached=sum(f.file_size or 0 for f in plan if not f.will_download),
                    preexisting=_complete_blobs(blobs))
    with _lock:
        _active[repo] = job
    log.info("engine.model.downloading", model=model_id, repo=repo, files=job.files,
             total_bytes=job.total, cached_bytes=job.cached)
    try:
        path = snapshot_download(repo, **kwargs)
    except Exception as exc:
        done = job.done()
        log.warning("engine.model.download_failed", model=model_id, repo=repo, done_bytes=done,
                    total_bytes=job.total, error=f"{exc.__class__.__name__}: {exc}"[:300])
        raise _explain(exc, repo, model_id, done=done, total=job.total) from None
    finally:
        with _lock:
            _active.pop(repo, None)
    log.info("engine.model.downloaded", model=model_id, repo=repo, path=path,
             total_bytes=job.total, seconds=round(time.monotonic() - job.started, 1))
    return Path(path)


def _complete_blobs(blobs: Path) -> frozenset:
    try:
        return frozenset(e.name for e in os.scandir(blobs) if not e.name.endswith(".incomplete"))
    except OSError:
        return frozenset()


def _causes(exc: BaseException):
    seen = 0
    while exc is not None and seen < 8:
        yield exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1


def _explain(exc: Exception, repo: str, model_id: str, *, done: int = 0,
             total: int = 0) -> ModelLoadError:
    from huggingface_hub.errors import (GatedRepoError, RepositoryNotFoundError,
                                        RevisionNotFoundError)
    advice = (f"Download it on a connected machine (`huggingface-cli download {repo}`), copy "
              f"the directory here and set models.{model_id}.path to that local directory")
    for cause in _causes(exc):
        if isinstance(cause, GatedRepoError):
            return ModelLoadError(f"could not download {repo}: the repository is gated; accept "
                                  "its license on huggingface.co and log in (`huggingface-cli "
                                  f"login`), or: {advice}")
        if isinstance(cause, RevisionNotFoundError):
            return ModelLoadError(f"could not download {repo}: the hub has no such revision")
        if isinstance(cause, RepositoryNotFoundError):
            return ModelLoadError(f"could not download {repo}: no such model on the Hugging Face "
                                  f"hub (check the spelling of models.{model_id}.path)")
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    if done or total:
        return ModelLoadError(
            f"the download of {repo} was interrupted after {_size(done)} of {_size(total)} "
            f"({reason[:200]}). Finished files stay in the Hugging Face cache: run `anyclaude "
            f"pull {repo}` (or start again) to fetch the rest")
    return ModelLoadError(f"could not download {repo}: no network access to the Hugging Face "
                          f"hub ({reason[:200]}). {advice}")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover
