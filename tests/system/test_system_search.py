"""Web search through the whole system: front door -> websearch service -> (fake) SearXNG."""

from __future__ import annotations

import json

from claude_cli import run_claude

WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 8}


def test_dedicated_search_call_streams_result_blocks(system, client):
    log = system.home / "logs" / "frontdoor.log"
    start = len(log.read_text().splitlines())
    with client.messages.stream(
            model="claude-sonnet-4-6", max_tokens=1024, tools=[WEB_SEARCH],
            system="You are an assistant for performing a web search tool use",
            messages=[{"role": "user",
                       "content": "Perform a web search for the query: python docs sdk"}]) as stream:
        reply = stream.get_final_message()
    kinds = [b.type for b in reply.content]
    assert kinds == ["server_tool_use", "web_search_tool_result", "text"]
    assert reply.content[0].input == {"query": "python docs sdk"}
    urls = [r.url for r in reply.content[1].content]
    assert urls == ["https://docs.python.org/3/", "https://example.com/a", "http://other.org/b"]
    assert "Alpha snippet" in reply.content[2].text  # snippets reach the model as text
    assert reply.usage.server_tool_use.web_search_requests == 1
    assert system.searxng.queries("python docs sdk")  # it went to the configured SearXNG
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()[start:]]
    assert "frontdoor.web_search" in events
    assert "frontdoor.request" not in events  # answered without a model call


def test_claude_code_websearch_is_served_by_the_bridge(system):
    system.say(("Example A", "Found it: Example A."),
               ("search the web", '<tool_call>{"name": "WebSearch", "arguments": {"query": "anyclaude bridge query"}}</tool_call>'))
    run = run_claude(system, "search the web for the bridge", tools="WebSearch", bare=False)
    assert run.result["is_error"] is False, run.result
    assert [u["name"] for u in run.tool_uses()] == ["WebSearch"]
    assert system.searxng.queries("anyclaude bridge query")
    result_text = str(run.tool_results()[0]["content"])
    assert "https://example.com/a" in result_text
    assert run.result["result"] == "Found it: Example A."


def test_the_model_decides_to_search_and_answers_from_the_results(system, client):
    """A general request with the web_search server tool: the real engine (forced) calls
    it, the front door searches the fake SearXNG, the continuation reads the results."""
    log = system.home / "logs" / "frontdoor.log"
    start = len(log.read_text().splitlines())
    system.say(("Example A", "Found it: Example A."),
               ("what is new", '<tool_call>{"name": "web_search", "arguments": '
                               '{"query": "anyclaude loop query"}}</tool_call>'),
               ("thanks", "You are welcome."))
    question = {"role": "user", "content": "what is new in python?"}
    with client.messages.stream(model="claude-sonnet-4-6", max_tokens=200, tools=[WEB_SEARCH],
                                messages=[question]) as stream:
        reply = stream.get_final_message()
    assert [b.type for b in reply.content] == ["server_tool_use", "web_search_tool_result", "text"]
    use, found, answer = reply.content
    assert use.id.startswith("srvtoolu_") and use.input == {"query": "anyclaude loop query"}
    assert [r.title for r in found.content][:2] == ["Python docs & more", "Example A"]
    assert answer.text == "Found it: Example A."   # forced on the tool result's text
    assert reply.stop_reason == "end_turn"
    assert reply.usage.server_tool_use.web_search_requests == 1
    assert system.searxng.queries("anyclaude loop query")
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()[start:]]
    assert "frontdoor.search_loop.search" in events
    # the client sends the blocks back: they render for the engine and it answers
    history = [question, {"role": "assistant", "content": reply.content},
               {"role": "user", "content": "thanks"}]
    again = client.messages.create(model="claude-sonnet-4-6", max_tokens=200, tools=[WEB_SEARCH],
                                   messages=history)
    assert again.content[0].text == "You are welcome."
    # ... and the prompt the loop's continuation ran is reused: it rendered the same way
    searched = client.messages.count_tokens(
        model="claude-sonnet-4-6", tools=[WEB_SEARCH],
        messages=[question, {"role": "assistant", "content": reply.content[:2]}]).input_tokens
    assert again.usage.cache_read_input_tokens >= searched - 8   # all but the generation prompt
