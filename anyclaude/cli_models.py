"""`anyclaude pull <id|hub id>` and `anyclaude models`: model files ahead of time.

`pull` downloads a configured model (by its id) or any Hugging Face id into the local
Hugging Face cache, with a progress bar (a line every few seconds when not on a terminal).
`models` lists the configured models and the models already in that cache, with their size
and whether they look loadable (config.json + safetensors weights + a tokenizer).
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from pathlib import Path

import click

from anyclaude import config, errors, logs
from anyclaude.modelfiles import hub

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
LINE_EVERY_S = 2.0


def _settings() -> config.Settings | None:
    try:
        return config.load_settings()
    except errors.ConfigError:
        return None        # `pull org/name` still works with a broken config


def _repo_for(target: str, settings: config.Settings | None) -> str:
    models = settings.models if settings is not None else {}
    if target in models:
        cfg = models[target]
        if cfg.kind != "mlx":
            raise click.ClickException(f"models.{target} is kind {cfg.kind}: it runs on another "
                                       "server, there is nothing to download")
        if not cfg.path:
            raise click.ClickException(f"models.{target} is the demo model: it is built offline "
                                       "on first start, there is nothing to download")
        if Path(cfg.path).expanduser().is_dir():
            raise click.ClickException(f"models.{target}.path is the local directory "
                                       f"{cfg.path}: there is nothing to download")
        target = cfg.path
    if not _HUB_ID.match(target):
        known = ", ".join(sorted(models)) or "none configured"
        raise click.ClickException(f"{target!r} is neither a configured model ({known}) nor a "
                                   "Hugging Face id such as mlx-community/Qwen3-4B-4bit")
    return target


@click.command()
@click.argument("target")
def pull(target: str) -> None:
    """Download a model ahead of time: a configured model id or a Hugging Face id."""
    repo = _repo_for(target, _settings())
    cached = hub.cached_path(repo)
    if cached is not None:
        click.echo(f"{repo} is already in the local cache: {cached}")
        return
    from huggingface_hub.utils import disable_progress_bars
    disable_progress_bars()     # ours is the one bar (theirs would draw over it)
    logs.configure("cli")       # warnings on stderr; info lines would break the bar
    result: dict = {}
    worker = threading.Thread(target=_download, args=(repo, target, result), daemon=True)
    worker.start()
    if sys.stdout.isatty():
        _bar(repo, worker, result)
    else:
        _lines(repo, worker)
    worker.join()
    if "error" in result:
        raise click.ClickException(result["error"])
    click.echo(f"{repo}: done, in {result['path']}")


def _download(repo: str, model_id: str, result: dict) -> None:
    try:
        result["path"] = hub.download(repo, model_id=model_id)
    except errors.AnyclaudeError as exc:
        result["error"] = exc.message
    except Exception as exc:   # shown as one line, not a traceback
        result["error"] = f"could not download {repo}: {exc.__class__.__name__}: {exc}"


def _current(repo: str) -> dict | None:
    return next((d for d in hub.progress() if d["repo"] == repo), None)


def _bar(repo: str, worker: threading.Thread, result: dict) -> None:
    while worker.is_alive() and _current(repo) is None:   # the file list comes first
        time.sleep(0.1)
    now = _current(repo)
    if now is None:
        return
    total = max(now["total"], 1)
    with click.progressbar(length=total, label=f"pulling {repo}", show_pos=False,
                           show_percent=True, show_eta=True) as bar:
        shown = 0
        while worker.is_alive():
            now = _current(repo)
            if now is not None and now["done"] > shown:
                bar.update(now["done"] - shown)
                shown = now["done"]
            time.sleep(0.2)
        worker.join()
        if "path" in result:
            bar.update(total - shown)


def _lines(repo: str, worker: threading.Thread) -> None:
    last = 0.0
    while worker.is_alive():
        now = _current(repo)
        if now is not None and time.monotonic() - last >= LINE_EVERY_S:
            last = time.monotonic()
            share = now["done"] / now["total"] if now["total"] else 0.0
            click.echo(f"pulling {repo}: {_size(now['done'])} of {_size(now['total'])} "
                       f"({share:.0%})", nl=True)
        time.sleep(0.1)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


# --- models ------------------------------------------------------------------------------

def loadable(folder: Path) -> bool:
    """What the engine needs to load a model: config, safetensors weights, a tokenizer."""
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    return ("config.json" in names and any(n.endswith(".safetensors") for n in names)
            and bool(names & {"tokenizer.json", "tokenizer.model", "tokenizer_config.json"}))


def cached_models() -> list[dict]:
    """Models in the local Hugging Face cache (newest revision of each)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound
    try:
        info = scan_cache_dir(hub.hub_cache_dir())
    except CacheNotFound:
        return []
    out = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        newest = max(repo.revisions, key=lambda r: r.last_modified)
        out.append({"repo": repo.repo_id, "bytes": repo.size_on_disk,
                    "loadable": loadable(Path(newest.snapshot_path)),
                    "path": str(newest.snapshot_path)})
    return out


def configured_models(settings: config.Settings, cached: list[dict]) -> list[dict]:
    in_cache = {c["repo"]: c for c in cached}
    out = []
    for model_id, cfg in settings.models.items():
        if cfg.kind != "mlx":
            where = f"upstream ({cfg.kind})"
        elif not cfg.path:
            where = "demo (built offline)"
        elif Path(cfg.path).expanduser().is_dir():
            where = "local directory"
        elif cfg.path in in_cache:
            where = "in the local cache"
        else:
            where = f"not downloaded (`anyclaude pull {model_id}`)"
        out.append({"id": model_id, "kind": cfg.kind, "path": cfg.path,
                    "context_window": cfg.context_window, "where": where})
    return out


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the lists as JSON.")
def models(as_json: bool) -> None:
    """The configured models, and the models in the local Hugging Face cache."""
    settings = config.load_settings()
    cached = cached_models()
    listed = configured_models(settings, cached)
    if as_json:
        click.echo(json.dumps({"configured": listed, "cached": cached}, indent=2))
        return
    click.echo("configured:")
    for m in listed:
        click.echo(f"  {m['id']:<20} {m['kind']:<9} window {m['context_window']:<7} "
                   f"{m['path'] or '-'}  [{m['where']}]")
    cache_dir = hub.hub_cache_dir() or "~/.cache/huggingface/hub"
    click.echo(f"in the Hugging Face cache ({cache_dir}):" if cached else
               f"in the Hugging Face cache ({cache_dir}): none")
    for c in cached:
        state = "loadable" if c["loadable"] else "incomplete (no config, weights or tokenizer)"
        click.echo(f"  {c['repo']:<48} {_size(c['bytes']):>9}  {state}")
