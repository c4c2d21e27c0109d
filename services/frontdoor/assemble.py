"""The non-streaming reply, built from the same neutral events as the stream."""

from __future__ import annotations

import json

from . import sse


class Assembler:
    def __init__(self, *, message_id: str, model: str):
        self.message_id, self.model = message_id, model
        self.content: list[dict] = []
        self._tool_json: list[str] = []

    def feed(self, events: list) -> None:
        for ev in events:
            kind = ev.get("type") if isinstance(ev, dict) else None
            last = self.content[-1] if self.content else None
            if kind == "text":
                if not ev.get("text"):
                    continue
                if last is not None and last["type"] == "text" and not self._tool_open():
                    last["text"] += ev["text"]
                else:
                    self._end_tool()
                    self.content.append({"type": "text", "text": ev["text"]})
            elif kind == "thinking":
                if not ev.get("text"):
                    continue
                if last is not None and last["type"] == "thinking":
                    last["thinking"] += ev["text"]
                else:
                    self._end_tool()
                    self.content.append({"type": "thinking", "thinking": ev["text"],
                                         "signature": sse.SIGNATURE})
            elif kind == "tool_start":
                self._end_tool()
                self.content.append({"type": "tool_use", "id": str(ev.get("id") or ""),
                                     "name": str(ev.get("name") or ""), "input": None})
                self._tool_json = []
            elif kind == "tool_args":
                if not self._tool_open():
                    raise sse.MalformedEvents("tool_args outside a tool call")
                self._tool_json.append(ev.get("json") or "")
            elif kind == "tool_end":
                if not self._tool_open():
                    raise sse.MalformedEvents("tool_end outside a tool call")
                self._end_tool()
            elif kind == "block":   # a complete block from the search loop
                self._end_tool()
                self.content.append(dict(ev["block"]))
            else:
                raise sse.MalformedEvents(f"unknown engine event {kind!r}")

    def _tool_open(self) -> bool:
        return bool(self.content) and self.content[-1]["type"] == "tool_use" \
            and self.content[-1]["input"] is None

    def _end_tool(self) -> None:
        if not self._tool_open():
            return
        text = "".join(self._tool_json)
        self._tool_json = []
        try:
            value = json.loads(text) if text else {}
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise sse.MalformedEvents("the model's tool arguments are not one JSON object")
        self.content[-1]["input"] = value

    def finish(self, reason: str | None, sequence: str | None, raw_usage: dict | None) -> dict:
        self._end_tool()
        return {"id": self.message_id, "type": "message", "role": "assistant",
                "model": self.model, "content": self.content,
                "stop_reason": sse.stop_reason(reason), "stop_sequence": sequence,
                "usage": sse.usage(raw_usage)}
