"""EngineCore end to end on the real tiny model (no mocks of mlx)."""

from __future__ import annotations

import json

from engine_helpers import (BASH_TOOL, CONTEXT_WINDOW, MAX_OUTPUT, events_of, make_request, run,
                            text_of)

from anyclaude.messages import Delta, Done, Error, Progress


def final(messages):
    last = messages[-1]
    assert isinstance(last, (Done, Error))
    assert sum(isinstance(m, (Done, Error)) for m in messages) == 1
    return last


def test_streams_plain_text_deterministically_with_greedy_sampling(core):
    request = make_request("tell me a story", max_tokens=8)
    first = run(core, request)
    again = run(core, request)
    assert isinstance(final(first), Done)
    text = text_of(first)
    assert text and text == text_of(again)
    # what was streamed is exactly the decoded output tokens
    generated = [t for t in core.fed[core.count(request):] if t not in core.eos_ids]
    assert len(generated) == final(first).usage["output_tokens"]
    assert text == core.tokenizer.decode(generated)


def test_forced_text_comes_out_exactly(core, force):
    say = " Hello,  world! Ünïcödé 🎉 tabs\tand\nnewlines  "
    force(say)
    messages = run(core, make_request(max_tokens=MAX_OUTPUT))
    done = final(messages)
    assert text_of(messages) == say
    assert done.stop_reason == "end_turn"
    assert done.usage["output_tokens"] == len(core.tokenizer.encode(say, add_special_tokens=False))


def test_forcing_also_works_with_sampling(core, force):
    force("sampled but forced")
    messages = run(core, make_request(temperature=1.0, top_p=0.9, top_k=5))
    assert text_of(messages) == "sampled but forced"


def test_force_rule_matches_the_last_message_and_counts_uses(core, force):
    force(rules=[{"match": "weather", "say": "sunny", "times": 1},
                 {"match": "", "say": "fallback"}])
    assert text_of(run(core, make_request("what is the weather"))) == "sunny"
    assert text_of(run(core, make_request("what is the weather"))) == "fallback"
    assert text_of(run(core, make_request("anything"))) == "fallback"


def test_deltas_are_coalesced_not_one_frame_per_token(core, force):
    say = "one two three four five six seven eight nine ten " * 2
    force(say)
    messages = run(core, make_request(max_tokens=MAX_OUTPUT))
    deltas = [m for m in messages if isinstance(m, Delta)]
    for delta in deltas:  # consecutive text events are merged within a frame
        kinds = [e["type"] for e in delta.events]
        assert all(a != b for a, b in zip(kinds, kinds[1:]))
    assert text_of(messages) == say


def test_forced_tool_call_becomes_tool_events_and_stop_reason_tool_use(core, force):
    call = '<tool_call>\n{"name": "Bash", "arguments": {"command": "ls -la"}}\n</tool_call>'
    force(call)
    messages = run(core, make_request("list files", tools=[BASH_TOOL], max_tokens=MAX_OUTPUT))
    done = final(messages)
    events = events_of(messages)
    kinds = [e["type"] for e in events]
    assert "tool_start" in kinds and kinds[-1] == "tool_end"
    start = events[kinds.index("tool_start")]
    assert start["name"] == "Bash" and start["id"]
    args = "".join(e["json"] for e in events if e["type"] == "tool_args")
    assert json.loads(args) == {"command": "ls -la"}
    assert "<tool_call>" not in text_of(messages)
    assert done.stop_reason == "tool_use"


def test_forced_thinking_splits_into_thinking_and_text(core, force):
    force("<think>\nLet me ponder.\n</think>\n\nThe answer is 4.")
    messages = run(core, make_request("2+2?", thinking=True, max_tokens=MAX_OUTPUT))
    assert "Let me ponder." in text_of(messages, "thinking")
    assert text_of(messages).strip() == "The answer is 4."
    assert "<think>" not in text_of(messages)
    assert final(messages).stop_reason == "end_turn"


def test_thinking_is_dropped_when_the_request_did_not_ask_for_it(core, force):
    force("<think>\nsecret musings\n</think>\n\nvisible answer")
    messages = run(core, make_request("2+2?", thinking=False, max_tokens=MAX_OUTPUT))
    assert text_of(messages, "thinking") == ""
    assert "secret musings" not in text_of(messages)
    assert text_of(messages).strip() == "visible answer"


def test_stop_sequence_ends_generation_and_is_reported(core, force):
    force("alpha beta STOP gamma delta")
    messages = run(core, make_request(stop_sequences=["STOP"], max_tokens=MAX_OUTPUT))
    done = final(messages)
    assert text_of(messages) == "alpha beta "
    assert (done.stop_reason, done.stop_sequence) == ("stop_sequence", "STOP")


def test_stop_sequence_split_across_tokens(core, force):
    say = "the quick brown fox jumps over the lazy dog"
    stop = "n fox ju"
    pieces = [core.tokenizer.decode([t]) for t in core.tokenizer.encode(say, add_special_tokens=False)]
    assert not any(stop in p for p in pieces)  # it really spans several tokens
    force(say)
    messages = run(core, make_request(stop_sequences=["zzz", stop], max_tokens=MAX_OUTPUT))
    done = final(messages)
    assert text_of(messages) == say[:say.index(stop)]
    assert (done.stop_reason, done.stop_sequence) == ("stop_sequence", stop)


def test_stop_sequence_never_matched_lets_all_text_through(core, force):
    force("no match here at all")
    messages = run(core, make_request(stop_sequences=["here at all!"], max_tokens=MAX_OUTPUT))
    assert text_of(messages) == "no match here at all"
    assert final(messages).stop_reason == "end_turn"
    assert final(messages).stop_sequence is None


def test_max_tokens_stops_with_exactly_that_many_tokens(core, force):
    say = "a long forced answer that goes on and on for many more tokens than allowed"
    force(say)
    messages = run(core, make_request(max_tokens=5))
    done = final(messages)
    assert done.stop_reason == "max_tokens"
    assert done.usage["output_tokens"] == 5
    ids = core.tokenizer.encode(say, add_special_tokens=False)
    assert text_of(messages) == core.tokenizer.decode(ids[:5])


def test_max_tokens_is_clamped_to_the_model_limit(core, force):
    force("word " * 200)
    done = final(run(core, make_request(max_tokens=100_000)))
    assert done.stop_reason == "max_tokens"
    assert done.usage["output_tokens"] == MAX_OUTPUT


def test_cancel_mid_generation_stops_within_a_token(core, force):
    force("word " * 60)
    messages = []

    def emit(msg):
        messages.append(msg)

    def cancelled():
        return any(isinstance(m, Delta) for m in messages)

    core.generate(make_request(max_tokens=MAX_OUTPUT), emit, cancelled)
    err = final(messages)
    assert isinstance(err, Error)
    assert (err.type, err.message, err.retryable) == ("cancelled", "request cancelled", False)
    prompt_len = core.count(make_request(max_tokens=MAX_OUTPUT))
    assert len(core.fed) - prompt_len <= 2


def test_cancel_during_prefill_sends_no_text(core):
    messages = run(core, make_request("x " * 300), cancelled=lambda: True)
    assert not any(isinstance(m, Delta) for m in messages)
    assert isinstance(final(messages), Error) and final(messages).type == "cancelled"


def test_progress_is_reported_during_a_long_prefill(core, force):
    force("ok")
    request = make_request("lorem ipsum dolor sit amet " * 60)
    n = core.count(request)
    assert n > 4 * 64
    messages = run(core, request)
    progress = [m for m in messages if isinstance(m, Progress)]
    assert len(progress) >= 4
    assert all(p.total == n for p in progress)
    assert [p.processed for p in progress] == sorted(p.processed for p in progress)
    assert progress[-1].processed == n
    first_delta = next(i for i, m in enumerate(messages) if isinstance(m, Delta))
    assert sum(isinstance(m, Progress) for m in messages[:first_delta]) >= 3


def test_count_equals_usage_and_the_tokens_fed_to_the_model(core, force):
    force("counted")
    request = make_request("count me", system=["You are terse."], tools=[BASH_TOOL])
    n = core.count(request)
    done = final(run(core, request))
    assert done.usage["input_tokens"] == n
    assert done.usage["cache_read_input_tokens"] == 0
    assert done.usage["cache_creation_input_tokens"] == 0
    assert core.fed[:n] == core.renderer.render(request)
    # the cache holds prompt + generated tokens (EOS included) - nothing more, nothing less
    assert core.cache_offset == len(core.fed) == n + done.usage["output_tokens"] + 1


def test_prompt_too_long_gives_the_exact_message(core):
    request = make_request("many words " * 2000)
    n = core.count(request)
    assert n > CONTEXT_WINDOW
    err = final(run(core, request))
    assert isinstance(err, Error)
    assert err.type == "prompt_too_long"
    assert err.message == f"prompt is too long: {n} tokens > {CONTEXT_WINDOW - 1} maximum"


def test_image_input_is_unsupported_content(core):
    request = make_request()
    request["messages"][0]["content"].append(
        {"type": "image", "media_type": "image/png", "data": "iVBORw0KGgo="})
    err = final(run(core, request))
    assert isinstance(err, Error) and err.type == "unsupported_content"
    assert "image" in err.message


def test_assistant_prefill_is_continued(core, force):
    force(" and the rest")
    request = make_request()
    request["messages"].append({"role": "assistant", "content": [{"type": "text", "text": "The start"}]})
    rendered = core.renderer.render_prompt(request)
    assert rendered.text.endswith("The start")
    messages = run(core, request)
    assert text_of(messages) == " and the rest"


def test_prefill_that_opens_thinking_continues_as_thinking(core, force):
    force(" more thoughts</think>\n\nthe answer")
    request = make_request("q", thinking=True)
    request["messages"].append({"role": "assistant",
                                "content": [{"type": "text", "text": "<think>\nI think"}]})
    assert core.renderer.render_prompt(request).starts_in_thinking
    messages = run(core, request)
    assert text_of(messages, "thinking").strip() == "more thoughts"
    assert text_of(messages).strip() == "the answer"


def test_unknown_tool_parser_setting_is_a_config_error(tiny_model_dir):
    import pytest

    from anyclaude.errors import ConfigError
    from anyclaude.services.engine.mlx.generation import EngineCore

    with pytest.raises(ConfigError, match="tool_parser"):
        EngineCore(str(tiny_model_dir), model_id="t", context_window=512, max_output_tokens=16,
                   tool_parser="klingon")
