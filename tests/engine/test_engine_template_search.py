"""The front door's web-search blocks, sent back by a client, through the tiny model's template."""

from __future__ import annotations

import pytest
from engine_helpers import BASH_TOOL, make_request

from anyclaude.errors import InvalidRequest
from anyclaude.messages import Results
from anyclaude.websearch_text import result_text
from anyclaude.prompt.template import ChatRenderer, to_chat_messages
from anyclaude.services.frontdoor import search_loop
from anyclaude.services.frontdoor import websearch as ws

RESULTS = Results(results=[
    {"url": "https://example.com/a", "title": "Example A", "snippet": "Alpha snippet",
     "page_age": "May 1, 2024"},
    {"url": "https://other.org/b", "title": "Other B", "snippet": "Beta snippet",
     "page_age": None}])
TOOL = ws.WebSearchTool(type="web_search_20250305")


@pytest.fixture(scope="module")
def renderer(tiny_model_dir):
    from mlx_lm.utils import load_tokenizer
    return ChatRenderer(load_tokenizer(tiny_model_dir), model_id="tiny")


def searched(query="python docs", results=RESULTS):
    return ws.run_search(query, TOOL, lambda q, allowed, blocked: results)


def user(text):
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def base():
    return make_request(system=["You are helpful."],
                        tools=[BASH_TOOL, search_loop.offered_tool("web_search")],
                        messages=[user("what is new in python?")])


def test_blocks_sent_back_render_as_a_tool_call_and_its_result(renderer):
    reply = searched()
    use, result = reply.blocks[:2]
    request = {**base(), "messages": [
        user("what is new in python?"),
        {"role": "assistant", "content": [{"type": "text", "text": "Let me search."}, use, result,
                                          {"type": "text", "text": "Found: Example A."}]},
        user("thanks")]}
    chat = to_chat_messages(request)
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert chat[2]["content"] == "Let me search."
    assert chat[2]["tool_calls"] == [{"id": use["id"], "type": "function", "function": {
        "name": "web_search", "arguments": {"query": "python docs"}}}]
    assert chat[3]["tool_call_id"] == use["id"]
    assert chat[3]["content"] == ws.results_as_tool_text(RESULTS, "python docs")
    assert chat[4]["content"] == "Found: Example A."
    text = renderer.render_prompt(request).text
    assert "Alpha snippet" in text and "https://other.org/b" in text   # decoded snippets
    assert '"query": "python docs"' in text and "Found: Example A." in text


def test_the_next_turn_starts_with_the_prompt_the_search_loop_sent(renderer):
    """The loop's continuation and the client's blocks on the next turn render alike, so
    the engine's cached prompt is a prefix of the next one."""
    reply = searched()
    use, result = reply.blocks[:2]
    turn = [{"type": "text", "text": "Let me search."},
            {"type": "tool_use", "id": use["id"], "name": "web_search", "input": use["input"]}]
    tool_result = {"type": "tool_result", "tool_use_id": use["id"], "is_error": False,
                   "content": [{"type": "text", "text": result_text(result, "python docs")}]}
    sent = renderer.render_prompt(search_loop.continuation(base(), turn, [tool_result], 50)).text
    later = renderer.render_prompt({**base(), "messages": [
        user("what is new in python?"),
        {"role": "assistant", "content": [turn[0], use, result,
                                          {"type": "text", "text": "Found it."}]},
        user("thanks")]}).text
    cut = sent.rindex("<|im_start|>assistant")   # the generation prompt differs, by design
    assert later.startswith(sent[:cut]) and "<tool_response>" in sent[:cut]


def test_searches_one_after_another_split_the_assistant_turn():
    first, second = searched("one"), searched("two", Results(error_code="unavailable"))
    chat = to_chat_messages({**base(), "messages": [
        user("q"), {"role": "assistant", "content": [*first.blocks[:2], *second.blocks[:2],
                                                     {"type": "text", "text": "done"}]}]})
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "tool", "assistant",
                                         "tool", "assistant"]
    assert chat[2]["content"] == "" and len(chat[2]["tool_calls"]) == 1
    assert chat[4]["tool_calls"][0]["function"]["arguments"] == {"query": "two"}
    assert chat[5]["content"] == "Web search error: unavailable"
    assert chat[6] == {"role": "assistant", "content": "done"}


def test_a_search_that_ends_the_turn_makes_the_model_continue(renderer):
    """An assistant turn ending in a result (stop_reason pause_turn, or max_tokens) is sent
    back as is: the prompt ends with a tool result and a fresh generation prompt."""
    reply = searched()
    rendered = renderer.render_prompt({**base(), "messages": [
        user("q"), {"role": "assistant", "content": reply.blocks[:2]}]})
    assert rendered.prefill == ""
    assert rendered.text.rstrip().endswith("</think>")   # the generation prompt


def test_foreign_and_error_results_are_readable():
    foreign = {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_x", "content": [
        {"type": "web_search_result", "url": "https://a.example", "title": "From the real API",
         "encrypted_content": "EqgfCioIARgBIiQ3YTAw", "page_age": None}]}
    text = result_text(foreign, "q")
    assert "From the real API" in text and "https://a.example" in text
    error = {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_x",
             "content": {"type": "web_search_tool_result_error", "error_code": "max_uses_exceeded"}}
    assert result_text(error) == "Web search error: max_uses_exceeded"
    assert result_text({"type": "web_search_tool_result", "content": []}, "q") == \
        'No web results found for "q".'


def test_misplaced_search_blocks():
    reply = searched()
    with pytest.raises(InvalidRequest, match="server_tool_use blocks belong in assistant"):
        to_chat_messages({**base(), "messages": [{"role": "user", "content": [reply.blocks[0]]}]})
    chat = to_chat_messages({**base(), "messages": [
        {"role": "user", "content": [reply.blocks[1], {"type": "text", "text": "see above"}]}]})
    assert "Alpha snippet" in chat[1]["content"] and chat[1]["content"].endswith("see above")
