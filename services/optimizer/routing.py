"""Which model runs a request.

The front door has already mapped Claude ids to a local id (``request["model"]``) and keeps
the id the client asked for in ``request["requested_model"]``. Rules, in order:

1. a configured model other than the default was asked for by name: it runs the request
   (the small model, when asked for, still falls back to bigger ones below);
2. a haiku-class side call (the requested id contains "haiku") goes to ``routes.small``;
3. optionally (``optimizer.small_for_tiny_requests``), a tiny request with no tools, no
   thinking and at most two messages (title generation and the like) goes to ``routes.small``;
4. thinking requested and ``routes.reasoning`` set: the reasoning model;
5. otherwise ``routes.default``.

Each route comes with fallbacks tried in order when the prompt does not fit a model's
budget without cutting: small -> default -> long_context; default or reasoning ->
long_context. Only the last candidate cuts.
"""

from __future__ import annotations

from dataclasses import dataclass

from anyclaude.errors import NotFound

TINY_CHARS = 6000


@dataclass(frozen=True)
class Route:
    name: str        # default | small | reasoning | long_context | explicit
    model: str
    reason: str


def choose(request: dict, routes, models, *, small_for_tiny: bool = False) -> Route:
    model = request.get("model", "")
    if model not in models:
        raise NotFound(f"model: {model} is not a configured model; configured models: "
                       f"{', '.join(models)}")
    requested = str(request.get("requested_model") or model)
    if model != routes.default:
        if model == routes.small:
            side = "haiku" in requested.lower()
            reason = "haiku-class side call" if side else "asked for by name"
            return Route("small", model, reason)
        return Route("explicit", model, "asked for by name")
    if routes.small and "haiku" in requested.lower():
        return Route("small", routes.small, "haiku-class side call")
    if routes.small and small_for_tiny and is_tiny(request):
        return Route("small", routes.small, "tiny request without tools")
    if routes.reasoning and request.get("thinking"):
        return Route("reasoning", routes.reasoning, "thinking requested")
    return Route("default", routes.default, "default model")


def candidates(route: Route, routes) -> list[Route]:
    """The route followed by its fallbacks (distinct models only)."""
    chain = [route]
    if route.name == "small" and routes.default:
        chain.append(Route("default", routes.default, "prompt too long for the small model"))
    if route.name != "explicit" and routes.long_context:
        chain.append(Route("long_context", routes.long_context,
                           f"prompt too long for {chain[-1].model}"))
    out, models = [], set()
    for candidate in chain:
        if candidate.model not in models:
            models.add(candidate.model)
            out.append(candidate)
    return out


def is_tiny(request: dict) -> bool:
    if request.get("tools") or request.get("server_tools") or request.get("thinking"):
        return False
    messages = request.get("messages") or []
    if len(messages) > 2:
        return False
    size = sum(len(s) for s in request.get("system") or [])
    for message in messages:
        for block in message.get("content") or []:
            if block.get("type") != "text":
                return False
            size += len(block.get("text", ""))
    return size <= TINY_CHARS
