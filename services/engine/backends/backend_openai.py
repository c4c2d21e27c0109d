"""The openai kind: any OpenAI-compatible chat.completions server as an engine core
(LM Studio, Ollama, llama.cpp's llama-server, vLLM, SGLang, mlx_lm.server, OpenRouter).

The path of a request: count it with the local tokenizer if there is one (a prompt that
cannot fit is refused with the exact ``prompt is too long`` form; max_tokens is clamped to
the room left) -> build the chat.completions body (openai_translate) -> POST it, streaming,
to the upstream chosen by cache affinity (upstream_core) -> translate the chunks into
neutral events (openai_stream) -> Done with the server's usage.

A 400 is retried once per cause with a changed body: ``max_completion_tokens`` instead of
``max_tokens`` when the server insists, later system turns merged into user turns when the
template refuses them (remembered for the rest of the process), and a smaller max_tokens
when only prompt + max_tokens overflowed the context. A real context overflow becomes
``prompt is too long: N tokens > M maximum`` so Claude Code compacts.

Stop sequences: at most 4 go to the server as ``stop``; all are also matched in the
streamed text here. When the server itself stops on one it does not say which, so such a
turn ends with stop_reason end_turn and stop_sequence null.
"""

from __future__ import annotations

import dataclasses
import json
import re

import structlog

from anyclaude import errors
from anyclaude.messages import Delta, Done, Progress

from anyclaude.services.engine.backends import upstream_errors as uerr
from anyclaude.services.engine.backends.affinity import session_key
from anyclaude.services.engine.backends.openai_count import TokenCounter, load_renderer
from anyclaude.services.engine.backends.openai_stream import StreamTranslator, completion_as_chunk
from anyclaude.services.engine.backends.openai_translate import chat_body, chat_messages
from anyclaude.services.engine.streamtext import EventBatcher
from anyclaude.services.engine.backends.upstream_core import UpstreamCore
from anyclaude.services.engine.backends.upstream_http import MAX_BODY, SSEReader

log = structlog.get_logger()

_KEEPALIVE = re.compile(r"keepalive (\d+)/(\d+)")
_VERSIONED = re.compile(r"/v\d+[a-z0-9]*$|/openai$")


class OpenAICore(UpstreamCore):
    kind = "openai"

    def __init__(self, model_id: str, cfg, *, delta_interval: float = 0.03):
        super().__init__(model_id, cfg)
        self.delta_interval = delta_interval
        # "http://host:8080" and "http://host:8080/v1" both mean <host>/v1/chat/completions
        self.upstreams = {url: up if _VERSIONED.search(up.path)
                          else dataclasses.replace(up, path=up.path + "/v1")
                          for url, up in self.upstreams.items()}
        self.extra_params = bool(getattr(cfg, "extra_params", False))
        self.max_tokens_field = getattr(cfg, "max_tokens_field", "") or "max_tokens"
        if self.max_tokens_field not in ("max_tokens", "max_completion_tokens"):
            raise errors.ConfigError(f"models.{model_id}.max_tokens_field = {self.max_tokens_field!r}; "
                                     "allowed: max_tokens, max_completion_tokens")
        self.strict_roles = False
        self.family = "none" if cfg.tool_parser in ("", "auto") else cfg.tool_parser
        tokenizer_path = getattr(cfg, "tokenizer", "") or cfg.path
        renderer = load_renderer(model_id, tokenizer_path, thinking_flag=self.extra_params)
        self.counter = TokenCounter(model_id, model_name=self.model_name, renderer=renderer,
                                    pick=self._first_upstream, headers=self.headers,
                                    extra_params=self.extra_params)

    def _first_upstream(self, request: dict):
        return self.upstreams[self.affinity.order(session_key(request))[0]]

    def headers(self) -> dict:
        key = self.api_key()
        return {"authorization": f"Bearer {key}"} if key else {}

    def count(self, request: dict) -> int:
        return self.counter.count(request)

    # -- generate --
    def _generate(self, request: dict, send, cancelled) -> Done:
        max_tokens = self.clamp_max_tokens(request)
        n_prompt = self.counter.exact(request)
        if n_prompt is not None:
            if n_prompt > self.context_window - 1:
                raise errors.PromptTooLong(n_prompt, self.context_window - 1)
            max_tokens = max(1, min(max_tokens, self.context_window - n_prompt))
        options = {"max_tokens": max_tokens, "field": self.max_tokens_field,
                   "strict": self.strict_roles}

        def body() -> bytes:
            return json.dumps(chat_body(request, model_name=self.model_name,
                                        max_tokens=options["max_tokens"],
                                        extra_params=self.extra_params,
                                        max_tokens_field=options["field"],
                                        strict_roles=options["strict"]), ensure_ascii=False).encode()

        def retry_400(_status: int, text: str, obj: dict) -> bytes | None:
            overflow = uerr.context_overflow(text, obj)
            if overflow is not None:
                room = self._room(overflow)
                if room is None:
                    raise self._too_long(request, overflow)
                if room < options["max_tokens"]:   # only prompt + max_tokens overflowed
                    options["max_tokens"] = room
                    return body()
                completion = overflow.completion or options["max_tokens"]
                raise errors.InvalidRequest(
                    f"input length and `max_tokens` exceed context limit: {overflow.prompt} + "
                    f"{completion} > {overflow.maximum or self.context_window}")
            if options["field"] == "max_tokens" and uerr.complains_about(text, "max_tokens"):
                options["field"] = self.max_tokens_field = "max_completion_tokens"
                return body()
            if (not options["strict"] and re.search(r"system|alternat|roles? must", text, re.I)
                    and chat_messages(request) != chat_messages(request, strict_roles=True)):
                options["strict"] = self.strict_roles = True
                log.info("engine.strict_roles", model=self.model_id, reason=text[:200])
                return body()
            return None

        exchange, url, trace = self.post(request, "/chat/completions", body(), self.headers(),
                                         cancelled=cancelled, send=send,
                                         retry_400=retry_400)
        translator = StreamTranslator(tools=request.get("tools") or [],
                                      thinking=bool(request.get("thinking")),
                                      stop_sequences=request.get("stop_sequences") or [],
                                      family=self.family)
        try:
            self._read(exchange, translator, send, cancelled, trace)
        finally:
            exchange.close()
            if trace:
                trace.close(finish_reason=translator.finish_reason, usage=translator.usage)
        stop_reason = translator.stop_reason()
        usage = self._usage(request, translator)
        log.info("engine.upstream.done", model=self.model_id, upstream=url, stop_reason=stop_reason,
                 finish_reason=translator.finish_reason, **usage)
        return Done(stop_reason=stop_reason, stop_sequence=translator.stops.matched, usage=usage)

    def _read(self, exchange, translator: StreamTranslator, send, cancelled, trace) -> None:
        batcher = EventBatcher(lambda events: send(Delta(events=events)), interval=self.delta_interval)
        content_type = exchange.response_headers.get("content-type", "")
        if "json" in content_type and "event-stream" not in content_type:
            raw = exchange.read_body(cancelled, MAX_BODY)   # the server ignored "stream"
            if trace:
                trace.write("body", text=raw.decode("utf-8", "replace"))
            batcher.add(translator.feed(completion_as_chunk(_json(raw, self.model_id))))
        else:
            self._stream(exchange, translator, batcher, send, cancelled, trace)
        batcher.add(translator.finish())
        batcher.flush()

    def _stream(self, exchange, translator, batcher, send, cancelled, trace) -> None:
        reader = SSEReader()
        events = self.sse_events(exchange, reader, cancelled=cancelled, send=send, trace=trace)
        try:
            for event, data in events:
                if event == "comment":
                    match = _KEEPALIVE.search(data)
                    if match:
                        send(Progress(int(match.group(1)), int(match.group(2))))
                    continue
                if data.strip() == "[DONE]":
                    return
                chunk = _json(data.encode(), self.model_id)
                if isinstance(chunk.get("error"), (dict, str)):
                    raise self._stream_error(chunk)
                batcher.add(translator.feed(chunk))
                if translator.stopped:     # our own stop-sequence match: stop the server
                    exchange.close()
                    return
        finally:
            events.close()
        for _event, data in reader.finish():
            if data.strip() != "[DONE]":
                batcher.add(translator.feed(_json(data.encode(), self.model_id)))
        if translator.finish_reason is None:
            raise errors.EngineFailed(f"model {self.model_id}: the upstream closed the stream "
                                      "before it finished", retryable=True)

    def _stream_error(self, chunk: dict) -> errors.AnyclaudeError:
        text, obj = uerr.error_detail(json.dumps(chunk).encode())
        overflow = uerr.context_overflow(text, obj)
        if overflow is not None:
            return errors.InvalidRequest(f"upstream: {text}")
        code = obj.get("code") if isinstance(obj.get("code"), int) else 500
        return uerr.from_status(code, {}, json.dumps(chunk).encode(), model_id=self.model_id,
                                url="(stream)", key_env=self.key_env)

    # -- numbers --
    def _room(self, overflow: uerr.Overflow) -> int | None:
        """The room for output when the prompt itself fits (the server said so), else None."""
        maximum = overflow.maximum or self.context_window
        if overflow.prompt is None or overflow.prompt >= maximum:
            return None
        return maximum - overflow.prompt

    def _too_long(self, request: dict, overflow: uerr.Overflow) -> errors.PromptTooLong:
        maximum = overflow.maximum or self.context_window
        prompt = overflow.prompt if overflow.prompt is not None else self.counter.count(request)
        return errors.PromptTooLong(max(prompt, maximum + 1), maximum)

    def _usage(self, request: dict, translator: StreamTranslator) -> dict:
        usage = translator.usage or {}
        prompt = usage.get("prompt_tokens")
        completion = usage.get("completion_tokens")
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        if not isinstance(cached, int):
            cached = translator.cached_hint or 0
        if not isinstance(prompt, int):
            prompt = self.counter.count(request)
            log.info("engine.usage_estimated", model=self.model_id, what="input_tokens")
        if not isinstance(completion, int):
            completion = int(translator.output_chars / 3.5) + 1
            log.info("engine.usage_estimated", model=self.model_id, what="output_tokens")
        cached = max(0, min(cached, prompt))
        return {"input_tokens": prompt - cached, "output_tokens": completion,
                "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0}


def _json(raw: bytes, model_id: str) -> dict:
    try:
        value = json.loads(raw)
    except ValueError:
        raise errors.EngineFailed(f"model {model_id}: the upstream sent something that is not "
                                  f"JSON: {raw[:200]!r}", retryable=True) from None
    if not isinstance(value, dict):
        raise errors.EngineFailed(f"model {model_id}: the upstream sent a JSON "
                                  f"{type(value).__name__}, not an object", retryable=True)
    return value
