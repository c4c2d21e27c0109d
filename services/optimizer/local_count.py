"""Exact token counts in the optimizer itself: ``count(request) -> int`` with the model's own
tokenizer and chat template (the engine's code, anyclaude/prompt; no weights), so fitting a
request needs no round trip to the engine, and the prompt it rendered is handed on to the
engine (``prompt_for``, anyclaude/prompt/handoff.py) so the request is rendered once.

Where the model lives, and its fingerprint, the engine says once (``Command("info")``:
model_dir, fingerprint). It is asked again when its socket is a new one (the engine
restarted) - a stat, no round trip. A model whose tokenizer cannot be loaded here, and the
remote kinds, count the old way (counter.EngineCounter: the engine's Count, or an estimate).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import structlog

from anyclaude import bus, errors, messages
from anyclaude.prompt import handoff
from anyclaude.prompt.template import ChatRenderer, Rendered

from .counter import EngineCounter

log = structlog.get_logger()

INFO_TIMEOUT_S = 2.0    # the engine's bus loop answers at once even while it generates
RENDERS_KEPT = 8        # per thread: the fit's renders, so the handed-on prompt is not redone


@dataclass
class _Model:
    socket_id: tuple            # (inode, mtime) of the engine's socket when asked
    fingerprint: str
    model_dir: str
    context_window: int         # what the engine reported (0: not reported)
    renderer: ChatRenderer | None   # None: counted through the engine instead
    pins: handoff.PinLengths | None


class LocalCounter:
    def __init__(self, settings, *, timeout: float = 10.0):
        self.settings = settings
        self.info_timeout = min(timeout, INFO_TIMEOUT_S)
        self.fallback = EngineCounter(settings, timeout=timeout)
        self._models: dict[str, _Model] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self.stats = {"local_counts": 0, "engine_counts": 0, "info_asks": 0}

    def warm(self) -> None:
        """Import mlx-lm's tokenizer code and learn each local model now, off the request
        path (the import alone takes seconds on a busy CPU). Runs on a background thread at
        start; a request meanwhile waits for it. An engine not up yet is learned later."""
        try:
            import mlx_lm.utils  # noqa: F401
        except Exception:
            log.exception("optimizer.tokenizer_import_failed")
        for model_id, config in self.settings.models.items():
            if config.kind != "mlx":
                continue
            try:
                self._model_for(model_id)
            except errors.AnyclaudeError as exc:
                log.info("optimizer.tokenizer_deferred", model=model_id, reason=exc.message)

    def __call__(self, request: dict) -> int:
        model = self._model_for(request["model"])
        if model is None or model.renderer is None:
            self.stats["engine_counts"] += 1
            return self.fallback(request)
        self.stats["local_counts"] += 1
        return len(self._render(model, request).ids)

    def window(self, model_id: str) -> int:
        """The context window the engine reported (0 until known)."""
        found = self._models.get(model_id)
        if found is not None and found.context_window > 0:
            return found.context_window
        return self.fallback.window(model_id)

    def loaded(self) -> list[str]:
        """The models this process counts for itself (their tokenizer is loaded)."""
        return sorted(m for m, known in self._models.items() if known.renderer is not None)

    def begin(self) -> None:
        """A new request on this thread: forget the previous one's renders."""
        self._local.renders = {}

    def prompt_for(self, request: dict) -> dict | None:
        """The rendered prompt to hand on in the request (None: the engine renders)."""
        model = self._models.get(request["model"])
        if model is None or model.renderer is None:
            return None
        rendered = self._render(model, request)
        return handoff.pack(rendered, key=handoff.render_key(request),
                            fingerprint=model.fingerprint, pin=model.pins(request, rendered.ids))

    # -- pieces --
    def _render(self, model: _Model, request: dict) -> Rendered:
        renders = getattr(self._local, "renders", None)
        if renders is None:
            renders = self._local.renders = {}
        key = handoff.render_key(request)
        found = renders.get(key)
        if found is None:
            found = renders[key] = model.renderer.render_prompt(request)
            while len(renders) > RENDERS_KEPT:
                renders.pop(next(iter(renders)))
        return found

    def _model_for(self, model_id: str) -> _Model | None:
        """What we know of the model's engine; None: count through the engine this time."""
        config = self.settings.models.get(model_id)
        if config is not None and config.kind != "mlx":
            return None
        name = f"engine-{model_id}"
        try:
            stat = bus.socket_path(name).stat()
        except FileNotFoundError:   # stopped or not started yet: say so at once
            raise errors.ServiceUnavailable(
                f"cannot count tokens: {name} is not running") from None
        socket_id = (stat.st_ino, stat.st_mtime_ns)
        known = self._models.get(model_id)
        if known is not None and known.socket_id == socket_id:
            return known
        with self._lock:   # one thread asks and loads; the others wait for it
            known = self._models.get(model_id)
            if known is None or known.socket_id != socket_id:
                known = self._learn(model_id, name, socket_id, known)
                if known is None:
                    self._models.pop(model_id, None)
                else:
                    self._models[model_id] = known
        return known

    def _learn(self, model_id: str, name: str, socket_id: tuple,
               old: _Model | None) -> _Model | None:
        info = self._ask_info(name)
        if "model_dir" not in info:   # still loading (its Count says so), or an engine that
            return None               # does not say: count through it, ask again next time
        model_dir, fingerprint = str(info["model_dir"] or ""), str(info.get("fingerprint") or "")
        window = int(info.get("context_window") or 0)
        if not model_dir or not fingerprint:   # no local tokenizer: the engine counts
            return _Model(socket_id, fingerprint, model_dir, window, None, None)
        if old is not None and (old.model_dir, old.fingerprint) == (model_dir, fingerprint):
            return _Model(socket_id, fingerprint, model_dir, window, old.renderer, old.pins)
        renderer = _load_renderer(model_id, model_dir)
        pins = handoff.PinLengths(renderer) if renderer is not None else None
        log.info("optimizer.tokenizer_loaded" if renderer else "optimizer.tokenizer_unavailable",
                 model=model_id, model_dir=model_dir, fingerprint=fingerprint)
        return _Model(socket_id, fingerprint, model_dir, window, renderer, pins)

    def _ask_info(self, name: str) -> dict:
        self.stats["info_asks"] += 1
        client = bus.Client(name)
        try:
            reply = client.request(messages.Command("info"), timeout=self.info_timeout)
        except (errors.ServiceUnavailable, errors.Timeout, errors.EngineFailed) as exc:
            raise errors.ServiceUnavailable(
                f"cannot count tokens: {name} is not reachable ({exc.message})") from None
        finally:
            client.close()
        if not isinstance(reply, messages.Reply) or not reply.ok:
            raise errors.BadFrame(f"{name} answered info with {reply.kind}")
        return reply.data

    def close(self) -> None:
        self.fallback.close()


def _load_renderer(model_id: str, model_dir: str) -> ChatRenderer | None:
    """The model's chat renderer from its tokenizer files, or None (then the engine counts)."""
    try:
        from mlx_lm.utils import load_tokenizer
        tokenizer = load_tokenizer(Path(model_dir))
    except Exception as exc:   # a tokenizer we cannot load here is no reason to fail requests
        log.warning("optimizer.tokenizer_load_failed", model=model_id, model_dir=model_dir,
                    error=f"{exc.__class__.__name__}: {exc}")
        return None
    return ChatRenderer(tokenizer, model_id=model_id)
