"""The anthropic kind: a passthrough to ``{base_url}/v1/messages`` (the real API, or any
server that speaks it) with the key from ``api_key_env`` as x-api-key.

The body is rebuilt from the internal request (anthropic_translate: what a mixed local /
remote session holds that the API would refuse is removed, cache breakpoints are put back),
streamed, and the SSE events are turned into neutral events; usage, stop_reason and
stop_sequence pass through as the API reports them. count uses the API's count_tokens, and
an estimate when that fails. With ``trace_dir`` set, every exchange is written to a
JSON-lines file with the key redacted (upstream_trace).

Known loss: the API's thinking signatures cannot travel through neutral events, so thinking
from earlier turns is not sent back (and thinking is off in a tool loop, see translate).
"""

from __future__ import annotations

import dataclasses
import json
import re

import structlog

from anyclaude import errors
from anyclaude.messages import Delta, Done

from anyclaude.services.engine.backends import upstream_errors as uerr
from anyclaude.services.engine.backends.affinity import session_key
from anyclaude.services.engine.backends.anthropic_translate import EventTranslator, count_body, messages_body
from anyclaude.services.engine.backends.openai_count import estimate
from anyclaude.services.engine.streamtext import EventBatcher
from anyclaude.services.engine.backends.upstream_core import UpstreamCore
from anyclaude.services.engine.backends.upstream_http import Exchange, SSEReader, UpstreamUnreachable

log = structlog.get_logger()

API_VERSION = "2023-06-01"
_TOO_LONG = re.compile(r"prompt is too long: (\d+) tokens > (\d+) maximum")
COUNT_TIMEOUT_S = 10.0


class AnthropicCore(UpstreamCore):
    kind = "anthropic"

    def __init__(self, model_id: str, cfg, *, delta_interval: float = 0.03):
        super().__init__(model_id, cfg)
        self.delta_interval = delta_interval
        # base URLs may be given with or without /v1: requests go to <base>/v1/messages
        self.upstreams = {url: dataclasses.replace(up, path=up.path.removesuffix("/v1"))
                          for url, up in self.upstreams.items()}

    def headers(self) -> dict:
        key = self.api_key()
        out = {"anthropic-version": API_VERSION}
        if key:
            out["x-api-key"] = key
        return out

    def body(self, request: dict) -> dict:
        return messages_body(request, model_name=self.model_name,
                             max_tokens=self.clamp_max_tokens(request))

    # -- count --
    def count(self, request: dict) -> int:
        body = count_body(self.body(request))
        upstream = self.upstreams[self.affinity.order(session_key(request))[0]]
        exchange = Exchange(upstream, upstream.target("/v1/messages/count_tokens"),
                            json.dumps(body, ensure_ascii=False).encode(),
                            {**self.headers(), "accept": "application/json"},
                            read_timeout=COUNT_TIMEOUT_S, connect_timeout=COUNT_TIMEOUT_S)
        try:
            status = exchange.wait_head(lambda: False)
            raw = exchange.read_body(lambda: False)
            if status == 200:
                tokens = json.loads(raw).get("input_tokens")
                if isinstance(tokens, int):
                    return tokens
            log.info("engine.count_endpoint_failed", model=self.model_id, status=status,
                     error=uerr.error_detail(raw)[0][:200])
        except (UpstreamUnreachable, ValueError, AttributeError) as exc:
            log.info("engine.count_endpoint_failed", model=self.model_id, error=str(exc))
        finally:
            exchange.close()
        tokens = estimate(request)   # an Estimate: the front door says so in a header
        log.warning("engine.count_estimated", model=self.model_id, tokens=int(tokens),
                    note="the upstream's /v1/messages/count_tokens did not answer a count")
        return tokens

    # -- generate --
    def _generate(self, request: dict, send, cancelled) -> Done:
        body = json.dumps(self.body(request), ensure_ascii=False).encode()
        exchange, url, trace = self.post(request, "/v1/messages", body,
                                         self.headers(), cancelled=cancelled, send=send)
        translator = EventTranslator(thinking=bool(request.get("thinking")))
        batcher = EventBatcher(lambda events: send(Delta(events=events)), interval=self.delta_interval)
        events = self.sse_events(exchange, SSEReader(), cancelled=cancelled, send=send,
                                 trace=trace)
        try:
            for name, data in events:
                if name == "comment":
                    continue
                batcher.add(translator.feed(name, _json(data, self.model_id)))
                if translator.error is not None:
                    batcher.flush()
                    raise self._stream_error(translator.error)
                if translator.finished:
                    break
        finally:
            events.close()
            exchange.close()
            if trace:
                trace.close(stop_reason=translator.stop_reason, usage=translator.usage)
        batcher.flush()
        if not translator.finished or translator.stop_reason is None:
            raise errors.EngineFailed(f"model {self.model_id}: the upstream closed the stream "
                                      "before message_stop", retryable=True)
        usage = self._with_input(request, translator.final_usage())
        log.info("engine.upstream.done", model=self.model_id, upstream=url,
                 stop_reason=translator.stop_reason, **usage)
        return Done(stop_reason=translator.stop_reason, stop_sequence=translator.stop_sequence,
                    usage=usage)

    def _with_input(self, request: dict, usage: dict) -> dict:
        """An upstream that reports no input at all (seen from llama-server's /v1/messages
        when its message_start went out before a slot read the prompt) gets the upstream's
        own count of the same request instead of a 0 that would blind Claude Code's meter."""
        read = sum(int(usage.get(k) or 0) for k in
                   ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"))
        if read > 0:
            return usage
        try:
            counted = int(self.count(request))
        except errors.AnyclaudeError:
            return usage
        log.warning("engine.upstream.usage_without_input", model=self.model_id, counted=counted)
        return {**usage, "input_tokens": counted}

    def error_for(self, status: int, headers: dict, raw: bytes, url: str) -> errors.AnyclaudeError:
        """The API's own words for the errors Claude Code reads (prompt too long, model
        not found): they pass unchanged; the rest maps like any upstream's."""
        text, _ = uerr.error_detail(raw)
        too_long = _TOO_LONG.search(text)
        if status == 400 and too_long:
            return errors.PromptTooLong(int(too_long.group(1)), int(too_long.group(2)))
        if status == 400:
            return errors.InvalidRequest(text)
        if status == 404:
            return errors.NotFound(text)
        return super().error_for(status, headers, raw, url)

    def _stream_error(self, error: dict) -> errors.AnyclaudeError:
        """An ``event: error`` in the stream, by its Anthropic type."""
        kind, message = error.get("type", ""), str(error.get("message", ""))
        status = {"invalid_request_error": 400, "authentication_error": 401,
                  "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
                  "rate_limit_error": 429, "timeout_error": 504,
                  "overloaded_error": 529}.get(kind, 500)
        return uerr.from_status(status, {}, json.dumps({"error": {"message": message}}).encode(),
                                model_id=self.model_id, url="(stream)", key_env=self.key_env)


def _json(data: str, model_id: str) -> dict:
    try:
        value = json.loads(data)
    except ValueError:
        raise errors.EngineFailed(f"model {model_id}: the upstream sent an event that is not "
                                  f"JSON: {data[:200]!r}", retryable=True) from None
    return value if isinstance(value, dict) else {}
