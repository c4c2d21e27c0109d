"""Shared pieces of the optimizer tests: a fake chat template and token counter, settings,
conversation builders and checks."""

from __future__ import annotations

import json

from anyclaude.config import ModelConfig, RoutesConfig, Settings
from anyclaude.optimizer_config import OptimizerConfig

BILLING = "x-anthropic-billing-header: cc_version=2.1.3.abc; cc_entrypoint=cli; cch=00000;"


def render(request: dict) -> str:
    """A deterministic stand-in for a chat template."""
    parts = ["<|system|>" + "\n\n".join(request.get("system") or []),
             "<|tools|>" + json.dumps(request.get("tools") or [], ensure_ascii=False)]
    for message in request["messages"]:
        parts.append(f"<|{message['role']}|>")
        for block in message["content"]:
            kind = block["type"]
            if kind == "text":
                parts.append(block["text"])
            elif kind == "tool_use":
                parts.append(f"<call {block['id']} {block['name']}>"
                             + json.dumps(block["input"], ensure_ascii=False))
            elif kind == "tool_result":
                parts.append(f"<result {block['tool_use_id']}>" + "".join(
                    c.get("text", "") for c in block["content"]))
            else:
                parts.append(json.dumps(block, ensure_ascii=False))
    return "\n".join(parts)


def char_count(request: dict) -> int:
    """Fake exact counter: 4 characters a token, plus 3 tokens a message."""
    return len(render(request)) // 4 + 3 * len(request["messages"]) + 1


def dense_count(request: dict) -> int:
    """A counter the optimizer's proportional estimate gets wrong: tool output is denser."""
    results = sum(len(c.get("text", "")) for m in request["messages"] for b in m["content"]
                  if b["type"] == "tool_result" for c in b["content"])
    rest = len(render(request)) - results
    return rest // 4 + results // 2 + 3 * len(request["messages"]) + 1


class Counting:
    """Wraps a counter and records the calls."""

    def __init__(self, fn=char_count):
        self.fn, self.calls = fn, 0

    def __call__(self, request: dict) -> int:
        self.calls += 1
        return self.fn(request)


def settings(window: int = 16384, max_output: int = 4096, *, routes: dict | None = None,
             models: dict | None = None, optimizer: OptimizerConfig | None = None) -> Settings:
    models = models or {"main": ModelConfig(context_window=window, max_output_tokens=max_output)}
    s = Settings(models=models, routes=RoutesConfig(**(routes or {"default": "main"})))
    if optimizer is not None:
        object.__setattr__(s, "optimizer", optimizer)
    return s


def text(role: str, body: str) -> dict:
    return {"role": role, "content": [{"type": "text", "text": body}]}


def filler(n: int, seed: int = 0) -> str:
    """n characters of line-structured text that differs per seed."""
    line = f"output line {seed:05d} lorem ipsum dolor sit amet\n"
    return (line * (n // len(line) + 1))[:n]


def exchange(call_id: str, sizes: list[int], *, say: str = "Let me check.") -> list[dict]:
    """An assistant message with len(sizes) tool calls and the user message with the results."""
    uses = [{"type": "tool_use", "id": f"{call_id}_{i}", "name": "Bash",
             "input": {"command": f"cat file_{call_id}_{i}"}} for i in range(len(sizes))]
    results = [{"type": "tool_result", "tool_use_id": f"{call_id}_{i}",
                "content": [{"type": "text", "text": filler(size, i)}], "is_error": False}
               for i, size in enumerate(sizes)]
    assistant = {"role": "assistant", "content": [{"type": "text", "text": say}, *uses]}
    return [assistant, {"role": "user", "content": results}]


def request(messages: list[dict], *, system=None, tools=None, max_tokens: int = 32000,
            model: str = "main", **extra) -> dict:
    return {"model": model, "requested_model": "claude-sonnet-4-5",
            "system": [BILLING, "You are a coding agent."] if system is None else system,
            "messages": messages,
            "tools": [{"name": "Bash", "description": "Run a shell command.",
                       "input_schema": {"type": "object",
                                        "properties": {"command": {"type": "string"}}}}]
            if tools is None else tools,
            "server_tools": [], "tool_choice": None, "max_tokens": max_tokens,
            "temperature": None, "top_p": None, "top_k": None, "stop_sequences": [],
            "thinking": False, **extra}


def check_pairs(messages: list[dict]) -> None:
    """Every tool_result answers a tool_use of the assistant message just before it, and
    every tool_use (except in a final assistant message) is answered by the next message."""
    for i, message in enumerate(messages):
        results = [b["tool_use_id"] for b in message["content"] if b["type"] == "tool_result"]
        if results:
            assert i > 0 and messages[i - 1]["role"] == "assistant", f"orphan results at {i}"
            uses = {b["id"] for b in messages[i - 1]["content"] if b["type"] == "tool_use"}
            assert set(results) == uses, f"message {i}: results {results} for calls {uses}"
        uses = [b["id"] for b in message["content"] if b["type"] == "tool_use"]
        if uses and i + 1 < len(messages):
            answered = {b["tool_use_id"] for b in messages[i + 1]["content"]
                        if b["type"] == "tool_result"}
            assert set(uses) == answered, f"message {i}: calls {uses} answered by {answered}"


def note(notes: list[dict], action: str) -> dict | None:
    return next((n for n in notes if n.get("action") == action), None)
