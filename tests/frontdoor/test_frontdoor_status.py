"""/status, /status.json and /metrics on the front door (real waitress, fake engine services
on the real bus): the request records, Prometheus counters that move, access with and
without an api_key, and nothing of the prompt or the key on them."""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx2 as httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from anyclaude import errors
from anyclaude.services.frontdoor.metrics import SystemStatus
from anyclaude.services.frontdoor.statuspage import check_access

from .fd_helpers import make_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from headless_chromium import browse  # noqa: E402

KEY = "sk-status-key-93f1c2"
SECRET = "PROMPT-SECRET-the-user-wrote-this"


def sample(text: str, name: str, labels: dict) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def ask(client, text: str, **extra):
    return client.messages.create(model="claude-sonnet-4-6", max_tokens=64,
                                  messages=[{"role": "user", "content": text}], **extra)


def test_metrics_parse_and_move_as_requests_are_served(make_door):
    door = make_door()
    client = door.client()
    ask(client, "fake:text a b c")
    with client.messages.stream(model="claude-sonnet-4-6", max_tokens=64,
                                messages=[{"role": "user", "content": "fake:text d e"}]) as s:
        s.get_final_message()
    first = httpx.get(door.url + "/metrics", timeout=10)
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/plain")
    labels = {"model": "local-main", "status": "200", "stop_reason": "end_turn"}
    assert sample(first.text, "anyclaude_requests_total", labels) == 2
    assert sample(first.text, "anyclaude_ttft_seconds_count", {"model": "local-main"}) == 2
    assert sample(first.text, "anyclaude_tokens_total", {"model": "local-main", "kind": "output"}) > 0
    assert sample(first.text, "anyclaude_breaker_state", {"breaker": "frontdoor",
                                                         "state": "closed"}) == 1
    with pytest.raises(Exception):
        ask(client, "fake:error overloaded")
    ask(client, "fake:text f")
    second = httpx.get(door.url + "/metrics", timeout=10).text
    assert sample(second, "anyclaude_requests_total", labels) == 3
    assert sample(second, "anyclaude_requests_total", {"model": "local-main", "status": "529"}) == 1
    assert sample(second, "anyclaude_request_duration_seconds_count", {"model": "local-main"}) == 4


def test_status_json_and_page_list_the_recent_requests(make_door):
    door = make_door()
    client = door.client()
    ask(client, "fake:text one two")
    ask(client, "fake:tool Bash {\"command\": \"ls\"}",
        tools=[{"name": "Bash", "input_schema": {"type": "object"}}])
    data = httpx.get(door.url + "/status.json", timeout=10).json()
    newest, older = data["requests"][:2]
    assert newest["stop_reason"] == "tool_use" and older["stop_reason"] == "end_turn"
    assert older["model"] == "claude-sonnet-4-6" and older["local"] == "local-main"
    assert older["output_tokens"] > 0 and older["input_tokens"] > 0
    assert 0 < older["ttft_s"] <= older["duration_s"]
    assert data["models"][0]["id"] == "local-main" and data["models"][0]["context_window"] == 32768
    assert data["frontdoor"]["breaker"] == "closed"
    page = httpx.get(door.url + "/status", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="ttft-chart"' in page.text and older["request_id"] in page.text
    # nothing is fetched from another host: no external scripts, styles, images or fonts
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|<link|@import|url\(""", page.text)


def test_the_ring_keeps_the_last_fifty(make_door):
    door = make_door()
    recorder = door.app.recorder
    for n in range(55):
        record = recorder.begin(f"req_{n}", "m", False)
        recorder.finish(record)
    listed = recorder.recent()
    assert len(listed) == 50 and listed[0]["request_id"] == "req_54"
    assert listed[0]["status"] == 499   # ended with neither Done nor an error


@pytest.mark.parametrize("path", ["/status", "/status.json", "/metrics"])
def test_key_is_required_when_set(make_door, path):
    door = make_door(make_settings(server={"api_key": KEY}))
    url = door.url + path
    missing = httpx.get(url, timeout=10)
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    assert missing.headers["www-authenticate"].startswith("Basic")   # a browser asks for it
    assert httpx.get(url, headers={"x-api-key": "wrong"}, timeout=10).status_code == 401
    basic = base64.b64encode(f"me:{KEY}".encode()).decode()
    for headers in ({"x-api-key": KEY}, {"authorization": f"Bearer {KEY}"},
                    {"authorization": f"Basic {basic}"}):
        assert httpx.get(url, headers=headers, timeout=10).status_code == 200, headers


def test_without_a_key_only_loopback_peers_are_served():
    settings = make_settings()
    check_access(settings, SimpleNamespace(remote_addr="127.0.0.1"), None)
    with pytest.raises(errors.PermissionDenied):
        check_access(settings, SimpleNamespace(remote_addr="192.168.1.20"), None)


def test_nothing_of_the_prompt_or_the_key_is_shown_or_logged(make_door):
    door = make_door(make_settings(server={"api_key": KEY}))
    client = door.client(api_key=KEY)
    with structlog.testing.capture_logs() as logged:
        ask(client, f"fake:text hello {SECRET}", system=f"system {SECRET}")
        ask(client, f"{SECRET} fake:echo")
    headers = {"x-api-key": KEY}
    bodies = [httpx.get(door.url + p, headers=headers, timeout=10).text
              for p in ("/status", "/status.json", "/metrics")]
    done = [e for e in logged if e["event"] == "frontdoor.request_done"]
    assert len(done) == 2
    for text in bodies + [json.dumps(done, default=str)]:
        assert SECRET not in text and KEY not in text


def test_page_in_a_browser_shows_a_download_and_keeps_odd_text_inert(make_door, tmp_path):
    """What the supervisor reports while an engine downloads its model, rendered by Chromium;
    a reason carrying markup stays text (the page never parses data as HTML)."""
    evil = "</script><img src=x onerror=\"document.title='owned'\"><b id=injected>x</b>"
    status = {"supervisor": {"state": "running", "uptime_s": 12.0, "pid": 1},
              "services": [
                  {"name": "kvstore", "kind": "kvstore", "state": "ready", "pid": 10,
                   "restarts": 0, "info": {"bytes": 0, "budget": 2**30}},
                  {"name": "engine-local-main", "kind": "engine", "state": "starting", "pid": 11,
                   "restarts": 1, "reason": evil,
                   "info": {"model": "local-main", "download": [
                       {"repo": "mlx-community/Some-Model-4bit", "done": 3 * 2**30,
                        "total": 4 * 2**30, "rate_bps": 50 * 2**20, "eta_s": 20}]}}]}
    door = make_door(system=SystemStatus(fetch=lambda: status))
    dom = browse(door.url + "/status", tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "downloading mlx-community/Some-Model-4bit  3.0 GB of 4.0 GB (75%)" in html, html
    assert re.search(r'class="bar"><div style="width:75\.0%', html)
    assert 'id="injected"' not in html and "<title>anyclaude status</title>" in html
    assert "&lt;/script&gt;&lt;img src=x" in html     # shown as the text it is
