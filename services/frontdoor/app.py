"""The falcon app: routes, auth, request ids, and one error mapping for everything.

create_app(*, settings, engines, optimizer=None, breaker, clock=time.monotonic, ...) wires:
  engines.stream(model_id, request, *, request_id, client_gone) -> Iterator[Message]
      yields Accepted, Progress, Delta, Done and raises anyclaude.errors.* - exactly what
      bus.Client.stream does; closing the iterator must cancel the work
  engines.count(model_id, request) -> int
  engines.health() -> {model_id: reachable}            (optional, for /health)
  optimizer.optimize(request) -> request                (optional; may re-route "model")
The real ones are gateway.BusEngines and gateway.BusOptimizer.
"""

from __future__ import annotations

import http
import math
import time
import uuid
from collections.abc import Callable

import falcon
import structlog

from anyclaude import context_notice, errors
from anyclaude import messages as messages_mod
from anyclaude import token_count
from anyclaude.breaker import IGNORE, SUCCESS, Breaker
from anyclaude.config import Settings

from . import auth, parse, search_loop, search_route, sse
from .admission import Admission, slots_for
from .catalog import Catalog
from .gateway import reductions_of
from .inflight import InFlight, request_key
from .metrics import Metrics, SystemStatus
from .records import Recorder, optimizer_notes
from .relay import Call, Relay, outcome_of
from .statuspage import MetricsPage, StatusData, StatusPage
from .stream import public_error
from .upstate import EngineWatch

log = structlog.get_logger()

_REASONS = {499: "Client Closed Request", 529: "Overloaded"}
_NO_RETRY = {400, 401, 403, 404, 413, 499, 503}   # 503: an engine given up on (fatal)


def status_line(code: int) -> str:
    try:
        return f"{code} {http.HTTPStatus(code).phrase}"
    except ValueError:
        return f"{code} {_REASONS.get(code, 'Error')}"


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


class FrontDoorApp(falcon.App):
    """falcon.App with a __dict__, so the relay, guard and breaker travel with it."""


def create_app(*, settings: Settings, engines, optimizer=None, breaker: Breaker,
               clock: Callable[[], float] = time.monotonic, stall_after_s: float = 240.0,
               progress_ping_s: float = 1.0, write_deadline_s: float | None = None,
               duplicate_wait_s: float = 10.0, early_grace_s: float = 0.25,
               search=None, watch: EngineWatch | None = None,
               system: SystemStatus | None = None) -> FrontDoorApp:
    """The WSGI app.

    stall_after_s: seconds without a content event before a keepalive content event
        (Claude Code aborts a stream after 300 s without one).
    progress_ping_s: at most one ping per this many seconds for engine Progress frames.
    write_deadline_s: a client that takes nothing for this long is cut off (default
        timeouts.idle_s); the engine work is cancelled.
    duplicate_wait_s: how long an identical request waits for the copy it replaces.
    early_grace_s: how long a stream waits for the engine's first decisive frame so that
        an immediate refusal is an HTTP status (message_start follows it at once).
    search: a callable returning this thread's search function (websearch.SearchFn), for
        Claude Code's dedicated WebSearch call and for searches the model decides on
        (search_loop.py); None answers them `unavailable`.
    watch: what the supervisor says about the engines (upstate.EngineWatch); by default it
        asks the supervisor's control socket, when there is one.
    system: the supervisor's status for /status and /metrics (metrics.SystemStatus).

    Admission (admission.py): engine.queue_size requests wait per engine, beyond its slots;
    ``app.capacity`` is the sum, and the server starts at least that many threads + 4.
    """
    auth.check_exposure(settings)
    catalog = Catalog(settings)
    inflight = InFlight(wait_s=duplicate_wait_s)
    slots = {model_id: slots_for(cfg) for model_id, cfg in settings.models.items()}
    admission = Admission(slots, queue_size=settings.engine.queue_size, clock=clock)
    capacity = sum(slots.values()) + len(slots) * admission.queue_size
    if watch is None:
        watch = EngineWatch(settings.models,
                            restart_wait=getattr(settings.timeouts, "restart_wait_s", 30.0))
    relay = Relay(engines=engines, breaker=breaker, inflight=inflight,
                  threads=max(settings.server.threads, capacity + 2),
                  ping_interval=settings.timeouts.ping_interval_s,
                  stall_after=stall_after_s, progress_ping=progress_ping_s,
                  write_deadline=write_deadline_s if write_deadline_s is not None
                  else settings.timeouts.idle_s, early_grace=early_grace_s, clock=clock,
                  accept_wait=settings.timeouts.accept_s + early_grace_s,
                  admission=admission, watch=watch)
    recorder = relay.recorder = Recorder()
    app = FrontDoorApp(middleware=[_Middleware(settings)])
    system = system or SystemStatus()
    metrics = Metrics(system, lambda: snapshot(app))
    recorder.listeners.append(metrics.observe)
    status_page = StatusPage(settings, StatusData(settings, recorder, system,
                                                  lambda: snapshot(app)))
    app.req_options.strip_url_path_trailing_slash = True
    app.req_options.default_media_type = "application/json"
    app.add_error_handler(Exception, _on_error)
    app.add_error_handler(falcon.HTTPError, _on_error)
    messages = _Messages(settings, catalog, engines, optimizer, breaker, inflight, relay, search)
    app.add_route("/", _Root())
    app.add_route("/status", status_page)
    app.add_route("/status.json", status_page, suffix="json")
    app.add_route("/metrics", MetricsPage(settings, metrics))
    app.add_route("/health", _Health(engines, breaker, inflight, relay))
    app.add_route("/v1/messages", messages)
    app.add_route("/v1/messages/count_tokens", messages, suffix="count")
    app.add_route("/v1/models", _Models(catalog))
    app.add_route("/v1/models/{model_id}", _Models(catalog), suffix="one")
    app.relay, app.inflight, app.breaker = relay, inflight, breaker  # for shutdown and tests
    app.admission, app.watch, app.capacity = admission, watch, capacity
    app.recorder, app.metrics = recorder, metrics
    return app


def snapshot(app: FrontDoorApp) -> dict:
    """Counters for the heartbeat (`anyclaude status`) and /health."""
    breaker = app.breaker.snapshot()
    lanes = app.admission.snapshot()
    return {"breaker": breaker["state"], "breaker_failures": breaker["consecutive_failures"],
            "breaker_trips": breaker["trips"], "inflight": len(app.inflight),
            "running": sum(lane["running"] for lane in lanes.values()),
            "waiting": sum(lane["waiting"] for lane in lanes.values()),
            "rejected": sum(lane["rejected"] for lane in lanes.values()),
            "dropped": sum(lane["dropped"] for lane in lanes.values()),
            "retries": app.relay.retries, "clients_cut": app.relay.clients_cut,
            "engines_suspected": app.watch.suspects(),
            "admission": lanes}


# --- cross-cutting ------------------------------------------------------------------------

class _Middleware:
    def __init__(self, settings: Settings):
        self.settings = settings

    def process_request(self, req, resp):
        req.context.request_id = new_id("req_")
        req.context.api_key = ""
        resp.set_header("request-id", req.context.request_id)
        if req.path.startswith("/v1/"):
            req.context.api_key = auth.check(self.settings, req.get_header)


def _on_error(req, resp, ex, params):
    if isinstance(ex, falcon.HTTPError):
        status = ex.status_code
        kind = sse.error_type_for(status)
        message = ex.title if not ex.description else f"{ex.title}: {ex.description}"
        if status == 404:
            message = f"not found: {req.method} {req.path}"
        elif status == 405:
            message = f"method {req.method} is not allowed on {req.path}"
    else:
        status, kind, message = public_error(ex)
        if not isinstance(ex, errors.AnyclaudeError):
            log.exception("frontdoor.unhandled", request_id=getattr(req.context, "request_id", ""))
    request_id = getattr(req.context, "request_id", None) or new_id("req_")
    resp.status = status_line(status)
    resp.content_type = "application/json"
    resp.set_header("request-id", request_id)
    resp.set_header("x-should-retry", "false" if status in _NO_RETRY else "true")
    if status in (429, 529):
        wait = max(float(getattr(ex, "retry_after", 1.0) or 1.0), 0.0)
        resp.set_header("retry-after", str(max(1, math.ceil(wait))))
        resp.set_header("retry-after-ms", str(int(wait * 1000)))
    resp.media = sse.error_body(kind, message, request_id)
    resp.stream = None
    record = getattr(req.context, "record", None)
    if record is not None:     # refused before the engine call: the record ends here
        recorder, record = record
        recorder.fail(record, status, kind)
        recorder.finish(record)
    log.info("frontdoor.error", request_id=request_id, status=status, error_type=kind,
             message=message)


def _search_off(query, allowed, blocked):
    return messages_mod.Results(error_code="unavailable", message="web search is not configured")


def _counted(request: dict) -> int | None:
    """The prompt tokens of the prompt the optimizer rendered (what the engine will run and
    report in usage), or None when it rendered none."""
    prompt = request.get("prompt")
    if isinstance(prompt, dict) and isinstance(prompt.get("tokens"), int):
        return prompt["tokens"]
    return None


def _disconnected(req) -> Callable[[], bool]:
    check = req.env.get("waitress.client_disconnected")
    return check if check is not None else (lambda: False)


# --- resources ----------------------------------------------------------------------------

class _Root:
    def on_get(self, req, resp):
        resp.media = {"service": "anyclaude", "ok": True}

    def on_head(self, req, resp):
        resp.content_type = "application/json"


class _Health:
    def __init__(self, engines, breaker: Breaker, inflight: InFlight, relay: Relay):
        self.engines, self.breaker, self.inflight, self.relay = engines, breaker, inflight, relay

    def on_get(self, req, resp):
        probe = getattr(self.engines, "health", None)
        reachable = probe() if probe is not None else None
        breaker = self.breaker.snapshot()
        ok = breaker["state"] == "closed" and (reachable is None or all(reachable.values()))
        resp.media = {"state": "ok" if ok else "degraded", "breaker": breaker,
                      "engines": reachable, "inflight": len(self.inflight),
                      "admission": self.relay.admission.snapshot(),
                      "retries": self.relay.retries, "clients_cut": self.relay.clients_cut}


class _Models:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def on_get(self, req, resp):
        resp.media = self.catalog.listing()

    def on_get_one(self, req, resp, model_id):
        resp.media = self.catalog.info(model_id)


class _Messages:
    def __init__(self, settings, catalog, engines, optimizer, breaker, inflight, relay, search):
        self.settings, self.catalog, self.engines = settings, catalog, engines
        self.search = search
        self.optimizer, self.breaker = optimizer, breaker
        self.inflight, self.relay = inflight, relay
        self.max_body = settings.server.max_body_mb * 1024 * 1024

    def _body(self, req) -> bytes:
        parse.check_content_type(req.content_type)
        limit = self.max_body
        if req.content_length is not None and req.content_length > limit:
            raise errors.RequestTooLarge(f"request body is {req.content_length} bytes; the "
                                         f"limit is {limit} bytes (server.max_body_mb)")
        body = req.bounded_stream.read(limit + 1)
        if len(body) > limit:
            raise errors.RequestTooLarge(f"request body is over the limit of {limit} bytes "
                                         "(server.max_body_mb)")
        return body

    def _prepare(self, request: dict, request_id: str, notes: list | None = None) -> dict:
        """Route to a local model and let the optimizer fit it (its notes go to ``notes``): it
        clamps max_tokens (it knows the prompt's size) and, for a local model, hands on the
        rendered prompt."""
        request.setdefault("requested_model", request["model"])
        request["model"] = self.catalog.resolve(request["model"])
        noted = getattr(self.optimizer, "optimize_noted", None)
        if noted is not None:
            request, said = noted(request)
            if notes is not None:
                notes.extend(said)
        elif self.optimizer is not None:
            request = self.optimizer.optimize(request)
        return request

    def _prepare_or_explain(self, request: dict, rid: str, local: str, notes: list) -> dict:
        """``_prepare``; when the optimizer cannot count because the engine is down, the
        supervisor's word on the engine (restarting, fatal) replaces its vaguer error."""
        try:
            return self._prepare(request, rid, notes)
        except errors.Overloaded:
            self.relay.watch.suspect(local)
            self.relay.watch.check(local, fresh=True)
            raise

    def on_post(self, req, resp):
        rid = req.context.request_id
        body = self._body(req)
        decoded = parse.decode_body(body)
        parsed = parse.parse_request(decoded)
        requested = parsed.request["model"]
        local = self.catalog.resolve(requested)  # an unknown model is a 404 before anything else
        searching = search_route.dedicated_search(decoded, parsed.request)
        if searching is not None:
            return self._search(req, resp, searching, parsed.stream, requested)
        record = self.relay.recorder.begin(rid, requested, parsed.stream)
        record.local = local
        req.context.record = (self.relay.recorder, record)
        # Refusals come first and at once: breaker open, the engine's queue full.
        offered, web_tool = search_loop.offer(parsed.request)   # the model may search
        trial = self.breaker.allow()
        notes: list = []
        try:
            place = self.relay.admission.enter(local, rid)
        except BaseException:
            self.breaker.record(IGNORE, trial=trial)
            raise
        try:
            self.relay.watch.check(local)        # a suspected engine that is down: say so now
            request = self._prepare_or_explain(offered, rid, local, notes)
            cut = request.pop(context_notice.CUT_KEY, None)
            place = self.relay.admission.move(place, request["model"])
            ticket = self.inflight.enter(request_key(req.context.api_key, body), rid)
        except BaseException:
            self.relay.admission.leave(place)
            self.breaker.record(IGNORE, trial=trial)
            raise
        reductions = reductions_of(notes)
        record.local = request["model"]
        record.optimizer = optimizer_notes(notes)
        log.info("frontdoor.request", request_id=rid, model=requested, local=request["model"],
                 stream=parsed.stream, messages=len(request["messages"]),
                 **({"reductions": reductions} if reductions else {}))
        call = Call(request_id=rid, message_id=new_id("msg_"), requested_model=requested,
                    model_id=request["model"], request=request, ticket=ticket, trial=trial,
                    place=place, record=record, cut=cut, engine_stream=search_loop.engine_stream(
                        self.engines, web_tool, request, self._searcher, request_id=rid,
                        optimizer=self.optimizer, asked=offered))
        if reductions:
            resp.set_header("anyclaude-reductions", reductions)
        if cut:
            resp.set_header("anyclaude-context-cut", f"left_out_tokens={cut['left_out_tokens']}; "
                            f"client_tokens={cut['client_tokens']}; window={cut['window']}")
        if not parsed.stream:
            resp.media = self.relay.complete(call, _disconnected(req))
            return
        body_iter = self.relay.stream(call, _disconnected(req), thinking=request["thinking"],
                                      close_connection=req.env.get("anyclaude.close_connection"))
        resp.content_type = "text/event-stream"
        resp.set_header("cache-control", "no-cache")
        resp.stream = body_iter

    def _searcher(self):
        """This thread's search function."""
        return self.search() if self.search is not None else _search_off

    def _search(self, req, resp, searching, stream: bool, requested: str) -> None:
        query, tool = searching
        search = self._searcher()
        answer = search_route.answer(query, tool, search, stream=stream, model=requested,
                                     message_id=new_id("msg_"),
                                     request_id=req.context.request_id)
        if not stream:
            resp.media = answer
            return
        resp.content_type = "text/event-stream"
        resp.set_header("cache-control", "no-cache")
        resp.stream = answer

    def on_post_count(self, req, resp):
        rid = req.context.request_id
        parsed = parse.parse_request(parse.decode_body(self._body(req)), count=True)
        offered, _ = search_loop.offer(parsed.request)   # counted as the model sees it
        request = self._prepare(offered, rid)
        cut = request.pop(context_notice.CUT_KEY, None) or {}
        trial = self.breaker.allow()
        outcome = IGNORE
        try:
            self.relay.watch.check(request["model"])   # a down engine: answered at once
            tokens = _counted(request)    # the optimizer rendered it: its tokens, no hop
            if tokens is None:            # the remote kinds: the upstream counts
                tokens = self.engines.count(request["model"], request)
            outcome = SUCCESS
        except Exception as exc:
            outcome = outcome_of(exc)
            if isinstance(exc, (errors.ServiceUnavailable, errors.EngineFailed)):
                self.relay.watch.suspect(request["model"])
            raise
        finally:
            self.breaker.record(outcome, trial=trial)
        estimated = token_count.is_estimate(tokens)
        # the conversation as the client sent it, also when the optimizer had to cut it
        total = int(tokens) + int(cut.get("left_out_tokens", 0))
        (log.warning if estimated else log.info)(
            "frontdoor.count_tokens", request_id=rid, model=request["model"],
            input_tokens=total, left_out_tokens=cut.get("left_out_tokens", 0), estimate=estimated)
        resp.set_header(token_count.HEADER, "estimate" if estimated else "exact")
        resp.media = {"input_tokens": total}
