"""The model decides to search: the web_search server tool in a general request.

The real API runs server tools itself, between samplings of the model. We do the same at
the front door, around the engine calls of one client message:

1. ``offer``: a request whose tools include a ``web_search_*`` server tool gets an ordinary
   tool of the same name (input ``{"query": string}``) appended to its custom tools, before
   the optimizer sees it, so the search tool is counted and rendered like any other tool
   (count_tokens does the same). A client tool with that name wins and nothing is offered;
   parse.py already refuses two tools with one name, as the API does.
2. ``SearchLoop.stream`` replaces ``engines.stream`` for that call (relay.Call.engine_stream)
   and yields the same frames. The model's calls of the search tool never reach the client
   as tool_use: from the first such call on, the rest of that engine call is held back;
   after its Done each search runs (websearch.run_search, so an empty query, query_too_long
   and max_uses are answered without SearXNG) and the client gets a ``server_tool_use`` and
   a ``web_search_tool_result`` block (neutral event ``{type: "block"}``), then the held
   events in their order.
3. The engine is called again with the request it ran plus the assistant turn (text,
   thinking, a tool_use per search, ids ``srvtoolu_…``) and a user turn of tool results
   whose text is ``search_blocks.result_text`` of the result block - titles, URLs, dates,
   snippets, or "Web search error: <code>". The continuation is the original request with
   messages appended (nothing else changes but max_tokens), so the engine's prefix cache
   hits; and a later turn that sends the blocks back renders to the same prompt
   (template.py). Its frames continue the same client message: block indexes go on, one
   message_start, one message_delta.
4. Each continuation goes through the optimizer like the first request (``optimizer``,
   the front door's ``optimize(request) -> request``). It is given the request the optimizer
   got the first time (``asked``) with the turn and results appended - never the request it
   returned, whose plan is already applied - so the session plan applies the same way and,
   when nothing needs cutting, the continuation is byte for byte the request the engine ran
   plus the appended messages (the prefix cache hits). When the search results do not fit,
   the optimizer shortens the new tool result or cuts, as for any request. A result's text
   is capped at ``search_blocks.MAX_RESULT_CHARS`` in any case. If the optimizer moves the
   continuation to another model (a long_context route) it runs there.

Rules:
- It goes on while the model searches and calls no client tool. A client tool call in the
  same engine call ends the message with stop_reason tool_use (its searches still run);
  otherwise the last engine call's stop_reason stands.
- max_uses counts every search call of the message; later calls are answered
  ``max_uses_exceeded`` (the tool stays offered, so the prompt prefix does not change) and
  the model goes on. After MAX_ROUNDS continuations the message ends with ``pause_turn``.
- max_tokens bounds the whole message: a continuation may generate what is left; with
  nothing left the message ends with ``max_tokens`` after the search blocks.
- usage: each of input_tokens, cache_creation_input_tokens, cache_read_input_tokens and
  output_tokens is the sum over the engine calls (each call reads its whole prompt, as the
  API reports every sampling of a server-tool loop), so the input fields exceed
  count_tokens of the request once the model searched.
  ``server_tool_use.web_search_requests`` counts the searches SearXNG answered.
- When a continuation cannot run - the optimizer says even the fitted prompt is too long,
  or it fails, or the engine answers prompt_too_long - the message does not break: the
  search blocks already sent stay, a short text block says why the model could not read
  the results, and the message ends with ``end_turn``. Not ``max_tokens`` (no output limit
  was reached), not ``pause_turn`` (a client that resends would run into the same wall) and
  not ``model_context_window_exceeded`` (older clients do not know it): the turn is over,
  and the client's next request is fitted like any other.
  On the first engine call prompt_too_long stays an HTTP 400, before the response starts.
- A failing search (SearXNG down, not configured) is an error object in the result block;
  the model continues. A client that leaves stops the loop; the open engine call is
  cancelled as usual when the relay closes this generator.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import structlog

from anyclaude import context_notice, errors, messages
from anyclaude.websearch_text import result_text

from . import websearch

log = structlog.get_logger()

MAX_ROUNDS = 10
DESCRIPTION = ("Search the web. Returns the top results for the query: titles, URLs, "
               "publication dates and text snippets. Use it for current events and facts "
               "you are not sure about; cite the URLs you use.")
USAGE_KEYS = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
              "cache_read_input_tokens")
TOO_LONG = ("[anyclaude: the web search results did not fit in the model's context window "
            "({why}), so this answer ends here. Ask for a narrower search or start a new "
            "conversation.]")
FAILED = "[anyclaude: the model could not go on after the web search ({why}).]"


def offered_tool(name: str) -> dict:
    return {"name": name, "description": DESCRIPTION,
            "input_schema": {"type": "object",
                             "properties": {"query": {"type": "string",
                                                      "description": "The search query"}},
                             "required": ["query"]}}


def offer(request: dict) -> tuple[dict, websearch.WebSearchTool | None]:
    """The request with the web_search server tool offered to the model, and the tool;
    the request unchanged and None when there is none (or a client tool has its name)."""
    tool = websearch.find_tool(request.get("server_tools"))
    if tool is None:
        return request, None
    tools = list(request.get("tools") or [])
    if any(t.get("name") == tool.name for t in tools):
        log.info("frontdoor.search_loop.name_taken", tool=tool.name)
        return request, None
    return {**request, "tools": [*tools, offered_tool(tool.name)]}, tool


def engine_stream(engines, tool: websearch.WebSearchTool | None, request: dict,
                  search: Callable[[], websearch.SearchFn], *, request_id: str,
                  optimizer=None, asked: dict | None = None):
    """The stream function for relay.Call.engine_stream, or None when there is no search
    tool (or the optimizer removed it from the request it returned). ``asked`` is the
    request the optimizer was given (``request`` is what it returned)."""
    if tool is None:
        return None
    if not any(t.get("name") == tool.name for t in request.get("tools") or []):
        log.info("frontdoor.search_loop.not_offered", request_id=request_id, tool=tool.name)
        return None
    return SearchLoop(engines, tool, search, optimizer=optimizer, asked=asked).stream


class SearchLoop:
    def __init__(self, engines, tool: websearch.WebSearchTool,
                 search: Callable[[], websearch.SearchFn], *, optimizer=None,
                 asked: dict | None = None):
        self.engines, self.tool = engines, tool
        self.search_factory = search   # called in the thread that runs the loop
        self.optimizer, self.asked = optimizer, asked

    def stream(self, model_id: str, request: dict, *, request_id: str,
               client_gone: Callable[[], bool]) -> Iterator[messages.Message]:
        search = None
        uses = answered = 0
        usage = dict.fromkeys(USAGE_KEYS, 0)
        budget = int(request["max_tokens"])
        asked = request if self.optimizer is None or self.asked is None else self.asked
        for round_no in range(MAX_ROUNDS + 1):
            rid = request_id if round_no == 0 else f"{request_id}-s{round_no}"
            turn = _Turn(self.tool.name)
            try:
                done = yield from self._round(model_id, request, rid, client_gone, turn)
            except errors.InvalidRequest as exc:   # the engine's own count said no
                if round_no == 0 or exc.type != "prompt_too_long":
                    raise                           # the first call's is an HTTP 400
                yield self._ending(TOO_LONG, exc, request_id, round_no)
                stop, sequence = "end_turn", None
                break
            for key in USAGE_KEYS:
                usage[key] += int((done.usage or {}).get(key) or 0)
            stop, sequence = done.stop_reason, done.stop_sequence
            results = []
            for item in turn.held:
                if not isinstance(item, _Search):
                    yield messages.Delta(item)
                    continue
                if client_gone():
                    raise errors.Cancelled("the client went away")
                search = search or self.search_factory()
                reply = websearch.run_search(item.query, self.tool, search, uses_so_far=uses,
                                             tool_use_id=item.id)
                uses += 1
                answered += reply.web_search_requests
                log.info("frontdoor.search_loop.search", request_id=request_id,
                         round=round_no, query_chars=len(reply.query),
                         results=len(reply.results.results), error=reply.error_code)
                use = {**reply.blocks[0], "name": self.tool.name}
                result = reply.blocks[1]
                yield messages.Delta([{"type": "block", "block": use},
                                      {"type": "block", "block": result}])
                results.append({"type": "tool_result", "tool_use_id": item.id,
                                "content": [{"type": "text",
                                             "text": result_text(result, reply.query)}],
                                "is_error": False})
            if not results or turn.custom_calls or stop not in ("tool_use", "end_turn"):
                break
            left = budget - usage["output_tokens"]
            if left <= 0:
                stop, sequence = "max_tokens", None
                break
            if round_no == MAX_ROUNDS:
                stop, sequence = "pause_turn", None
                break
            if client_gone():
                raise errors.Cancelled("the client went away")
            asked = continuation(asked, turn.content, results, left)
            request, ending = self._fit(asked, request_id, round_no + 1)
            if request is None:
                yield ending
                stop, sequence = "end_turn", None
                break
            if request["model"] != model_id:
                log.info("frontdoor.search_loop.rerouted", request_id=request_id,
                         round=round_no + 1, model=request["model"])
                model_id = request["model"]
        log.info("frontdoor.search_loop.done", request_id=request_id, rounds=round_no + 1,
                 searches=uses, answered=answered, stop_reason=stop)
        yield messages.Done(stop, sequence, {
            **usage, "server_tool_use": {"web_search_requests": answered,
                                         "web_fetch_requests": 0}})

    def _fit(self, asked: dict, request_id: str, round_no: int):
        """(the continuation to run, None), or (None, the Delta that ends the message)."""
        if self.optimizer is None:
            return asked, None
        try:
            request = self.optimizer.optimize(asked)
        except errors.AnyclaudeError as exc:
            text = TOO_LONG if exc.type == "prompt_too_long" else FAILED
            return None, self._ending(text, exc, request_id, round_no)
        except Exception as exc:   # the optimizer's fault, not the client's: end cleanly
            log.exception("frontdoor.search_loop.optimizer_crashed", request_id=request_id)
            return None, self._ending(FAILED, exc, request_id, round_no)
        # the message's first call already told the client about a cut (cut_notice.py)
        request.pop(context_notice.CUT_KEY, None)
        return request, None

    @staticmethod
    def _ending(template: str, exc: Exception, request_id: str, round_no: int):
        why = getattr(exc, "message", None) or f"{exc.__class__.__name__}: {exc}"
        log.info("frontdoor.search_loop.cannot_continue", request_id=request_id,
                 round=round_no, error=why)
        return messages.Delta([{"type": "text", "text": template.format(why=why)}])

    def _round(self, model_id, request, request_id, client_gone, turn):
        """One engine call: its frames, minus what ``turn`` holds back; returns its Done."""
        frames = self.engines.stream(model_id, request, request_id=request_id,
                                     client_gone=client_gone)
        try:
            for frame in frames:
                if isinstance(frame, messages.Done):
                    return frame
                if isinstance(frame, messages.Delta):
                    events = turn.feed(frame.events)
                    if events:
                        yield messages.Delta(events)
                else:
                    yield frame
        finally:
            frames.close()   # in this thread: an unfinished engine call gets Cancel
        raise errors.EngineFailed(f"engine-{model_id} ended the stream without Done")


def continuation(request: dict, content: list, results: list, max_tokens: int) -> dict:
    """The request it ran, with the assistant turn and its search results appended."""
    history = list(request["messages"])
    if history and history[-1]["role"] == "assistant":   # a prefill: the turn continues it
        content = _joined(history.pop()["content"], content)
    return {**request, "max_tokens": max_tokens,
            "messages": [*history, {"role": "assistant", "content": content},
                         {"role": "user", "content": results}]}


def _joined(before: list, after: list) -> list:
    if before and after and before[-1].get("type") == after[0].get("type") == "text":
        return [*before[:-1], {"type": "text", "text": before[-1]["text"] + after[0]["text"]},
                *after[1:]]
    return [*before, *after]


class _Search:
    def __init__(self, query: str):
        self.id = websearch.new_tool_use_id()
        self.query = query


class _Turn:
    """One engine call's output, split into what the client sees at once, what waits for
    the searches (``held``: event lists and _Search, in order), and the assistant content
    for the continuation."""

    def __init__(self, name: str):
        self.name = name
        self.content: list[dict] = []
        self.held: list = []
        self.custom_calls = 0
        self._args: list[str] | None = None   # the search call being read

    def feed(self, events: list) -> list:
        now = []
        for ev in events:
            kind = ev.get("type") if isinstance(ev, dict) else None
            if self._args is not None:
                if kind == "tool_args":
                    self._args.append(ev.get("json") or "")
                elif kind == "tool_end":
                    self._end_search()
                continue
            if kind == "tool_start" and ev.get("name") == self.name:
                self._args = []
                continue
            if kind == "tool_start":
                self.custom_calls += 1
            self._record(ev)
            if not self.held:
                now.append(ev)
            elif isinstance(self.held[-1], list):
                self.held[-1].append(ev)
            else:
                self.held.append([ev])
        return now

    def _end_search(self) -> None:
        try:
            args = json.loads("".join(self._args))
        except ValueError:
            args = None
        self._args = None
        query = args.get("query") if isinstance(args, dict) else None
        item = _Search(query.strip() if isinstance(query, str) else "")
        self.held.append(item)
        self.content.append({"type": "tool_use", "id": item.id, "name": self.name,
                             "input": {"query": item.query}})

    def _record(self, ev: dict) -> None:
        kind = ev.get("type")
        if kind not in ("text", "thinking") or not ev.get("text"):
            return   # client tool calls end the loop: they need no record
        key = "text" if kind == "text" else "thinking"
        last = self.content[-1] if self.content else None
        if last is not None and last["type"] == kind:
            last[key] += ev["text"]
        else:
            self.content.append({"type": kind, key: ev["text"]})
