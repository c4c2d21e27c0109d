"""Exact token counts from the engine of the chosen model, behind ``count(request) -> int``.

Each worker thread keeps its own bus.Client per engine (one socket, one thread). An engine
that cannot be reached is an ``unavailable`` error (the front door answers 529, and the
client retries); an error the engine answers (bad content, say) passes through unchanged.
Models served by no local engine (kinds openai/anthropic) get a conservative estimate.
"""

from __future__ import annotations

import json

from anyclaude import bus, errors, messages

CHARS_PER_TOKEN_ESTIMATE = 3.0   # conservative for remote models we cannot count exactly


def estimate_tokens(request: dict) -> int:
    size = len(json.dumps([request.get("system"), request.get("tools"), request.get("messages")],
                          ensure_ascii=False))
    return int(size / CHARS_PER_TOKEN_ESTIMATE) + 1


class EngineCounter:
    def __init__(self, settings, *, timeout: float = 10.0):
        self.settings = settings
        self.timeout = timeout
        self._clients = bus.ThreadClients()
        self.windows: dict[str, int] = {}   # context window each engine reported

    def __call__(self, request: dict) -> int:
        model = request["model"]
        config = self.settings.models.get(model)
        if config is not None and config.kind != "mlx":
            return estimate_tokens(request)
        name = f"engine-{model}"
        if not bus.socket_path(name).exists():   # stopped or not started yet: say so at once
            raise errors.ServiceUnavailable(f"cannot count tokens: {name} is not running")
        client = self._client(name)
        try:
            reply = client.request(messages.Count(request), timeout=self.timeout)
        except (errors.ServiceUnavailable, errors.Timeout, errors.EngineFailed) as exc:
            raise errors.ServiceUnavailable(
                f"cannot count tokens: {name} is not reachable ({exc.message})") from None
        if not isinstance(reply, messages.Counted):
            raise errors.BadFrame(f"{name} answered Count with {reply.kind}")
        if reply.context_window > 0:
            self.windows[model] = reply.context_window
        return reply.input_tokens

    def window(self, model: str) -> int:
        """The context window the engine reported (0 until it has answered once)."""
        return self.windows.get(model, 0)

    def _client(self, name: str) -> bus.Client:
        return self._clients.client(name)

    def close(self) -> None:
        """Close this thread's clients."""
        self._clients.close_this_thread()
