"""The reliability pieces on their own, every branch: the admission queue, what the supervisor
says about an engine (upstate), and waitress-level load shedding on a real server."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from anyclaude import errors
from anyclaude.services.frontdoor.admission import Admission, slots_for
from anyclaude.services.frontdoor.server import SHED_AFTER_WAITING, SheddingDispatcher
from anyclaude.services.frontdoor.upstate import EngineDown, EngineWatch


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


# --- admission ---------------------------------------------------------------------------

def test_places_up_to_slots_plus_queue_then_an_immediate_refusal_with_an_estimate():
    clock = Clock()
    adm = Admission({"m": 1}, queue_size=2, clock=clock)
    first = adm.enter("m", "r1")
    adm.wait_turn(first, lambda: False)
    clock.now += 4.0
    adm.leave(first)                                   # one measured run: 4 s
    places = [adm.enter("m", f"r{i}") for i in range(2, 5)]   # 1 slot + 2 waiting
    with pytest.raises(errors.Overloaded) as info:
        adm.enter("m", "r5")
    assert info.value.retry_after == 16.0              # 4 ahead of it x 4 s on one slot
    assert info.value.message == ("engine-m is busy: 3 requests are running or waiting for it "
                                  "(at most 1 running + 2 waiting); retry in about 16 s")
    snap = adm.snapshot()["m"]
    assert snap["rejected"] == 1 and snap["waiting"] == 3 and snap["mean_service_s"] == 4.0
    for place in places:
        adm.leave(place)
    assert adm.busy() == 0


def _retry_after_once_a_request_took(seconds: float) -> float:
    clock = Clock()
    adm = Admission({"m": 1}, queue_size=0, clock=clock)
    place = adm.enter("m", "a")
    adm.wait_turn(place, lambda: False)
    clock.now += seconds
    adm.leave(place)
    adm.wait_turn(adm.enter("m", "b"), lambda: False)
    with pytest.raises(errors.Overloaded) as info:
        adm.enter("m", "c")
    return info.value.retry_after


def test_retry_after_stays_between_one_second_and_a_minute():
    assert _retry_after_once_a_request_took(0.01) == 1.0
    assert _retry_after_once_a_request_took(500) == 60.0


def test_turns_are_given_in_arrival_order():
    adm = Admission({"m": 1}, queue_size=5)
    holder = adm.enter("m", "holder")
    adm.wait_turn(holder, lambda: False)
    order: list[str] = []
    places = [adm.enter("m", f"q{i}") for i in range(4)]

    def wait(place):
        adm.wait_turn(place, lambda: False)
        order.append(place.request_id)
        time.sleep(0.02)
        adm.leave(place)
    threads = [threading.Thread(target=wait, args=(p,)) for p in reversed(places)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    adm.leave(holder)
    for t in threads:
        t.join(5)
    assert order == ["q0", "q1", "q2", "q3"]


def test_a_client_that_leaves_while_queued_is_dropped_and_the_next_moves_up():
    adm = Admission({"m": 1}, queue_size=3)
    holder = adm.enter("m", "holder")
    adm.wait_turn(holder, lambda: False)
    gone = adm.enter("m", "gone")
    with pytest.raises(errors.Cancelled, match="while the request was queued"):
        adm.wait_turn(gone, lambda: True)
    adm.leave(gone)                                    # a second leave is harmless
    assert adm.snapshot()["m"]["dropped"] == 1 and adm.snapshot()["m"]["waiting"] == 0
    nxt = adm.enter("m", "next")
    adm.leave(holder)
    adm.wait_turn(nxt, lambda: False)
    assert adm.snapshot()["m"]["running"] == 1


def test_close_releases_waiting_requests_and_refuses_new_ones():
    adm = Admission({"m": 1}, queue_size=3)
    holder = adm.enter("m", "holder")
    adm.wait_turn(holder, lambda: False)
    waiting = adm.enter("m", "w")
    result: dict = {}

    def wait():
        try:
            adm.wait_turn(waiting, lambda: False)
        except errors.Overloaded as exc:
            result["exc"] = exc
    thread = threading.Thread(target=wait)
    thread.start()
    adm.close("anyclaude is shutting down")
    thread.join(5)
    assert result["exc"].message == "anyclaude is shutting down"
    with pytest.raises(errors.Overloaded, match="shutting down"):
        adm.enter("m", "late")
    adm.leave(holder)
    assert adm.busy() == 0


def test_move_requeues_on_the_routed_model_and_slots_by_kind():
    adm = Admission({"a": 1, "b": 1}, queue_size=0)
    place = adm.enter("a", "r")
    assert adm.move(place, "a") is place
    moved = adm.move(place, "b")
    assert moved.model_id == "b" and adm.snapshot()["a"]["waiting"] == 0
    assert adm.enter("unlisted", "x").model_id == "unlisted"   # one slot when not configured

    class Cfg:
        def __init__(self, kind, concurrency=0):
            self.kind, self.concurrency = kind, concurrency
    assert slots_for(Cfg("mlx", 9)) == 9 and slots_for(Cfg("mlx")) == 4   # mlx: batch size
    assert slots_for(Cfg("openai")) == 4
    assert slots_for(Cfg("anthropic", 2)) == 2


# --- what the supervisor says -------------------------------------------------------------

def status_with(**engine):
    return {"services": [{"name": "engine-m", "state": "ready", "pid": 10, "reason": "",
                          "stderr_tail": [], **engine}]}


def test_check_asks_only_about_suspects_and_names_the_state():
    answers = [status_with(state="backoff", pid=None, reason="killed by SIGKILL; restarting in 0.4 s")]
    calls = []

    def status():
        calls.append(1)
        return answers[-1]
    clock = Clock()
    watch = EngineWatch(["m"], restart_wait=5, status=status, clock=clock)
    with pytest.raises(errors.Overloaded, match="engine-m is backoff: killed by SIGKILL") as info:
        watch.check("m")
    assert info.value.retry_after == 2.0
    answers.append(status_with(state="fatal", pid=None, reason="gave up after 3 failures",
                               stderr_tail=["", "ValueError: no model here  "]))
    clock.now += 1
    with pytest.raises(EngineDown) as info:
        watch.check("m")
    assert info.value.http_status == 503 and info.value.known_down
    assert info.value.message == ("engine-m is fatal: gave up after 3 failures (last output: "
                                  "ValueError: no model here); fix the cause, then run "
                                  "`anyclaude restart engine-m`")
    answers.append(status_with())
    clock.now += 1
    watch.check("m")                                   # ready: no longer suspected
    asked = len(calls)
    watch.check("m")
    assert len(calls) == asked and watch.suspects() == []


def test_check_fresh_does_not_trust_a_status_cached_before_the_failure():
    answers = [status_with()]
    clock = Clock()
    watch = EngineWatch(["m"], restart_wait=5, status=lambda: answers[-1], clock=clock)
    watch.check("m")                                   # ready, and cached for a moment
    answers.append(status_with(state="stopping", pid=None))
    watch.suspect("m")                                 # a call failed within that moment
    watch.check("m")                                   # the cache still says ready
    watch.suspect("m")
    with pytest.raises(errors.Overloaded, match="engine-m is stopping"):
        watch.check("m", fresh=True)
    no_supervisor = EngineWatch(["m"], restart_wait=5, status=lambda: None)
    no_supervisor.check("m")
    assert no_supervisor.suspects() == []


def test_wait_restart_waits_for_a_fresh_process_or_gives_the_last_status():
    answers = iter([status_with(pid=10), status_with(state="backoff", pid=None),
                    status_with(state="starting", pid=11), status_with(pid=11)])
    watch = EngineWatch(["m"], restart_wait=30, status=lambda: next(answers))
    assert watch.wait_restart("m", lambda: False, threading.Event()) is None
    fatal = EngineWatch(["m"], restart_wait=30, status=lambda: status_with(state="fatal"))
    assert fatal.wait_restart("m", lambda: False, threading.Event())["state"] == "fatal"
    stuck = EngineWatch(["m"], restart_wait=0.3, status=lambda: status_with(state="starting"))
    assert stuck.wait_restart("m", lambda: False, threading.Event())["state"] == "starting"
    with pytest.raises(errors.Cancelled):
        stuck.wait_restart("m", lambda: True, threading.Event())
    closing = threading.Event()
    closing.set()
    assert stuck.wait_restart("m", lambda: False, closing)["state"] == "starting"
    alone = EngineWatch(["m"], restart_wait=30, status=lambda: None)
    assert alone.wait_restart("m", lambda: False, threading.Event()) is None


# --- load shedding on a real waitress ------------------------------------------------------

def test_requests_beyond_the_threads_and_a_short_wait_get_an_immediate_529():
    import waitress

    release = threading.Event()

    def app(environ, start_response):
        release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]
    from anyclaude.services.frontdoor.server import AnthropicChannel
    server = waitress.create_server(app, host="127.0.0.1", port=0,
                                    _dispatcher=SheddingDispatcher(1))
    server.channel_class = AnthropicChannel
    def serve():
        try:
            server.run()
        except (OSError, ValueError):   # the listener closed under select() at the end
            pass
    threading.Thread(target=serve, daemon=True).start()
    port = server.effective_port
    socks = []
    try:
        for _ in range(1 + SHED_AFTER_WAITING):        # one running, the rest waiting
            s = socket.create_connection(("127.0.0.1", port), 5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(s)
            time.sleep(0.05)
        late = socket.create_connection(("127.0.0.1", port), 5)
        late.settimeout(5)
        late.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = late.recv(65536)
            if not chunk:
                break
            answer += chunk
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 529 Overloaded")
        assert b"retry-after: 2" in head.lower()
        error = json.loads(payload)["error"]
        assert error["type"] == "overloaded_error" and "anyclaude is busy" in error["message"]
        assert server.task_dispatcher.shed == 1
        release.set()
        for s in socks:                                # the waiting ones are served
            s.settimeout(10)
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        release.set()
        for s in socks:
            s.close()
        server.close()
        server.task_dispatcher.shutdown(timeout=2)


# --- the relay's one retry, through the real app ------------------------------------------

class DyingEngines:
    """Its process 'dies' (peer_gone) before any output, `deaths` times; then answers."""

    def __init__(self, deaths: int):
        self.deaths, self.calls = deaths, 0

    def stream(self, model_id, request, *, request_id, client_gone):
        from anyclaude import messages
        self.calls += 1
        yield messages.Accepted(0)
        if self.calls <= self.deaths:
            exc = errors.EngineFailed("engine-m went away", retryable=True)
            exc.peer_gone = True
            raise exc
        yield messages.Delta([{"type": "text", "text": "after the restart"}])
        yield messages.Done("end_turn", None, {"output_tokens": 3})

    def count(self, model_id, request):
        return 1


def relay_app(engines, after_death: list):
    """The app with a supervisor whose answers after the death are ``after_death``."""
    import falcon.testing

    from anyclaude.config import ModelConfig, RoutesConfig, Settings
    from anyclaude.services.frontdoor.app import create_app
    from anyclaude.breaker import Breaker

    answers = iter([status_with(pid=10), *after_death])
    last: list = []

    def status():
        last[:] = [next(answers, last[0] if last else None)]
        return last[0]
    watch = EngineWatch([], restart_wait=0.5, status=status)
    app = create_app(settings=Settings(models={"m": ModelConfig()}, routes=RoutesConfig("m")),
                     engines=engines, breaker=Breaker(threshold=1), watch=watch)
    return app, falcon.testing.TestClient(app)


BODY = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def test_engine_death_before_output_is_retried_once_on_the_fresh_process():
    engines = DyingEngines(deaths=1)
    app, client = relay_app(engines, [status_with(state="backoff", pid=None),
                                      status_with(pid=11)])
    reply = client.simulate_post("/v1/messages", json=BODY)
    assert reply.status_code == 200 and reply.json["content"][0]["text"] == "after the restart"
    assert engines.calls == 2 and app.relay.retries == 1
    assert app.breaker.state == "closed"


def test_a_second_death_is_not_retried_and_a_given_up_engine_is_a_503():
    engines = DyingEngines(deaths=2)
    _, client = relay_app(engines, [status_with(pid=11)])
    reply = client.simulate_post("/v1/messages", json=BODY)
    assert reply.status_code == 500 and "went away" in reply.json["error"]["message"]
    assert engines.calls == 2                          # one retry, never two
    _, client = relay_app(DyingEngines(deaths=1), [status_with(state="fatal", pid=None,
                                                               reason="gave up")])
    reply = client.simulate_post("/v1/messages", json=BODY)
    assert reply.status_code == 503 and reply.json["error"]["message"].startswith(
        "engine-m is fatal: gave up")
    _, client = relay_app(DyingEngines(deaths=1), [status_with(state="starting", pid=12)])
    reply = client.simulate_post("/v1/messages", json=BODY)   # not back within restart_wait
    assert reply.status_code == 529 and "was not ready again within 0.5 s" in \
        reply.json["error"]["message"]
    assert int(reply.headers["retry-after"]) >= 1
