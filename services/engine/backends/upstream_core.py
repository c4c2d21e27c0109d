"""What the openai and anthropic backends share: configuration, the error envelope of
``generate``, and ``post``: one request to the upstream chosen by cache affinity, failing
over to the next upstream while nothing has been received.

A backend core has the two methods the engine service runs (like the MLX EngineCore):
``count(request) -> int`` and ``generate(request, emit, cancelled)``, which emits Progress
(keepalives while the upstream is silent), Delta batches and exactly one Done or Error.
``slow_count`` tells the service that ``count`` may wait on the network.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import structlog

from anyclaude import errors
from anyclaude.messages import Error, Progress
from anyclaude.modelfiles.window import remote_window

from anyclaude.services.engine.backends import upstream_errors as uerr
from anyclaude.services.engine.backends.affinity import Affinity, session_key
from anyclaude.services.engine.envelope import run_generate
from anyclaude.services.engine.backends.upstream_http import Exchange, UpstreamUnreachable, parse_base_url
from anyclaude.services.engine.backends.upstream_trace import Trace

log = structlog.get_logger()

KEEPALIVE_S = 5.0
MAX_400_RETRIES = 3

# (status, error text, error object) -> a changed body to send again, or None to give up
Retry400 = Callable[[int, str, dict], "bytes | None"]


class UpstreamCore:
    kind = "upstream"
    slow_count = True
    model_dir = ""       # the upstream tokenizes: no local tokenizer for the optimizer
    fingerprint = ""

    def __init__(self, model_id: str, cfg):
        self.model_id = model_id
        self.cfg = cfg
        urls = list(getattr(cfg, "base_urls", None) or ()) or [cfg.base_url]
        if not all(isinstance(u, str) for u in urls):
            raise errors.ConfigError(f"models.{model_id}.base_urls must be a list of URL strings")
        urls = [u for u in urls if u.strip()]
        if not urls:
            raise errors.ConfigError(f"models.{model_id}.base_url is required for kind {cfg.kind}")
        where = f"models.{model_id}.base_url" + ("s" if len(urls) > 1 else "")
        self.upstreams = {up.url: up for up in (parse_base_url(u, where) for u in urls)}
        self.affinity = Affinity(list(self.upstreams))
        self.key_env = cfg.api_key_env or ""
        self.model_name = cfg.path or model_id
        self.context_window = remote_window(int(cfg.context_window))
        self.max_output_tokens = int(cfg.max_output_tokens)
        self.timeout_s = float(getattr(cfg, "timeout_s", 600.0) or 600.0)
        self.trace_dir = getattr(cfg, "trace_dir", "") or ""
        self.keepalive_s = KEEPALIVE_S    # Progress this often while the upstream is silent
        self._stats = {"hits": 0, "misses": 0, "reused_tokens": 0}
        if self.key_env and not os.environ.get(self.key_env):
            log.warning("engine.api_key_missing", model=model_id, api_key_env=self.key_env)
        log.info("engine.upstream.ready", model=model_id, kind=self.kind,
                 upstreams=list(self.upstreams), upstream_model=self.model_name)

    # -- what the engine service asks of every core --
    def warm_start(self) -> None:
        """Nothing to preload: the upstream keeps its own caches."""

    def cache_stats(self) -> dict:
        """Prefix-cache hits as the upstreams reported them (cached prompt tokens > 0)."""
        return dict(self._stats)

    def record_usage(self, usage: dict) -> None:
        reused = usage.get("cache_read_input_tokens", 0)
        self._stats["hits" if reused > 0 else "misses"] += 1
        self._stats["reused_tokens"] += reused

    def close(self) -> None:
        """Nothing to release: every exchange closes its own connection."""

    # -- the key --
    def api_key(self) -> str:
        if not self.key_env:
            return ""
        value = os.environ.get(self.key_env, "")
        if not value:
            raise errors.AuthenticationFailed(
                f"models.{self.model_id}.api_key_env names ${self.key_env}, which is not set in "
                "anyclaude's environment; export it and restart anyclaude")
        return value

    # -- generate: the error envelope --
    def generate(self, request: dict, emit, cancelled) -> None:
        def produce(send):
            done = self._generate(request, send, cancelled)
            self.record_usage(done.usage)
            return done

        run_generate(emit, produce, model_id=self.model_id, to_error=self._to_error)

    def _to_error(self, exc: errors.AnyclaudeError, sent: bool) -> Error:
        log.info("engine.upstream.error", model=self.model_id, error_type=exc.type,
                 error=exc.message)
        # Once output went out the client must not retry behind our back.
        return uerr.to_wire(exc, retryable=exc.retryable and not sent)

    def _generate(self, request: dict, send, cancelled):  # pragma: no cover - interface
        raise NotImplementedError

    def clamp_max_tokens(self, request: dict) -> int:
        asked = int(request.get("max_tokens") or self.max_output_tokens)
        return max(1, min(asked, self.max_output_tokens))

    def error_for(self, status: int, headers: dict, raw: bytes, url: str) -> errors.AnyclaudeError:
        return uerr.from_status(status, headers, raw, model_id=self.model_id, url=url,
                                key_env=self.key_env)

    # -- one upstream request with failover --
    def sse_events(self, exchange: Exchange, reader, *, cancelled, send,
                   trace: Trace | None) -> Iterator[tuple[str, str]]:
        """(event, data) pairs of an upstream's SSE reply, each line traced; Progress while
        it is silent. A connection that breaks is a retryable EngineFailed."""
        try:
            for line in exchange.lines(cancelled, lambda _w: send(Progress(0, 0)),
                                       self.keepalive_s):
                if trace:
                    trace.write("line", text=line.decode("utf-8", "replace"))
                yield from reader.feed(line)
        except UpstreamUnreachable as exc:
            raise errors.EngineFailed(f"model {self.model_id}: the stream broke: {exc}",
                                      retryable=True) from None

    def post(self, request: dict, path: str, body: bytes, headers: dict, *, cancelled, send,
             retry_400: Retry400 | None = None) -> tuple[Exchange, str, Trace | None]:
        """An exchange whose status is 200, from the first upstream (in affinity order) that
        answers. Unreachable upstreams and 5xx answers move on to the next one; any other
        error status is raised as the matching anyclaude error (a 400 may first be retried
        with the body ``retry_400`` returns)."""
        order = self.affinity.order(session_key(request))
        failure: errors.AnyclaudeError | None = None
        retries_400 = 0
        i = 0
        while i < len(order):
            url = order[i]
            upstream = self.upstreams[url]
            trace = Trace.open(self.trace_dir, self.model_id, [self.api_key()])
            if trace:
                trace.request(upstream.url + upstream.target(path), headers, body)
            exchange = Exchange(upstream, upstream.target(path), body, headers,
                                read_timeout=self.timeout_s)
            try:
                status = exchange.wait_head(cancelled, lambda _w: send(Progress(0, 0)),
                                            self.keepalive_s)
            except UpstreamUnreachable as exc:
                exchange.close()
                self.affinity.record(url, False)
                if trace:
                    trace.close(error=str(exc))
                log.warning("engine.upstream.unreachable", model=self.model_id, upstream=url,
                            error=str(exc))
                failure = uerr.unreachable(str(exc), model_id=self.model_id)
                i += 1
                continue
            except BaseException:
                exchange.close()
                if trace:
                    trace.close(error="cancelled")
                raise
            if status == 200:
                self.affinity.record(url, True)
                return exchange, url, trace
            raw = exchange.read_body(cancelled)
            exchange.close()
            if trace:
                trace.close(status=status, body=raw.decode("utf-8", "replace"))
            text, obj = uerr.error_detail(raw)
            log.info("engine.upstream.status", model=self.model_id, upstream=url, status=status,
                     error=text[:300])
            if status == 400 and retry_400 is not None and retries_400 < MAX_400_RETRIES:
                again = retry_400(status, text, obj)
                if again is not None:
                    body, retries_400 = again, retries_400 + 1
                    continue
            error = self.error_for(status, exchange.response_headers, raw, url)
            if status >= 500:
                self.affinity.record(url, False)
                failure = error
                i += 1
                continue
            self.affinity.record(url, True)   # it answered: the request was at fault
            raise error
        raise failure or errors.Overloaded(f"model {self.model_id}: no upstream answered")
