"""Force-file rules (the engine side is covered in test_engine_generation)."""

from __future__ import annotations

import json

from engine_helpers import make_request

from anyclaude.services.engine.mlx.forcing import ENV, ForceRules, last_message_text


def write(path, rules):
    path.write_text(json.dumps({"rules": rules}))


def test_first_matching_rule_on_the_last_message(tmp_path):
    path = tmp_path / "f.json"
    write(path, [{"match": "alpha", "say": "A"}, {"match": "", "say": "ANY"}])
    rules = ForceRules(path)
    assert rules.pick(make_request("say alpha please")) == "A"
    assert rules.pick(make_request("beta")) == "ANY"
    request = make_request("alpha")
    request["messages"].append({"role": "user", "content": [{"type": "text", "text": "gamma"}]})
    assert rules.pick(request) == "ANY"  # only the last message counts


def test_times_limits_uses_and_a_rewrite_starts_over(tmp_path):
    path = tmp_path / "f.json"
    write(path, [{"match": "", "say": "once", "times": 1}])
    rules = ForceRules(path)
    assert rules.pick(make_request()) == "once"
    assert rules.pick(make_request()) is None
    write(path, [{"match": "", "say": "twice", "times": 2}])
    assert [rules.pick(make_request()) for _ in range(3)] == ["twice", "twice", None]


def test_missing_or_broken_file_means_no_forcing(tmp_path):
    assert ForceRules(tmp_path / "none.json").pick(make_request()) is None
    (tmp_path / "bad.json").write_text("{not json")
    assert ForceRules(tmp_path / "bad.json").pick(make_request()) is None


def test_environment_variable_is_read_per_request(tmp_path, monkeypatch):
    path = tmp_path / "env.json"
    write(path, [{"match": "", "say": "from env"}])
    rules = ForceRules()
    monkeypatch.delenv(ENV, raising=False)
    assert rules.pick(make_request()) is None
    monkeypatch.setenv(ENV, str(path))
    assert rules.pick(make_request()) == "from env"


def test_tool_result_text_is_part_of_the_last_message():
    request = make_request(messages=[{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "is_error": False,
         "content": [{"type": "text", "text": "RESULT"}]},
        {"type": "text", "text": "and text"}]}])
    assert last_message_text(request) == "RESULT\nand text"
