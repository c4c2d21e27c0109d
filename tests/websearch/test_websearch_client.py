"""The SearXNG HTTP client and the bridge, in this process, against the fake SearXNG."""

import pytest

from anyclaude.config import SearchConfig
from anyclaude.messages import Search
from anyclaude.services.websearch import searxng
from anyclaude.breaker import Breaker
from anyclaude.services.websearch.bridge import Bridge
from searxng_fake import free_port


def fail(url, q, **kw):
    with pytest.raises(searxng.Failure) as info:
        searxng.search(url, q, timeout_s=kw.pop("timeout_s", 1.0), **kw)
    return info.value


def test_sends_format_json_and_timeout_limit_to_the_configured_path(fake):
    data = searxng.search(fake.url + "/searx/", "hello world", timeout_s=4)
    assert len(data["results"]) == 3
    sent = fake.queries("hello world")[-1]
    assert sent["path"] == "/searx/search"
    assert sent["params"]["format"] == "json"
    assert 0 < float(sent["params"]["timeout_limit"]) < 4
    assert sent["host"] == f"127.0.0.1:{fake.port}"


@pytest.mark.parametrize("q, code, words", [
    ("forbidden", "unavailable", "403"),
    ("limited", "too_many_requests", "429"),
    ("error500", "unavailable", "500: search error"),
    ("nonjson", "unavailable", "not a JSON object"),
    ("jsonlist", "unavailable", "not a JSON object"),
    ("slow", "unavailable", "did not answer within"),
    ("trickle", "unavailable", "did not answer within"),
])
def test_failure_shapes_map_to_error_codes(fake, q, code, words):
    failure = fail(fake.url, q, timeout_s=1.0)
    assert failure.code == code and words in failure.message
    assert failure.reached is (None if "within" in words else True)


def test_403_and_429_carry_the_fix_for_the_log(fake):
    assert "search.formats" in fail(fake.url, "forbidden").hint
    assert "pass_ip" in fail(fake.url, "limited").hint


def test_redirects_are_not_followed(fake):
    failure = fail(fake.url, "redirect")
    assert failure.code == "unavailable" and "302" in failure.message
    assert fake.other.requests == []


def test_connection_refused_is_unavailable():
    failure = fail(f"http://127.0.0.1:{free_port()}", "x")
    assert failure.code == "unavailable" and "refused" in failure.message
    assert failure.reached is False
    hidden = fail(f"http://user:secret@127.0.0.1:{free_port()}", "x")
    assert "secret" not in hidden.message and "127.0.0.1" in hidden.message


def test_an_oversized_answer_is_refused(fake):
    failure = fail(fake.url, "huge", max_body_bytes=100_000)
    assert failure.code == "unavailable" and "larger than" in failure.message


@pytest.mark.parametrize("url", ["", "searx.local", "ftp://h/", "http:///x", "http://h/?a=1",
                                 "http://h:99999/"])
def test_bad_urls_are_named(url):
    with pytest.raises(ValueError, match="searxng_url"):
        searxng.check_url(url)


# --- the bridge ----------------------------------------------------------------------

class Fetch:
    def __init__(self, data=None, failure=None):
        self.data, self.failure, self.calls = data, failure, []

    def __call__(self, url, query, *, timeout_s):
        self.calls.append(query)
        if self.failure:
            raise self.failure
        return self.data


def bridge(url="http://127.0.0.1:1", fetch=None, **kw):
    return Bridge(SearchConfig(searxng_url=url, timeout_s=2, max_results=kw.pop("max_results", 8)),
                  fetch=fetch or Fetch({"results": []}), **kw)


def test_off_answers_unavailable_without_network():
    fetch = Fetch()
    b = bridge("", fetch)
    out = b.search(Search("hello"))
    assert out.error_code == "unavailable" and "searxng_url" in out.message
    assert fetch.calls == [] and b.info()["configured"] is False


def test_a_bad_url_is_reported_not_fatal():
    fetch = Fetch()
    b = bridge("searx.local:8888", fetch)
    out = b.search(Search("hello"))
    assert out.error_code == "unavailable" and "not an http(s) URL" in out.message
    assert fetch.calls == [] and "not an http(s) URL" in b.info()["config_error"]


@pytest.mark.parametrize("query, code", [("", "invalid_tool_input"), ("   ", "invalid_tool_input"),
                                         ("x" * 501, "query_too_long")])
def test_bad_queries_never_reach_searxng(query, code):
    fetch = Fetch()
    assert bridge(fetch=fetch).search(Search(query)).error_code == code
    assert fetch.calls == []


def test_breaker_stops_calls_after_repeated_failures():
    fetch = Fetch(failure=searxng.Failure("unavailable", "refused"))
    b = bridge(fetch=fetch, breaker=Breaker(threshold=3, cooldown_s=60))
    codes = [b.search(Search(f"q{i}")).error_code for i in range(5)]
    assert codes == ["unavailable"] * 5
    assert len(fetch.calls) == 3
    info = b.info()
    assert info["breaker"]["state"] == "open" and info["counters"]["refused_by_breaker"] == 2


def test_failed_engines_with_no_results_are_unavailable_not_empty(fake):
    b = bridge(fake.url, searxng.search)
    out = b.search(Search("empty-unresponsive"))
    assert out.error_code == "unavailable" and "bing, google" in out.message
    assert b.search(Search("nullurls-unresponsive")).error_code == "unavailable"
    empty = b.search(Search("empty"))
    assert empty.error_code is None and empty.results == []


def test_max_results_from_request_or_config(fake):
    b = bridge(fake.url, searxng.search, max_results=4)
    assert len(b.search(Search("many")).results) == 4
    assert len(b.search(Search("many", max_results=10)).results) == 10


def test_authority_credentials_are_not_shown_in_info():
    assert bridge("http://user:secret@127.0.0.1:1/").info()["url"] == "http://127.0.0.1:1/"
