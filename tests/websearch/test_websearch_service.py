"""The real websearch service process, over the bus, against the fake SearXNG."""

import threading
import time

import pytest

from anyclaude import bus, messages
from searxng_fake import free_port


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def expect_error(service, query, code):
    out = service.search(query)
    assert out.error_code == code, out
    assert out.results == [] and out.message
    # one success in between keeps the breaker closed for the next failure shape
    assert service.search("hello").error_code is None
    return out


def test_results_are_shaped(service):
    out = service.search("hello")
    assert out.error_code is None
    assert [r["url"] for r in out.results] == ["https://docs.python.org/3/", "https://example.com/a",
                                               "http://other.org/b"]
    first = out.results[0]
    assert first == {"url": "https://docs.python.org/3/", "title": "Python docs & more",
                     "snippet": "The official docs.", "page_age": "May 1, 2024"}
    assert out.results[1]["page_age"] is None


def test_query_goes_only_to_the_configured_url_with_json_and_timeout_limit(service, fake):
    service.search("where does this go")
    sent = fake.queries("where does this go")
    assert len(sent) == 1
    assert sent[0]["path"] == "/search" and sent[0]["host"] == f"127.0.0.1:{fake.port}"
    assert sent[0]["params"]["format"] == "json"
    assert 0 < float(sent[0]["params"]["timeout_limit"]) < 1.0  # under our 1 s deadline
    expect_error(service, "redirect", "unavailable")
    assert fake.other.requests == []
    assert all(r["path"] == "/search" for r in fake.requests)


def test_real_empty_search_is_an_empty_list(service):
    out = service.search("empty")
    assert out.error_code is None and out.results == []


def test_empty_with_failed_engines_is_unavailable(service):
    out = expect_error(service, "empty-unresponsive", "unavailable")
    assert "engine" in out.message


def test_403_is_unavailable_and_logs_how_to_enable_json(service):
    expect_error(service, "forbidden", "unavailable")
    assert "search.formats" in service.log_text()


def test_429_is_too_many_requests_and_logs_the_pass_ip_hint(service):
    expect_error(service, "limited", "too_many_requests")
    assert "pass_ip" in service.log_text()


@pytest.mark.parametrize("shape", ["error500", "nonjson", "slow"])
def test_broken_answers_are_unavailable(service, shape):
    expect_error(service, shape, "unavailable")


def test_odd_results_are_filtered_deduplicated_and_truncated(service):
    assert [r["url"] for r in service.search("nullurls").results] == [
        "https://good.example.net/page"]
    assert [r["title"] for r in service.search("duplicates").results] == ["First", "Query"]
    huge = service.search("huge").results
    assert len(huge) == 2 and all(len(r["snippet"]) <= 500 for r in huge)


def test_domain_filters_by_host_suffix(service):
    allowed = service.search("domains", allowed=["example.com"]).results
    assert [r["url"] for r in allowed] == ["https://example.com/1", "https://docs.example.com/2"]
    blocked = service.search("domains", blocked=["other.org"]).results
    assert "https://blog.other.org/6" not in [r["url"] for r in blocked]
    assert "https://badexample.com/3" in [r["url"] for r in blocked]


def test_max_results_is_honoured(service):
    assert len(service.search("many").results) == 8  # the configured default
    assert len(service.search("many", max_results=3).results) == 3


def test_query_checks_happen_before_searxng(service, fake):
    before = len(fake.requests)
    assert service.search("q" * 501).error_code == "query_too_long"
    assert service.search("  ").error_code == "invalid_tool_input"
    assert len(fake.requests) == before


def test_info_reports_configuration_breaker_and_counters(service, fake):
    info = service.info()
    assert info["configured"] is True and info["url"] == fake.url
    assert info["breaker"]["state"] == "closed"
    assert info["counters"]["searches"] >= info["counters"]["calls"] > 0
    assert info["counters"]["error.unavailable"] > 0
    assert info["reachable"] is True


def test_breaker_opens_and_spares_a_failing_searxng(start_service, fake):
    svc = start_service(fake.url)
    for _ in range(3):
        assert svc.search("error500").error_code == "unavailable"
    before = len(fake.queries("hello"))
    out = svc.search("hello")
    assert out.error_code == "unavailable" and "not asking" in out.message
    assert len(fake.queries("hello")) == before  # SearXNG was not called
    info = svc.info()
    assert info["breaker"]["state"] == "open"
    assert info["counters"]["calls"] == 3 and info["counters"]["refused_by_breaker"] == 1


def test_searxng_down_is_unavailable_and_not_hammered(start_service):
    svc = start_service(f"http://127.0.0.1:{free_port()}")
    messages_seen = [svc.search(f"q{i}").message for i in range(5)]
    assert all("refused" in m for m in messages_seen[:3])
    assert all("not asking" in m for m in messages_seen[3:])
    wait_for(lambda: svc.info()["reachable"] is not None)
    info = svc.info()
    assert info["counters"]["calls"] == 3 and info["reachable"] is False
    assert info["breaker"]["state"] == "open"


def test_search_off_answers_unavailable_with_a_clear_message(start_service):
    svc = start_service("")
    out = svc.search("hello")
    assert out.error_code == "unavailable" and "searxng_url" in out.message
    info = svc.info()
    assert info["configured"] is False and info.get("counters", {}).get("calls") is None


def test_the_bus_loop_answers_while_a_search_runs(service, fake):
    """Searches run on worker threads: info is answered while one is still in flight."""
    before = len(fake.queries("slow"))
    done = threading.Event()

    def slow():
        client = bus.Client("websearch")
        try:
            client.request(messages.Search("slow"), timeout=10)
        finally:
            client.close()
            done.set()

    threading.Thread(target=slow).start()
    wait_for(lambda: len(fake.queries("slow")) > before)
    assert service.info()["in_flight"] == 1 and not done.is_set()
    assert done.wait(10)
    assert service.info()["in_flight"] == 0


def test_a_bad_setting_exits_with_a_message_naming_the_key(tmp_path):
    import os
    import subprocess
    import sys
    env = {**os.environ, "ANYCLAUDE_RUN_DIR": f"/tmp/ac-bad-{os.getpid()}",
           "ANYCLAUDE_SEARCH_TIMEOUT_S": "soon", "XDG_CONFIG_HOME": str(tmp_path)}
    env.pop("ANYCLAUDE_CONFIG", None)
    done = subprocess.run([sys.executable, "-m", "anyclaude.services.websearch"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "search.timeout_s" in done.stderr and "Traceback" not in done.stderr
