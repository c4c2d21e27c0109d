"""Prompt token counts for an OpenAI-compatible upstream, best source first:

1. a local tokenizer (``models.<id>.tokenizer``, else ``path`` when it is a local model
   directory): transformers' AutoTokenizer and the model's chat template, rendered by the
   MLX engine's ChatRenderer - exact when the server renders the same template;
2. the server's own tokenizer: llama-server's ``POST /v1/chat/completions/input_tokens``,
   vLLM's ``POST /tokenize`` with the chat messages, or (older llama-servers)
   ``POST /apply-template`` then ``POST /tokenize`` (special tokens added, as the server
   does); the method that works is remembered, and a server with neither is not asked again (one that cannot be reached is);
3. an estimate, JSON characters / 3.5, logged as ``engine.count_estimated``.

Images cannot be rendered by a text tokenizer: each counts as IMAGE_TOKENS.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import structlog

from anyclaude import errors
from anyclaude.token_count import Estimate

from anyclaude.services.engine.backends.openai_translate import chat_messages, function_tools
from anyclaude.prompt.template import ChatRenderer
from anyclaude.services.engine.backends.upstream_http import Exchange, Upstream, UpstreamUnreachable

log = structlog.get_logger()

CHARS_PER_TOKEN = 3.5
IMAGE_TOKENS = 1000
TOKENIZE_TIMEOUT_S = 5.0


def estimate(request: dict) -> Estimate:
    size = len(json.dumps([request.get("system"), request.get("tools"), request.get("messages")],
                          ensure_ascii=False))
    return Estimate(int(size / CHARS_PER_TOKEN) + 1)


class _Renderer(ChatRenderer):
    """ChatRenderer that passes enable_thinking only when the server is told it too."""

    def __init__(self, tokenizer, *, model_id: str, thinking_flag: bool):
        super().__init__(tokenizer, model_id=model_id)
        self.thinking_flag = thinking_flag

    def _apply(self, messages, tools, request, prefill: bool) -> str:
        if self.thinking_flag:
            return super()._apply(messages, tools, request, prefill)
        if not messages:
            raise errors.InvalidRequest("messages: at least one message is required")
        kwargs: dict = {"tokenize": False}
        if prefill:
            kwargs.update(add_generation_prompt=False, continue_final_message=True)
        else:
            kwargs["add_generation_prompt"] = True
        if tools:
            kwargs["tools"] = tools
        return self.tokenizer.apply_chat_template(messages, **kwargs)


def load_renderer(model_id: str, tokenizer_path: str, *, thinking_flag: bool) -> _Renderer | None:
    if not tokenizer_path:
        return None
    folder = Path(tokenizer_path).expanduser()
    if not (folder / "tokenizer_config.json").is_file() and not (folder / "tokenizer.json").is_file():
        return None
    try:
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:   # transformers raises many unrelated types
        log.warning("engine.tokenizer_unusable", model=model_id, path=str(folder),
                    error=f"{exc.__class__.__name__}: {exc}")
        return None
    if not getattr(tokenizer, "chat_template", None):
        log.warning("engine.tokenizer_unusable", model=model_id, path=str(folder),
                    error="the tokenizer has no chat template")
        return None
    log.info("engine.tokenizer_loaded", model=model_id, path=str(folder))
    return _Renderer(tokenizer, model_id=model_id, thinking_flag=thinking_flag)


def _without_images(request: dict) -> tuple[dict, int]:
    images = 0

    def strip(blocks):
        nonlocal images
        out = []
        for block in blocks or []:
            if block.get("type") == "image":
                images += 1
                out.append({"type": "text", "text": "[image]"})
            elif block.get("type") == "tool_result":
                out.append({**block, "content": strip(block.get("content"))})
            else:
                out.append(block)
        return out

    messages = [{**m, "content": strip(m.get("content"))} for m in request.get("messages") or []]
    return {**request, "messages": messages}, images


class TokenCounter:
    def __init__(self, model_id: str, *, model_name: str, renderer: _Renderer | None,
                 pick: Callable[[dict], Upstream], headers: Callable[[], dict], extra_params: bool):
        self.model_id, self.model_name = model_id, model_name
        self.renderer = renderer
        self.pick, self.headers, self.extra_params = pick, headers, extra_params
        self.method: str | None = None if renderer is None else "local"
        self._lock = threading.Lock()

    def exact(self, request: dict) -> int | None:
        """The local tokenizer's count, or None without one (cheap: no network)."""
        if self.renderer is None:
            return None
        plain, images = _without_images(request)
        try:
            return len(self.renderer.render(plain)) + images * IMAGE_TOKENS
        except errors.UnsupportedContent:   # a PDF, say: the server may still take it
            return None

    def count(self, request: dict) -> int:
        local = self.exact(request)
        if local is not None:
            return local
        with self._lock:
            method = self.method
        reachable = True
        for candidate in ([method] if method else ["input_tokens", "vllm", "llamacpp"]):
            if candidate in ("none", "local"):
                break
            try:
                tokens = self._server_count(candidate, request)
            except UpstreamUnreachable as exc:   # down for now: ask again next time
                log.info("engine.count_endpoint_unreachable", model=self.model_id, error=str(exc))
                reachable = False
                break
            if tokens is not None:
                with self._lock:
                    self.method = candidate
                return tokens
        with self._lock:
            if self.method is None and reachable:
                self.method = "none"   # the server has neither endpoint: do not ask again
                log.info("engine.count_no_tokenizer", model=self.model_id,
                         note="no local tokenizer and no /tokenize endpoint: counts are estimates")
        tokens = estimate(request)
        log.warning("engine.count_estimated", model=self.model_id, tokens=int(tokens),
                    note="no tokenizer: set models.<id>.tokenizer for exact counts")
        return tokens

    # -- the server's tokenizer --
    def _server_count(self, method: str, request: dict) -> int | None:
        plain, images = _without_images(request)
        messages = chat_messages(plain)
        tools = function_tools(plain)
        try:
            if method == "input_tokens":   # llama-server's count of a chat body, as it runs it
                body = {"messages": messages, **({"tools": tools} if tools else {})}
                count = self._post(request, "/v1/chat/completions/input_tokens", body).get("input_tokens")
                count = count if isinstance(count, int) else None
            elif method == "vllm":
                body = {"model": self.model_name, "messages": messages, "add_generation_prompt": True}
                if tools:
                    body["tools"] = tools
                if self.extra_params:
                    body["chat_template_kwargs"] = {"enable_thinking": bool(request.get("thinking"))}
                # Only vLLM answers chat messages with a "count". llama-server answers the same
                # body 200 {"tokens": []} (it tokenizes the missing "content" as ""): taking
                # that list's length made every count 0 (issue #20).
                reply = self._post(request, "/tokenize", body)
                count = reply.get("count") if isinstance(reply.get("count"), int) else None
            else:
                body = {"messages": messages, **({"tools": tools} if tools else {})}
                prompt = self._post(request, "/apply-template", body).get("prompt")
                if not isinstance(prompt, str):
                    return None
                tokens = self._post(request, "/tokenize",
                                    {"content": prompt, "add_special": True}).get("tokens")
                count = len(tokens) if isinstance(tokens, list) else None
        except ValueError as exc:
            log.info("engine.count_endpoint_failed", model=self.model_id, method=method, error=str(exc))
            return None
        if count is None or count <= 0:   # a prompt always has tokens: this is no count
            if count is not None:
                log.info("engine.count_endpoint_failed", model=self.model_id, method=method,
                         error=f"the server counted {count} tokens for a non-empty prompt")
            return None
        return count + images * IMAGE_TOKENS

    def _post(self, request: dict, path: str, body: dict) -> dict:
        """POST at the server root (a base URL's /v1 is dropped: these endpoints live above it)."""
        upstream = self.pick(request)
        root = upstream.path[:-3] if upstream.path.endswith("/v1") else upstream.path
        exchange = Exchange(upstream, (root + path) or "/", json.dumps(body).encode(),
                            {**self.headers(), "accept": "application/json"},
                            read_timeout=TOKENIZE_TIMEOUT_S, connect_timeout=TOKENIZE_TIMEOUT_S)
        try:
            status = exchange.wait_head(lambda: False)
            raw = exchange.read_body(lambda: False)
        finally:
            exchange.close()
        if status != 200:
            raise ValueError(f"{path} answered HTTP {status}")
        reply = json.loads(raw)
        if not isinstance(reply, dict):
            raise ValueError(f"{path} answered {type(reply).__name__}, not an object")
        return reply
