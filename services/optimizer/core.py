"""The optimizer: hygiene, routing, reductions and context fitting for one request.

Budget rule (docs/configuration.md, "How a prompt is fitted"):
- the output floor is ``min(max_tokens, max_output_tokens, max(1024, window / 16))`` (and
  at most half the window): the least room for the answer a prompt must leave;
- the prompt limit is ``window - floor``. A prompt within it is never refused or cut; only
  over it is the prompt shortened, and "prompt is too long" comes only when even the
  smallest prompt fitting allows is over it;
- the aim is ``window - reserve``, with the full output reserve
  ``min(max_tokens, max_output_tokens, output_reserve_ratio * window)``: when the prompt must
  change, shortening and cuts bring it below the aim (a cut to ``fit_target_ratio`` of it),
  so cuts stay rare and the prefix stable.
The request's max_tokens is then clamped to what is really left (``window - prompt``, never
below the floor for a prompt within the limit) so the engine never runs past the window.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from anyclaude import context_notice, errors
from anyclaude.modelfiles.window import remote_window
from anyclaude.optimizer_config import OptimizerConfig, profile as profile_of

from . import auto_reduce, fitting, hygiene, reductions, routing, sessions
from . import plan as P

log = structlog.get_logger()

OUTPUT_FLOOR_MIN = 1024          # tokens of answer room a prompt must leave, at least ...
OUTPUT_FLOOR_WINDOW_DIVISOR = 16  # ... or a sixteenth of the window, when that is more
REDUCTION_NAMES = {"tool_allowlist": "tool_allowlist",
                   "trim_tool_descriptions": "tool_description_max_chars",
                   "drop_system_sections": "system_drop_sections"}


def budget_for(window: int, max_tokens: int, max_output: int, reserve_ratio: float) -> int:
    """The aim: the window less the full output reserve."""
    reserve = min(max_tokens, max_output or max_tokens, int(window * reserve_ratio))
    return max(1, window - max(0, reserve))


def output_floor(window: int, max_tokens: int, max_output: int) -> int:
    """The least output room a prompt must leave."""
    floor = max(OUTPUT_FLOOR_MIN, window // OUTPUT_FLOOR_WINDOW_DIVISOR)
    return max(1, min(max_tokens, max_output or max_tokens, floor, window // 2))


def prompt_limit(window: int, max_tokens: int, max_output: int) -> int:
    """The most tokens a prompt may use: the window less the output floor."""
    return max(1, window - output_floor(window, max_tokens, max_output))


class Optimizer:
    def __init__(self, settings, count: Callable[[dict], int], *,
                 window: Callable[[str], int] | None = None, store: sessions.Store | None = None):
        self.settings = settings
        self.config: OptimizerConfig = getattr(settings, "optimizer", None) or OptimizerConfig()
        self.count = count
        self.reported_window = window or (lambda model: 0)
        self.store = store or sessions.Store()
        self.auto = auto_reduce.AutoReducer()
        self._profiles: dict = {}
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "routes": {}, "cuts": 0, "fitted_new": 0,
                      "tokens_saved": 0, "prompt_too_long": 0, "reductions": {}, "last": {}}

    # -- the request --
    def optimize(self, request: dict) -> tuple[dict, list[dict]]:
        check_shape(request)
        notes: list[dict] = []
        req = {**request, "tools": list(request.get("tools") or [])}
        req["system"], removed = hygiene.remove_billing_header(list(req.get("system") or []))
        if removed:
            notes.append({"action": "remove_billing_header"})
        req["messages"], notices = context_notice.strip(req["messages"])
        if notices:
            notes.append({"action": "remove_cut_notices", "count": notices})
        key = sessions.session_key(req)
        chain = sessions.message_chain(req["messages"])
        routes = self.settings.routes
        first = routing.choose(req, routes, self.settings.models,
                               small_for_tiny=self.config.small_for_tiny_requests)
        options = routing.candidates(first, routes)
        for index, route in enumerate(options):
            try:
                out, fit_notes, fit = self._fit_on(req, route, key, chain,
                                                   allow_cuts=index == len(options) - 1)
            except fitting.DoesNotFit as exc:
                notes.append({"route_skipped": route.name, "model": route.model,
                              "input_tokens": exc.tokens, "budget": exc.budget})
                continue
            except errors.PromptTooLong as exc:
                self._record_too_long(route, exc)
                raise
            notes.append({"route": route.name, "model": route.model, "reason": route.reason})
            notes.extend(fit_notes)
            self._record(route, fit, fit_notes)
            return out, notes
        raise AssertionError("the last candidate always fits or raises")  # pragma: no cover

    def _fit_on(self, req: dict, route: routing.Route, key: str, chain: list,
                *, allow_cuts: bool):
        profile = self.profile(route.model)
        request, red_notes = reductions.apply({**req, "model": route.model}, profile)
        model = self.settings.models[route.model]
        window, limit, aim = self._sizes(route.model, request, profile)
        reduced, auto_notes = self.auto.reduce(request, count=self.count, limit=limit,
                                               profile=profile)
        if self._sizes(route.model, request, profile)[0] != window:
            # the engine's first count told its window: decide with it, as later turns will
            window, limit, aim = self._sizes(route.model, request, profile)
            reduced, auto_notes = self.auto.reduce(request, count=self.count, limit=limit,
                                                   profile=profile)
        request = reduced
        plan0, seen = self.store.resume((key, route.model), chain)
        fixed = P.fixed_chars(request)
        fit = fitting.fit(request["messages"], fixed=fixed, plan0=plan0, seen=seen,
                          count=lambda msgs: self.count({**request, "messages": msgs}),
                          budget=limit, aim=aim, profile=profile, allow_cuts=allow_cuts)
        self.store.save((key, route.model), fit.plan, chain)
        out = {**request, "messages": fit.messages}
        fitted_chars = fixed + sum(P.message_chars(m) for m in fit.messages)
        scale = fit.tokens / max(1, fitted_chars)
        notes = [{**n, "tokens_saved": round(n["chars_saved"] * scale)} for n in red_notes]
        notes.extend(auto_notes)
        names = [REDUCTION_NAMES[n["action"]] for n in red_notes]
        names += [tier for n in auto_notes for tier in n["tiers"]]
        if names:
            notes.append({"action": "reductions", "names": names})
        original_chars = P.fixed_chars(req) + sum(P.message_chars(m) for m in req["messages"])
        saved = max(0, round((original_chars - fitted_chars) * scale))
        notes.extend(fit.notes)
        notes.append({"action": "fit", "input_tokens": fit.tokens, "budget": limit, "aim": aim,
                      "context_window": window, "tokens_saved": saved, "exact_counts": fit.counts})
        if fit.messages != request["messages"]:
            out[context_notice.CUT_KEY] = self._cut_report(request, fit, window)
        room = min(request["max_tokens"], model.max_output_tokens or request["max_tokens"],
                   window - fit.tokens)
        if room < request["max_tokens"]:
            notes.append({"action": "clamp_max_tokens", "from": request["max_tokens"],
                          "to": max(1, room)})
            out["max_tokens"] = max(1, room)
        return out, notes, fit

    def _sizes(self, model_id: str, request: dict, profile) -> tuple[int, int, int]:
        """(window, prompt limit, aim) for one model and request."""
        model = self.settings.models[model_id]
        max_tokens = request["max_tokens"]
        window = self._window(model_id, request)
        limit = prompt_limit(window, max_tokens, model.max_output_tokens)
        aim = min(limit, budget_for(window, max_tokens, model.max_output_tokens,
                                    profile.output_reserve_ratio))
        return window, limit, aim

    def _cut_report(self, request: dict, fit: fitting.Fit, window: int) -> dict:
        """What the front door tells the client when messages were left out: the
        conversation's real size (one more exact count) and what was done to it."""
        client_tokens = max(self.count(request), fit.tokens)
        done = {n["action"]: n for n in fit.notes}

        def counted(action: str, key: str = "count") -> int:
            return done.get(action, {}).get(key, 0)
        report = {"client_tokens": client_tokens, "prompt_tokens": fit.tokens,
                  "left_out_tokens": client_tokens - fit.tokens, "window": window,
                  "dropped_messages": counted("drop_turns", "messages"),
                  "placeholder_tool_results": counted("placeholder_tool_results"),
                  "shortened_tool_results": counted("shorten_tool_result")}
        log.info("optimizer.left_out", model=request["model"], **report)
        return report

    def _window(self, model_id: str, request: dict) -> int:
        """The engine's window (it reports it with every count); the configured one until
        it has answered, for remote kinds, or when it reports none."""
        configured = self.settings.models[model_id].context_window
        if self.reported_window(model_id) <= 0 and configured <= 0:
            self.count(request)     # a local engine's first count tells its window
        reported = self.reported_window(model_id)
        if reported > 0:
            return min(reported, configured) if configured > 0 else reported
        return remote_window(configured)

    def profile(self, model_id: str):
        found = self._profiles.get(model_id)
        if found is None:
            found = self._profiles[model_id] = profile_of(self.config, model_id,
                                                          self.settings.source)
        return found

    # -- counters --
    def _record(self, route: routing.Route, fit: fitting.Fit, notes: list[dict]) -> None:
        saved = next(n["tokens_saved"] for n in notes if n.get("action") == "fit")
        names = next((n["names"] for n in notes if n.get("action") == "reductions"), [])
        decision = {"route": route.name, "model": route.model, "reason": route.reason,
                    "input_tokens": fit.tokens, "cut": fit.cut, "tokens_saved": saved,
                    "reductions": names}
        with self._lock:
            s = self.stats
            s["requests"] += 1
            for name in names:
                s["reductions"][name] = s["reductions"].get(name, 0) + 1
            s["routes"][route.name] = s["routes"].get(route.name, 0) + 1
            s["cuts"] += fit.cut
            s["fitted_new"] += any(n.get("action") == "fit_new_messages" for n in notes)
            s["tokens_saved"] += saved
            s["last"] = decision
        log.info("optimizer.routed", **decision)
        if fit.cut:
            log.info("optimizer.cut", model=route.model,
                     **next(n for n in notes if n.get("action") == "cut"))

    def _record_too_long(self, route: routing.Route, exc: errors.PromptTooLong) -> None:
        with self._lock:
            self.stats["requests"] += 1
            self.stats["prompt_too_long"] += 1
            self.stats["last"] = {"route": route.name, "model": route.model,
                                  "error": exc.message}
        log.info("optimizer.prompt_too_long", model=route.model, tokens=exc.tokens,
                 maximum=exc.maximum)

    def info(self) -> dict:
        with self._lock:
            out = {**self.stats, "routes": dict(self.stats["routes"]),
                   "reductions": dict(self.stats["reductions"]),
                   "last": dict(self.stats["last"])}
        out["sessions"] = len(self.store)
        return out


def check_shape(request: dict) -> None:
    """The front door validates every request (services/frontdoor/parse.py); this is only
    what the optimizer itself reads before it could crash, for a request sent to it directly
    over the bus (the Optimize frame already guarantees an object): a bad one is an
    invalid_request naming the field, not an internal error."""
    msgs = request.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise errors.InvalidRequest("messages: at least one message is required")
    for i, message in enumerate(msgs):
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            raise errors.InvalidRequest(f"messages.{i}: expected {{role, content: [blocks]}}")
    system = request.get("system") or []
    if not isinstance(system, list) or not all(isinstance(s, str) for s in system):
        raise errors.InvalidRequest("system: expected a list of strings")
    max_tokens = request.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise errors.InvalidRequest("max_tokens: expected an integer of at least 1")
