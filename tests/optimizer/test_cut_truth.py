"""A cut the optimizer makes is reported with the conversation's real size, and the notice
the front door put in the reply is taken out again on the next turn (issue 15, item 5)."""

from __future__ import annotations

from anyclaude import context_notice
from services.optimizer.core import Optimizer

from opt_helpers import Counting, exchange, note, request, settings, text


def long_conversation(turns: int) -> list[dict]:
    messages = [text("user", "Fix the parser.")]
    for i in range(turns):
        messages += exchange(f"t{i}", [6000])
    return messages


def test_a_fit_without_cuts_reports_nothing():
    optimizer = Optimizer(settings(window=16384, max_output=1024), Counting())
    out, _ = optimizer.optimize(request([text("user", "hello")], max_tokens=1024))
    assert context_notice.CUT_KEY not in out


def test_a_cut_reports_the_conversation_the_client_sent():
    count = Counting()
    optimizer = Optimizer(settings(window=16384, max_output=1024), count)
    asked = request(long_conversation(12), max_tokens=1024)
    out, notes = optimizer.optimize(asked)
    cut = out[context_notice.CUT_KEY]
    fitted = count.fn({**out, "messages": out["messages"]})
    client = count.fn({**asked, "system": out["system"]})   # billing line removed, as the model sees it
    assert cut["prompt_tokens"] == fitted <= 16384
    assert cut["client_tokens"] == client > 16384
    assert cut["left_out_tokens"] == client - fitted
    assert cut["window"] == 16384
    assert cut["dropped_messages"] or cut["placeholder_tool_results"] or cut["shortened_tool_results"]
    shown = context_notice.render(cut)
    assert shown.startswith(context_notice.PREFIX) and f"{client:,} tokens" in shown


def test_the_notice_sent_back_is_removed_before_the_model_sees_it():
    cut = {"client_tokens": 20000, "prompt_tokens": 9000, "window": 16384,
           "left_out_tokens": 11000, "dropped_messages": 4}
    reply = {"role": "assistant", "content": [
        {"type": "text", "text": context_notice.render(cut) + "Here is the fix."},
        {"type": "tool_use", "id": "x", "name": "Bash", "input": {"command": "ls"}}]}
    only_notice = {"role": "assistant", "content": [
        {"type": "text", "text": context_notice.render(cut)}]}
    messages = [text("user", "go"), reply, text("user", "[anyclaude: typed by the user]\n\nok"),
                only_notice, text("user", "more")]
    stripped, removed = context_notice.strip(messages)
    assert removed == 2
    assert stripped[1]["content"][0] == {"type": "text", "text": "Here is the fix."}
    assert stripped[1]["content"][1] == reply["content"][1]
    assert stripped[2] == messages[2]                 # a user's text is never touched
    assert stripped[3]["content"] == [{"type": "text", "text": ""}]
    optimizer = Optimizer(settings(window=16384, max_output=1024), Counting())
    out, notes = optimizer.optimize(request(messages, max_tokens=1024))
    assert out["messages"][1]["content"][0]["text"] == "Here is the fix."
    assert note(notes, "remove_cut_notices")["count"] == 2
