"""The internal request -> chat.completions body."""

from __future__ import annotations

import json

import pytest

from anyclaude.errors import InvalidRequest, UnsupportedContent
from anyclaude.messages import Results
from anyclaude.services.engine.backends.openai_translate import chat_body, chat_messages
from anyclaude.websearch_text import result_text
from anyclaude.prompt.template import to_chat_messages
from anyclaude.services.frontdoor import websearch as ws

from .conftest import BASH, make_request

RESULTS = Results(results=[
    {"url": "https://example.com/a", "title": "Example A", "snippet": "Alpha snippet",
     "page_age": "May 1, 2024"},
    {"url": "https://other.org/b", "title": "Other B", "snippet": "Beta snippet", "page_age": None}])


def body(request, **kw):
    return chat_body(request, model_name="m", max_tokens=kw.pop("max_tokens", 100), **kw)


def test_basic_fields_and_streaming_usage():
    out = body(make_request("hi", temperature=0.2, top_p=0.9, top_k=40, stop_sequences=["a", "b"]))
    assert out["model"] == "m" and out["stream"] is True
    assert out["stream_options"] == {"include_usage": True}
    assert out["max_tokens"] == 100 and "max_completion_tokens" not in out
    assert out["temperature"] == 0.2 and out["top_p"] == 0.9
    assert "top_k" not in out and "chat_template_kwargs" not in out   # not OpenAI fields
    assert out["stop"] == ["a", "b"]
    assert out["messages"] == [{"role": "system", "content": "You are terse."},
                               {"role": "user", "content": "hi"}]


def test_extra_params_and_max_completion_tokens():
    out = body(make_request(top_k=40, thinking=True), extra_params=True,
               max_tokens_field="max_completion_tokens")
    assert out["top_k"] == 40 and out["chat_template_kwargs"] == {"enable_thinking": True}
    assert out["max_completion_tokens"] == 100 and "max_tokens" not in out


def test_at_most_four_stop_sequences_go_to_the_server():
    out = body(make_request(stop_sequences=["1", "2", "3", "4", "5"]))
    assert out["stop"] == ["1", "2", "3", "4"]


@pytest.mark.parametrize("choice, expected", [
    ({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none"),
    ({"type": "tool", "name": "Bash"}, {"type": "function", "function": {"name": "Bash"}}),
])
def test_tools_and_tool_choice(choice, expected):
    out = body(make_request(tools=[BASH], tool_choice=choice))
    assert out["tools"] == [{"type": "function", "function": {
        "name": "Bash", "description": "Run a shell command.", "parameters": BASH["input_schema"]}}]
    assert out["tool_choice"] == expected
    assert "parallel_tool_calls" not in out


def test_disable_parallel_tool_use():
    out = body(make_request(tools=[BASH], tool_choice={"type": "auto", "disable_parallel_tool_use": True}))
    assert out["parallel_tool_calls"] is False


def test_tool_history_becomes_tool_calls_and_tool_messages():
    request = make_request(messages=[
        {"role": "user", "content": [{"type": "text", "text": "list"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm"},
            {"type": "text", "text": "Looking."},
            {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}},
            {"type": "tool_use", "id": "toolu_2", "name": "Bash", "input": {"command": "pwd"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1",
             "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": [], "is_error": True},
            {"type": "text", "text": "thanks"}]},
    ])
    messages = chat_messages(request)
    assert messages[2] == {"role": "assistant", "content": "Looking.", "tool_calls": [
        {"id": "toolu_1", "type": "function", "function": {"name": "Bash", "arguments": '{"command": "ls"}'}},
        {"id": "toolu_2", "type": "function", "function": {"name": "Bash", "arguments": '{"command": "pwd"}'}}]}
    assert json.loads(messages[2]["tool_calls"][0]["function"]["arguments"]) == {"command": "ls"}
    assert messages[3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "a\nb"}
    assert messages[4] == {"role": "tool", "tool_call_id": "toolu_2", "content": "Error"}
    assert messages[5] == {"role": "user", "content": "thanks"}


def test_a_tool_call_only_turn_has_null_content():
    request = make_request(messages=[
        {"role": "user", "content": [{"type": "text", "text": "go"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Bash", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": []}]}])
    messages = chat_messages(request)
    assert messages[2]["content"] is None
    assert messages[3] == {"role": "tool", "tool_call_id": "t", "content": ""}
    assert len(messages) == 4   # no empty user turn after the tool message


def test_images_become_data_urls_also_from_tool_results():
    image = {"type": "image", "media_type": "image/png", "data": "iVBOR"}
    request = make_request(messages=[
        {"role": "user", "content": [{"type": "text", "text": "see"}, image,
                                     {"type": "image", "url": "https://x/y.png"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Shot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                      "content": [{"type": "text", "text": "shot:"}, image]}]}])
    messages = chat_messages(request)
    assert messages[1]["content"] == [
        {"type": "text", "text": "see"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]
    assert messages[3] == {"role": "tool", "tool_call_id": "t", "content": "shot:"}
    assert messages[4]["role"] == "user"
    assert {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}} in messages[4]["content"]


def test_documents_and_file_ids():
    text_doc = {"type": "document", "media_type": "text/plain", "data": "the text"}
    pdf = {"type": "document", "media_type": "application/pdf", "data": "JVBER", "title": "a.pdf"}
    messages = chat_messages(make_request(messages=[{"role": "user", "content": [text_doc, pdf]}]))
    assert messages[1]["content"][0] == {"type": "text", "text": "the text"}
    assert messages[1]["content"][1] == {"type": "file", "file": {
        "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBER"}}
    with pytest.raises(UnsupportedContent, match="file_id"):
        chat_messages(make_request(messages=[{"role": "user", "content": [
            {"type": "image", "file_id": "file_1"}]}]))


def test_system_turns_stay_unless_strict():
    request = make_request(messages=[
        {"role": "user", "content": [{"type": "text", "text": "a"}]},
        {"role": "system", "content": [{"type": "text", "text": "note"}]},
        {"role": "user", "content": [{"type": "text", "text": "b"}]}])
    assert [m["role"] for m in chat_messages(request)] == ["system", "user", "system", "user"]
    strict = chat_messages(request, strict_roles=True)
    assert strict == [{"role": "system", "content": "You are terse."},
                      {"role": "user", "content": "a\n\nnote\n\nb"}]


def searched(query, results):
    """The server_tool_use and web_search_tool_result blocks the front door's search made."""
    tool = ws.WebSearchTool(type="web_search_20250305")
    return ws.run_search(query, tool, lambda q, allowed, blocked: results).blocks[:2]


def test_web_searches_sent_back_become_a_tool_call_and_its_result_as_the_template_sees_them():
    use, result = searched("python docs", RESULTS)
    failed = searched("two", Results(error_code="unavailable"))
    request = make_request(messages=[
        {"role": "user", "content": [{"type": "text", "text": "search"}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me search."}, use, result, *failed,
            {"type": "text", "text": "found"}]}])
    messages = chat_messages(request)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant",
                                             "tool", "assistant"]
    assert messages[2] == {"role": "assistant", "content": "Let me search.", "tool_calls": [
        {"id": use["id"], "type": "function",
         "function": {"name": "web_search", "arguments": '{"query": "python docs"}'}}]}
    assert messages[3] == {"role": "tool", "tool_call_id": use["id"],
                           "content": ws.results_as_tool_text(RESULTS, "python docs")}
    assert "Alpha snippet" in messages[3]["content"]     # decoded from encrypted_content
    assert messages[4]["content"] is None and messages[4]["tool_calls"][0]["id"] == failed[0]["id"]
    assert messages[5]["content"] == "Web search error: unavailable"
    assert messages[6] == {"role": "assistant", "content": "found"}
    # the MLX chat template reads the same conversation
    assert [shape(m) for m in messages] == [shape(m) for m in to_chat_messages(request)]


def shape(message):
    """What must match across backends: roles, texts, calls with their arguments as dicts."""
    calls = [(c["id"], c["function"]["name"], c["function"]["arguments"])
             for c in message.get("tool_calls") or ()]
    calls = [(i, name, json.loads(args) if isinstance(args, str) else args) for i, name, args in calls]
    return message["role"], message.get("tool_call_id"), message["content"] or "", calls


def test_misplaced_web_search_blocks():
    use, result = searched("python docs", RESULTS)
    with pytest.raises(InvalidRequest, match=r"messages\[0\].content\[0\]: server_tool_use blocks "
                                             "belong in assistant messages"):
        chat_messages(make_request(messages=[{"role": "user", "content": [use]}]))
    messages = chat_messages(make_request(messages=[{"role": "user", "content": [
        result, {"type": "text", "text": "see above"}]}]))
    assert messages[1]["content"] == result_text(result) + "\n\nsee above"
