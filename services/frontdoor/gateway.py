"""The real, bus-backed engines and optimizer clients (one bus.Client per thread)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from anyclaude import bus, errors, messages
from anyclaude.config import Settings
from anyclaude.token_count import Estimate


class BusEngines:
    """``stream`` and ``count`` against the engine-<model id> services."""

    def __init__(self, settings: Settings, *, deadlines: bus.Deadlines | None = None):
        t = settings.timeouts
        self.settings = settings
        self.deadlines = deadlines or bus.Deadlines(
            accept=t.accept_s, first_frame=t.first_frame_s, idle=t.idle_s, total=t.total_s)
        self._clients = bus.ThreadClients()

    def stream(self, model_id: str, request: dict, *, request_id: str,
               client_gone: Callable[[], bool]) -> Iterator[messages.Message]:
        client = self._clients.client(f"engine-{model_id}")
        yield from client.stream(messages.Generate(request), deadlines=self.deadlines,
                                 request_id=request_id.encode(), client_gone=client_gone)

    def count(self, model_id: str, request: dict) -> int:
        name = f"engine-{model_id}"
        client = self._clients.client(name)
        request_id = bus.new_request_id()
        # A short deadline to hand it over (the engine is down?), a longer one to tokenize.
        client.send(messages.Count(request), request_id, timeout=self.deadlines.accept)
        reply = client.receive(request_id, self.deadlines.idle)
        if reply is None:
            client.reset()
            raise errors.Timeout(f"{name} did not count the tokens within "
                                 f"{self.deadlines.idle:g} s")
        if isinstance(reply, messages.Error):
            raise errors.from_wire(reply.type, reply.message, reply.retryable)
        if not isinstance(reply, messages.Counted):
            raise errors.BadFrame(f"engine-{model_id} answered Count with {reply.kind}")
        return Estimate(reply.input_tokens) if reply.estimated else reply.input_tokens

    def health(self) -> dict:
        """{model id: reachable} from a quick ping of each engine's service loop."""
        out = {}
        for model_id in self.settings.models:
            client = self._clients.client(f"engine-{model_id}")
            try:
                reply = client.request(messages.Command("ping"), timeout=0.5)
                out[model_id] = isinstance(reply, messages.Reply) and reply.ok
            except errors.AnyclaudeError:
                out[model_id] = False
        return out


class BusSearch:
    """``search()`` -> this thread's search function over the websearch service."""

    def __init__(self, settings: Settings):
        self.timeout = settings.search.timeout_s + 2.0
        self._clients = bus.ThreadClients()

    def __call__(self):
        from .websearch import bus_search
        return bus_search(self._clients.client("websearch"), timeout_s=self.timeout)


class BusOptimizer:
    def __init__(self, settings: Settings, *, timeout: float | None = None):
        # The optimizer counts locally; it asks an engine only for where its tokenizer is
        # (once per engine process) or, for a model it cannot tokenize, for a count.
        self.timeout = timeout if timeout is not None else (
            max(settings.timeouts.accept_s, 5.0) + settings.optimizer.count_timeout_s)
        self._clients = bus.ThreadClients()

    def optimize(self, request: dict) -> dict:
        return self.optimize_noted(request)[0]

    def optimize_noted(self, request: dict) -> tuple[dict, list]:
        """(the request to run, the optimizer's notes on what it did)."""
        client = self._clients.client("optimizer")
        try:
            reply = client.request(messages.Optimize(request), timeout=self.timeout, retries=1)
        except (errors.ServiceUnavailable, errors.Timeout, errors.EngineFailed) as exc:
            raise errors.Overloaded(f"the optimizer service is not available ({exc.message}); "
                                    "retry shortly", retry_after=2.0) from None
        if not isinstance(reply, messages.Optimized):
            raise errors.BadFrame(f"optimizer answered Optimize with {reply.kind}")
        return reply.request, list(reply.notes or [])


def reductions_of(notes: list) -> str:
    """Which reductions of the system prompt and tools the optimizer ran ("" for none), for
    the anyclaude-reductions header and the request's log line."""
    names = next((n.get("names") for n in notes
                  if isinstance(n, dict) and n.get("action") == "reductions"), None)
    return ",".join(str(n) for n in names or [])
