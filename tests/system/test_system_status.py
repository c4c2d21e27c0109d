"""The status page and /metrics of the whole running system (real engine on the tiny model,
kvstore, supervisor), and the page rendered by a real browser: headless Chromium."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from headless_chromium import browse  # noqa: E402
from conftest import CONTEXT_WINDOW  # noqa: E402  (the model's declared window)

SYSTEM_A = "You check the status page. " * 30
SYSTEM_B = "An unrelated system prompt about gardening. " * 30


def sample(text: str, name: str, labels: dict) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


@pytest.fixture(scope="module")
def served(system):
    """A few requests: a first turn, its follow-up (a cache hit), an unrelated prompt (a miss)."""
    import anthropic
    client = anthropic.Anthropic(base_url=system.url, api_key="sk-test", max_retries=0,
                                 timeout=120)
    system.say(("status turn one", "First answer."), ("status turn two", "Second answer."),
               ("status other", "Other answer."))
    before = httpx.get(system.url + "/metrics", timeout=30).text
    first = [{"role": "user", "content": "status turn one"}]
    client.messages.create(model="tiny", max_tokens=32, system=SYSTEM_A, messages=first)
    follow = first + [{"role": "assistant", "content": "First answer."},
                      {"role": "user", "content": "status turn two"}]
    with client.messages.stream(model="tiny", max_tokens=32, system=SYSTEM_A,
                                messages=follow) as stream:
        stream.get_final_message()
    client.messages.create(model="tiny", max_tokens=32, system=SYSTEM_B,
                           messages=[{"role": "user", "content": "status other"}])
    return before


def test_metrics_come_from_the_processes_and_move(system, served):
    before = served
    hits = lambda text: sum(sample(text, "anyclaude_cache_hits_total", {"model": "tiny", "tier": t})
                            or 0 for t in ("memory", "disk"))
    deadline = time.monotonic() + 10     # heartbeats come every second
    while True:
        after = httpx.get(system.url + "/metrics", timeout=30).text
        if hits(after) >= hits(before) + 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    ok = {"model": "tiny", "status": "200", "stop_reason": "end_turn"}
    assert (sample(after, "anyclaude_requests_total", ok) or 0) \
        - (sample(before, "anyclaude_requests_total", ok) or 0) == 3
    # from the engine's heartbeat, through the supervisor
    assert sample(after, "anyclaude_service_state", {"service": "engine-tiny", "state": "ready"}) == 1
    assert sample(after, "anyclaude_service_restarts_total", {"service": "kvstore"}) == 0
    assert hits(after) >= hits(before) + 1
    assert sample(after, "anyclaude_cache_bytes", {"model": "tiny", "tier": "memory"}) > 0
    assert sample(after, "anyclaude_engine_queue_depth", {"model": "tiny"}) == 0
    assert sample(after, "anyclaude_kvstore_bytes", {"kind": "budget"}) == 256 * 2**20
    assert sample(after, "anyclaude_websearch_searches_total", {"result": "results"}) is not None


def test_status_json_tells_hits_and_where_a_miss_diverged(system, served):
    data = httpx.get(system.url + "/status.json", timeout=30).json()
    states = {s["name"]: s["state"] for s in data["services"]}
    assert states["engine-tiny"] == "ready" and states["frontdoor"] == "ready"
    other, second, first = data["requests"][:3]
    assert second["cache"]["source"] in ("memory", "disk")
    assert second["cache_read_tokens"] > first["output_tokens"]
    assert second["cache_read_tokens"] == second["cache"]["reused"]
    miss = other["cache"]
    assert "diverged_at" in miss and 0 < miss["diverged_at"] < miss["prompt_tokens"], miss
    assert miss["diverged_in"] == "system+tools"          # the system prompt differs
    engine = next(s for s in data["services"] if s["name"] == "engine-tiny")["info"]
    assert engine["device"].startswith("Device(") and engine["context_window"] == CONTEXT_WINDOW


def test_page_renders_in_a_real_browser(system, served, tmp_path):
    url = system.url + "/status"
    dom = browse(url, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    rows = re.findall(r'<tr data-request="(req_[0-9a-f]+)"', html)
    assert len(rows) >= 3, html[-3000:]
    assert re.search(r'<tr data-service="engine-tiny">.*?state ready', html, re.S)
    cache = re.search(r'<section id="cache">(.*?)</section>', html, re.S).group(1)
    assert 'data-stat="hit rate"' in cache and re.search(r'<b class="big">\d+%</b>', cache)
    assert re.search(r'<svg id="ttft-chart"[^>]*>.*?<rect', html, re.S)
    assert re.search(r'<svg id="cache-chart"[^>]*>.*?<rect', html, re.S)
    assert "miss: diverged at token" in html
    shot_dir = Path(os.environ.get("ANYCLAUDE_SCREENSHOT_DIR") or tmp_path)
    shot_dir.mkdir(parents=True, exist_ok=True)
    shot = shot_dir / "status-page.png"
    taken = browse(url, tmp_path / "profile", f"--screenshot={shot}",
                    "--window-size=1400,1100", "--hide-scrollbars")
    assert taken.returncode == 0 and shot.stat().st_size > 10_000, taken.stderr[-2000:]
