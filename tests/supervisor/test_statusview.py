"""The status table's per-service summaries."""

from anyclaude.statusview import service_summary


def test_engine_summary_shows_blas_and_cache_hit_rate():
    info = {"model": "qwen", "blas": "openblas", "queue": 2, "completed": 7,
            "cache": {"hit_rate": 0.75, "cached_tokens": 20000, "bytes": 80 * 2**20, "disk_hits": 1}}
    text = service_summary("engine-qwen", info)
    assert "blas=openblas" in text and "cache hit=75%" in text and "cached=20000tok/80MB" in text
    assert "window=" not in text          # an engine that has not reported one yet


def test_engine_summary_shows_the_window_and_where_it_came_from():
    info = {"model": "qwen", "context_window": 32768, "window_source": "model"}
    assert "window=32768(model)" in service_summary("engine-qwen", info)


def test_kvstore_summary_shows_size_budget_and_degraded():
    text = service_summary("kvstore", {"bytes": 2**30, "budget": 8 * 2**30, "entries": 3,
                                       "hits": 1, "misses": 3, "degraded": True})
    assert "store=1024MB/8192MB" in text and "hit=25%" in text and "DEGRADED" in text


def test_websearch_summary_says_whether_searxng_is_reachable():
    assert "search off" in service_summary("websearch", {"configured": False})
    text = service_summary("websearch", {"configured": True, "reachable": False,
                                         "breaker": {"state": "open"}, "counters": {}})
    assert "UNREACHABLE" in text and "breaker=open" in text


def test_unknown_or_odd_info_falls_back_to_the_raw_fields():
    assert service_summary("frontdoor", {"breaker": "closed"}) == "breaker=closed"
    assert "model=" in service_summary("engine-x", {"model": "x", "cache": "odd"})


def test_status_table_says_which_model_each_engine_runs_and_its_weights():
    from anyclaude.statusview import table
    status = {"services": [{"name": "engine-smollm2", "state": "ready", "pid": 1, "uptime_s": 5,
                            "restarts": 0, "last_heartbeat_age_s": 0.5,
                            "info": {"model": "smollm2", "model_note": "SmolLM2-135M-Instruct",
                                     "weights": "float32 (dequantized from Q4_1 GGUF)"}}]}
    lines = table(status)
    assert "engine-smollm2: SmolLM2-135M-Instruct [weights: float32 (dequantized from Q4_1 GGUF)]" in lines

def test_engine_summary_shows_a_model_download_while_starting():
    info = {"model": "qwen", "download": [{"repo": "mlx-community/Qwen3-4B-4bit", "done": 512 * 2**20,
                                           "total": 2048 * 2**20, "rate_bps": 8 * 2**20,
                                           "eta_s": 192}]}
    text = service_summary("engine-qwen", info)
    assert text == "downloading mlx-community/Qwen3-4B-4bit 512MB/2048MB (25%) 8.0MB/s eta 3m12s"

def test_optimizer_summary_shows_the_reductions_that_ran():
    info = {"requests": 3, "routes": {"default": 3}, "cuts": 0, "tokens_saved": 900,
            "reductions": {"tool_descriptions": 3, "core_tools": 3}}
    text = service_summary("optimizer", info, width=200)
    assert "reduced=tool_descriptions:3,core_tools:3" in text
    assert "reduced" not in service_summary("optimizer", {**info, "reductions": {}})
