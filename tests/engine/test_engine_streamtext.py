"""Incremental decoding, stop-sequence matching and event batching."""

from __future__ import annotations

import pytest

from anyclaude.services.engine.streamtext import (EventBatcher, IncrementalDecoder, StopMatcher,
                                                  merge_events)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from mlx_lm.utils import load_tokenizer
    return load_tokenizer(tiny_model_dir)


def test_incremental_decoding_is_exact_with_multibyte_characters(tokenizer):
    text = " leading space, émoji 🎉🎉 and 漢字 <think>x</think>"
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.add(t) for t in tokenizer.encode(text, add_special_tokens=False)]
    pieces.append(decoder.flush())
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_incomplete_character_is_flushed_at_the_end(tokenizer):
    emoji = tokenizer.encode("🎉", add_special_tokens=False)
    assert len(emoji) > 1
    decoder = IncrementalDecoder(tokenizer)
    assert decoder.add(emoji[0]) == ""
    assert decoder.flush() == "\ufffd"


def feed_all(matcher, chunks):
    return "".join(matcher.feed(c) for c in chunks) + matcher.flush()


def test_stop_matcher_holds_back_only_a_possible_prefix():
    m = StopMatcher(["END"])
    assert m.feed("abcdE") == "abcd"     # only "E" could start "END"
    assert m.feed("x") == "Ex"
    assert m.feed("EN") == ""
    assert m.feed("D tail") == ""
    assert m.matched == "END"
    assert m.feed("more") == "" and m.flush() == ""


def test_stop_matcher_earliest_match_wins_and_no_stops_passes_through():
    m = StopMatcher(["world", "lo w"])
    assert feed_all(m, ["hel", "lo wor", "ld"]) == "hel"
    assert m.matched == "lo w"
    plain = StopMatcher([])
    assert feed_all(plain, ["a", "b"]) == "ab" and plain.matched is None
    unmatched = StopMatcher(["xyz"])
    assert feed_all(unmatched, ["abc", "xy"]) == "abcxy" and unmatched.matched is None


def test_merge_events_joins_runs_of_the_same_kind():
    events = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"},
              {"type": "tool_start", "id": "1", "name": "x"},
              {"type": "tool_args", "json": "{"}, {"type": "tool_args", "json": "}"},
              {"type": "tool_end"}, {"type": "thinking", "text": "t"}]
    assert merge_events(events) == [
        {"type": "text", "text": "ab"}, {"type": "tool_start", "id": "1", "name": "x"},
        {"type": "tool_args", "json": "{}"}, {"type": "tool_end"},
        {"type": "thinking", "text": "t"}]


def test_batcher_sends_the_first_batch_at_once_then_coalesces():
    now = [0.0]
    sent = []
    batcher = EventBatcher(sent.append, interval=0.05, clock=lambda: now[0])
    batcher.add([{"type": "text", "text": "a"}])
    assert sent == [[{"type": "text", "text": "a"}]]
    batcher.add([{"type": "text", "text": "b"}])
    batcher.add([{"type": "text", "text": "c"}])
    assert len(sent) == 1
    now[0] = 0.06
    batcher.add([{"type": "text", "text": "d"}])
    assert sent[-1] == [{"type": "text", "text": "bcd"}]
    batcher.add([{"type": "text", "text": "e"}])
    batcher.flush()
    assert sent[-1] == [{"type": "text", "text": "e"}]
    batcher.add([])
    batcher.flush()
    assert len(sent) == 3
