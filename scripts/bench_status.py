"""Time /metrics, /status.json and /status on a front door with fake engine services (real
waitress, real bus), after 50 requests, and the cost of one request record.

    .venv/bin/python scripts/bench_status.py
"""
import os, sys, tempfile, time, statistics
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
os.environ["ANYCLAUDE_RUN_DIR"] = tempfile.mkdtemp(prefix="acb", dir="/tmp")
import httpx2 as httpx
import structlog, logging
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
from frontdoor.fd_fake_engine import FakeEngine
from frontdoor.fd_helpers import Door, make_settings
engines = [FakeEngine(m).start() for m in ("local-main", "local-small")]
door = Door(make_settings())
client = door.client()
t0 = time.perf_counter()
for i in range(50):
    client.messages.create(model="claude-sonnet-4-6", max_tokens=16,
                           messages=[{"role": "user", "content": f"fake:text a b {i}"}])
per_req = (time.perf_counter() - t0) / 50
with httpx.Client() as http:
    for path in ("/metrics", "/status.json", "/status"):
        times = []
        for _ in range(50):
            t = time.perf_counter(); r = http.get(door.url + path); times.append(time.perf_counter() - t)
            assert r.status_code == 200
        print(f"{path:13s} median {statistics.median(times)*1000:.1f} ms  p90 {sorted(times)[44]*1000:.1f} ms  {len(r.content)} bytes")
print(f"one fake-engine request end to end: {per_req*1000:.1f} ms")
t = time.perf_counter()
for _ in range(10000):
    rec = door.app.recorder.begin("req_x", "m", False); door.app.recorder.first_output(rec)
    door.app.recorder.finish(rec)
print(f"record begin+finish (+metrics observe, log line filtered): {(time.perf_counter()-t)/10000*1e6:.1f} us")
door.close(); [e.stop() for e in engines]
