"""Shared helpers for the whole-system benchmarks and the long-session test.

    sys_ = BenchSystem(home, model_dir, context_window=32768, memory_budget_mb=512)
    sys_.up()                              # `anyclaude up --detach` in a temp home
    sys_.say(("match", "text"))            # the force file: the real engine says exact texts
    r = stream_messages(sys_.url, body)    # POST /v1/messages, stream: TTFT, usage, blocks
    sys_.restart("engine-tiny"); sys_.down()

    sized_request(seed, tokens, count)     a Claude-Code-shaped request of ~tokens: a long
                                           system text, 25 tools with long descriptions
    AgentSession(seed)                     the client side of a long agentic session
    local_counter(model_dir)               exact prompt tokens, as the engine renders them
    rss_mb(pid)                            VmRSS of a process, from /proc

Everything lives under the given home (config, logs, kv cache; the run dir under /tmp), so
a run never touches the user's own anyclaude.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

API_KEY = "sk-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class BenchSystem:
    """One whole anyclaude system in its own home, on one MLX model named ``model_id``."""

    def __init__(self, home: Path, model_dir: Path, *, model_id: str = "tiny",
                 context_window: int = 32768, max_output_tokens: int = 256,
                 memory_budget_mb: int = 512, disk_budget_mb: int = 2048,
                 block_tokens: int = 256, prefill_step_size: int = 256,
                 optimizer: str = "", port: int | None = None, concurrency: int = 0):
        self.home, self.model_id = Path(home), model_id
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.engine = f"engine-{model_id}"
        self.memory_budget_mb = memory_budget_mb
        self.force_file = self.home / "force.json"
        self.force_file.write_text(json.dumps({"rules": []}))
        self.config = self.home / "anyclaude.toml"
        self.config.write_text(f"""
[server]
port = {self.port}
api_key = "{API_KEY}"

[models.{model_id}]
path = "{model_dir}"
context_window = {context_window}
max_output_tokens = {max_output_tokens}
{f"concurrency = {concurrency}" if concurrency else ""}

[routes]
default = "{model_id}"

[engine]
force_file = "{self.force_file}"
prefill_step_size = {prefill_step_size}

[cache]
dir = "{self.home / 'cache'}"
disk_budget_mb = {disk_budget_mb}
memory_budget_mb = {memory_budget_mb}
block_tokens = {block_tokens}

[logging]
dir = "{self.home / 'logs'}"
{optimizer}
""")
        self.env = {**os.environ,
                    "ANYCLAUDE_CONFIG": str(self.config),
                    "ANYCLAUDE_RUN_DIR": tempfile.mkdtemp(prefix="acb", dir="/tmp"),
                    "XDG_CACHE_HOME": str(self.home / "xdg-cache"),
                    "XDG_STATE_HOME": str(self.home / "xdg-state")}

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "anyclaude.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def up(self) -> None:
        out = self.cli("up", "--detach", timeout=300)
        if out.returncode != 0:
            logs = "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}"
                             for p in (self.home / "logs").glob("*"))
            self.down()
            raise RuntimeError(f"anyclaude up failed: {out.stdout}\n{out.stderr}\n{logs}")

    def down(self) -> None:
        self.cli("down", timeout=120)

    def restart(self, name: str) -> None:
        out = self.cli("restart", name, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"anyclaude restart {name} failed: {out.stdout}{out.stderr}")

    def say(self, *rules: tuple[str, str], otherwise: str | None = "ok") -> None:
        """(match, text): the engine says ``text`` when the last message contains ``match``."""
        listed = [{"match": m, "say": t} for m, t in rules]
        if otherwise is not None:
            listed.append({"match": "", "say": otherwise})
        self.force_file.write_text(json.dumps({"rules": listed}))

    def status(self) -> dict:
        out = self.cli("status", "--json", timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"anyclaude status failed: {out.stderr}")
        return json.loads(out.stdout)

    def service(self, name: str) -> dict:
        return next(s for s in self.status()["services"] if s["name"] == name)

    def engine_pid(self) -> int:
        return int(self.service(self.engine)["pid"])

    def kvstore_settled(self, timeout: float = 120) -> dict:
        """The kvstore's info once its files stop changing (the engine writes them in the
        background after each reply)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            info = self.service("kvstore").get("info") or {}
            now = (info.get("entries"), info.get("bytes"))
            if now == last and info.get("entries"):
                return info
            last = now
            time.sleep(1.0)
        raise RuntimeError(f"the kvstore did not settle within {timeout} s: {last}")

    def engine_info(self, completed: int, timeout: float = 10) -> dict:
        """The engine's status info once it counts ``completed`` requests (status comes
        from heartbeats, about once a second)."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.service(self.engine)["info"]
            if info.get("completed", 0) >= completed or time.monotonic() > deadline:
                return info
            time.sleep(0.2)


# --- streaming clients ----------------------------------------------------------------------

@dataclass
class Streamed:
    ttft: float                 # seconds from sending the request to the first content delta
    total: float
    text: str = ""
    usage: dict = field(default_factory=dict)
    stop_reason: str | None = None
    blocks: list = field(default_factory=list)     # the reply's content blocks (Anthropic)
    left_out: int = 0           # tokens the optimizer left out (anyclaude-context-cut header)

    @property
    def input_total(self) -> int:
        """Prompt tokens the model read: usage also counts what a cut left out."""
        u = self.usage
        return (u.get("input_tokens", 0) + u.get("cache_read_input_tokens", 0)
                + u.get("cache_creation_input_tokens", 0)) - self.left_out

    @property
    def model_text(self) -> str:
        """The text the model wrote, without the notice a cut puts first."""
        if self.text.startswith("[anyclaude: ") and "]\n\n" in self.text:
            return self.text.split("]\n\n", 1)[1]
        return self.text

    @property
    def cache_read(self) -> int:
        return self.usage.get("cache_read_input_tokens", 0)


def sse(response):
    """(event, data) pairs of an SSE response, as they arrive."""
    event, data = None, []
    while True:
        line = response.readline()
        if not line:
            return
        line = line.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = None, []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def post(url: str, path: str, body: dict, headers: dict, timeout: float):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    payload = json.dumps(body).encode()
    conn.request("POST", path, body=payload,
                 headers={"content-type": "application/json", **headers})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"{path}: HTTP {response.status}: {response.read()[:500]!r}")
    return conn, response


def stream_messages(url: str, body: dict, timeout: float = 1800) -> Streamed:
    """POST /v1/messages with stream: true; TTFT is the first content_block_delta."""
    started = time.perf_counter()
    conn, response = post(url, "/v1/messages", {**body, "stream": True},
                           {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}, timeout)
    out = Streamed(ttft=0.0, total=0.0)
    cut = response.getheader("anyclaude-context-cut") or ""
    if cut.startswith("left_out_tokens="):
        out.left_out = int(cut.split(";")[0].split("=")[1])
    partial: dict[int, str] = {}
    try:
        for event, data in sse(response):
            msg = json.loads(data)
            if event == "content_block_delta":
                if not out.ttft:
                    out.ttft = time.perf_counter() - started
                delta = msg["delta"]
                if delta.get("type") == "text_delta":
                    out.text += delta["text"]
                    out.blocks[msg["index"]]["text"] += delta["text"]
                elif delta.get("type") == "input_json_delta":
                    partial[msg["index"]] = partial.get(msg["index"], "") + delta["partial_json"]
            elif event == "content_block_start":
                out.blocks.append(dict(msg["content_block"]))
            elif event == "content_block_stop" and msg["index"] in partial:
                out.blocks[msg["index"]]["input"] = json.loads(partial.pop(msg["index"]) or "{}")
            elif event == "message_start":
                out.usage.update(msg["message"].get("usage") or {})
            elif event == "message_delta":
                out.usage.update(msg.get("usage") or {})
                out.stop_reason = msg["delta"].get("stop_reason")
            elif event == "error":
                raise RuntimeError(f"stream error: {data}")
    finally:
        conn.close()
    out.total = time.perf_counter() - started
    if not out.ttft:
        raise RuntimeError(f"no content in the reply (usage {out.usage})")
    return out


def count_tokens(url: str, body: dict) -> int:
    conn, response = post(url, "/v1/messages/count_tokens",
                           {k: v for k, v in body.items() if k not in ("max_tokens", "stream")},
                           {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}, 120)
    try:
        return json.loads(response.read())["input_tokens"]
    finally:
        conn.close()


# --- a Claude-Code-shaped prompt ------------------------------------------------------------

_SENTENCES = [
    "Use this tool when you need to {verb} {object} in the current working directory.",
    "Always prefer {tool} over running shell commands such as cat, head or sed for this.",
    "The {param} parameter must be an absolute path, not a relative path.",
    "If the {object} does not exist, the tool returns an error and you should not retry blindly.",
    "You can call multiple tools in a single response when the calls do not depend on each other.",
    "Results longer than {n} lines are truncated; use offset and limit to read the rest.",
    "Never {verb} files outside the project unless the user explicitly asks you to.",
    "When {verb_ing} {object}, preserve the exact indentation (tabs or spaces) of the original.",
    "This tool supports glob patterns like \"**/*.{ext}\" or \"src/**/*.ts\".",
    "Output is returned sorted by modification time, most recent first.",
    "It is critical that you mark todos as completed as soon as you are done with a task.",
    "Do not use this tool to communicate with the user; output text directly instead.",
    "The command runs in a persistent shell session with an optional timeout of up to {n} ms.",
    "Before {verb_ing} {object}, verify that the parent directory exists with the LS tool.",
    "Quote file paths that contain spaces with double quotes, for example cd \"/path/with spaces\".",
    "A {param} that matches more than one location makes the edit fail; give more context.",
    "Set replace_all to true to change every occurrence of {param} in the file.",
    "Only use emojis if the user explicitly requests it; avoid adding emojis to {object}.",
    "The {param} field accepts a regular expression in ripgrep syntax, e.g. \"log.*Error\".",
    "Use the {tool} tool proactively for complex multi-step tasks with three or more steps.",
    "Prefer editing existing {object} to creating new ones; never create documentation unless asked.",
    "If you are unsure about {object}, ask the user a clarifying question before proceeding.",
    "Launch several agents concurrently whenever possible to maximize performance.",
    "Network access is restricted; fetched content is converted from HTML to markdown.",
    "The working directory is preserved between calls, but environment changes are not.",
    "Avoid running commands that require interactive input, such as git rebase -i.",
    "Check git status and git diff before creating a commit, and never skip hooks.",
    "When a test fails, read the error output carefully and fix the root cause, not the symptom.",
]
_WORDS = {
    "verb": ["read", "write", "edit", "search", "list", "delete", "rename", "inspect", "create"],
    "verb_ing": ["reading", "writing", "editing", "searching", "listing", "renaming", "creating"],
    "object": ["files", "directories", "notebooks", "configuration files", "test fixtures",
               "source files", "the repository", "log files", "build artifacts"],
    "param": ["file_path", "old_string", "new_string", "pattern", "path", "command", "url",
              "offset", "limit", "glob", "description", "prompt"],
    "ext": ["py", "js", "ts", "rs", "go", "md", "json", "toml"],
    "tool": ["Read", "Grep", "Glob", "Edit", "TodoWrite", "Task"],
}
TOOL_NAMES = ["Task", "Bash", "Glob", "Grep", "LS", "ExitPlanMode", "Read", "Edit", "MultiEdit",
              "Write", "NotebookRead", "NotebookEdit", "WebFetch", "TodoWrite", "WebSearch",
              "BashOutput", "KillShell", "SlashCommand", "AskUserQuestion", "Skill",
              "ListMcpResourcesTool", "ReadMcpResourceTool", "mcp__ide__getDiagnostics",
              "mcp__ide__executeCode", "EnterPlanMode"]


def prose(rng: random.Random, chars: int) -> str:
    """English-like instruction text of about ``chars`` characters, in paragraphs."""
    out, size, n = [], 0, 0
    while size < chars:
        s = rng.choice(_SENTENCES)
        s = s.format(**{k: rng.choice(v) for k, v in _WORDS.items()},
                     n=rng.choice([200, 2000, 600000]))
        n += 1
        out.append(s + ("\n\n" if n % 5 == 0 else " "))
        size += len(out[-1])
    return "".join(out)[:chars].rstrip()


_PARAMS = {   # the real tools' parameter names
    "Task": ["description", "prompt", "subagent_type"], "Bash": ["command", "timeout", "description"],
    "Glob": ["pattern", "path"], "Grep": ["pattern", "path", "glob", "output_mode"],
    "LS": ["path", "ignore"], "ExitPlanMode": ["plan"], "Read": ["file_path", "offset", "limit"],
    "Edit": ["file_path", "old_string", "new_string", "replace_all"],
    "MultiEdit": ["file_path", "edits"], "Write": ["file_path", "content"],
    "NotebookRead": ["notebook_path", "cell_id"],
    "NotebookEdit": ["notebook_path", "cell_id", "new_source", "edit_mode"],
    "WebFetch": ["url", "prompt"], "TodoWrite": ["todos"], "WebSearch": ["query", "allowed_domains"],
    "BashOutput": ["bash_id", "filter"], "KillShell": ["shell_id"], "SlashCommand": ["command"],
    "AskUserQuestion": ["questions"], "Skill": ["command"], "ListMcpResourcesTool": ["server"],
    "ReadMcpResourceTool": ["server", "uri"], "mcp__ide__getDiagnostics": ["uri"],
    "mcp__ide__executeCode": ["code"], "EnterPlanMode": ["reason"],
}
_TYPES = {"timeout": "number", "offset": "number", "limit": "number", "replace_all": "boolean",
          "ignore": "array", "allowed_domains": "array", "edits": "array", "questions": "array"}


def _schema(rng: random.Random, name: str, scale: float = 1.0) -> dict:
    params = _PARAMS.get(name, ["input"])
    props = {}
    for p in params:
        props[p] = {"type": _TYPES.get(p, "string"),
                    "description": prose(rng, int(rng.randint(60, 240) * scale))}
        if props[p]["type"] == "array":
            props[p]["items"] = {"type": "string"}
    if name == "TodoWrite":
        props["todos"] = {"type": "array", "items": {"type": "object", "properties": {
            "content": {"type": "string", "minLength": 1},
            "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]},
            "activeForm": {"type": "string", "minLength": 1}},
            "required": ["content", "status", "activeForm"], "additionalProperties": False}}
    return {"type": "object", "properties": props, "required": params[:1],
            "additionalProperties": False, "$schema": "http://json-schema.org/draft-07/schema#"}


def claude_code_tools(rng: random.Random, description_chars: int = 2400,
                      names: list[str] = TOOL_NAMES) -> list[dict]:
    """Tools shaped like Claude Code's 25 (names, long descriptions, JSON schemas)."""
    return [{"name": name, "description": prose(rng, rng.randint(description_chars // 3,
                                                                   description_chars * 5 // 3)),
             "input_schema": _schema(rng, name, description_chars / 2400)} for name in names]


def claude_code_request(rng: random.Random, *, system_chars: int, turns: int = 3,
                        description_chars: int = 2400, max_tokens: int = 8) -> dict:
    """A Claude-Code-shaped request: system blocks, 25 tools, a few tool-using turns."""
    intro = "You are an interactive CLI tool that helps users with software engineering tasks."
    system = [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
              {"type": "text", "text": intro + "\n\n" + prose(rng, system_chars)}]
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>\nAs you answer the user's questions, you can "
                                 "use the following context:\n" + prose(rng, 1200)
                                 + "\n</system-reminder>"},
        {"type": "text", "text": "The tests in tests/test_parser.py fail since yesterday's change. "
                                 "Find out why and fix them."}]}]
    for turn in range(turns):
        call = f"toolu_{rng.getrandbits(48):012x}"
        name = rng.choice(["Read", "Grep", "Bash"])
        messages.append({"role": "assistant", "content": [
            {"type": "text", "text": prose(rng, rng.randint(80, 300))},
            {"type": "tool_use", "id": call, "name": name,
             "input": {"command": f"pytest -x tests/test_parser.py -k case_{turn}"}}]})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call,
             "content": [{"type": "text", "text": code_output(rng, rng.randint(800, 2500))}]}]})
    return {"model": "claude-sonnet-4-6", "max_tokens": max_tokens, "system": system,
            "tools": claude_code_tools(rng, description_chars), "messages": messages}


def code_output(rng: random.Random, chars: int) -> str:
    """Something that looks like a tool's output: code and test log lines."""
    lines = ["def parse(self, text):", "    tokens = self.lexer.split(text)",
             "    return Node(kind, children)", "FAILED tests/test_parser.py::test_case - "
             "AssertionError", "E       assert 3 == 4", "import os", "class Parser:",
             "    if not tokens:", "        raise ParseError(f\"empty input at {pos}\")",
             "tests/test_parser.py:42: in test_nested", "collected 12 items", "    # TODO: ",
             "PASSED tests/test_lexer.py::test_unicode", "  File \"src/parser.py\", line 88"]
    out, size = [], 0
    while size < chars:
        line = rng.choice(lines) + (f" {rng.randint(0, 9999)}" if rng.random() < 0.3 else "")
        out.append(line)
        size += len(line) + 1
    return "\n".join(out)[:chars]


def user_text(rng: random.Random, chars: int) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": prose(rng, chars)}]}


def sized_request(seed: int, tokens: int, count, max_tokens: int = 8) -> dict:
    """A Claude-Code-shaped request of about ``tokens`` prompt tokens (``count``: request ->
    exact prompt tokens, e.g. the system's count_tokens). Tools take ~4/5 of it."""
    def make(scale: float) -> dict:
        return claude_code_request(random.Random(seed), system_chars=int(12000 * scale),
                                   description_chars=max(60, int(1600 * scale)),
                                   max_tokens=max_tokens)
    lo, hi = 0.3, 1.0
    n_lo, n_hi = count(make(lo)), count(make(hi))
    scale = lo + (hi - lo) * (tokens - n_lo) / max(1, n_hi - n_lo)
    best = None
    for _ in range(8):
        request = make(scale)
        n = count(request)
        if best is None or abs(n - tokens) < abs(best[0] - tokens):
            best = (n, request)
        if abs(n - tokens) <= tokens * 0.005:
            break
        scale *= (tokens / n) ** 0.8
    return best[1]


# --- a long agentic session (client side) -----------------------------------------------------

WRAP_UP = "[[wrap up]]"
TOOL_CALL = '<tool_call>{"name": "Read", "arguments": {"file_path": "/src/parser.py"}}</tool_call>'
SUMMARY = "Summary: the parser handles nested cases now."
AGENT_TOOLS = ["Read", "Bash", "Edit", "Write", "Glob", "Grep", "TodoWrite", "Task"]


def force_agent(system: BenchSystem) -> None:
    """The forced replies of an AgentSession: a tool call, or a summary after WRAP_UP."""
    system.say((WRAP_UP, SUMMARY), otherwise=TOOL_CALL)


class AgentSession:
    """The client side of a synthetic Claude Code session. Each turn sends the whole
    conversation; the engine answers a tool call (forced), the client appends the reply and
    a tool result of ``output_chars`` characters; every ``wrap_every``-th result asks for a
    summary, after which the user sends a new message."""

    def __init__(self, seed: int, *, label: str = "", system_chars: int = 3000,
                 n_tools: int = 8, description_chars: int = 600,
                 output_chars: tuple[int, int] = (1500, 6000), wrap_every: int = 5):
        self.rng = random.Random(seed)
        self.output_chars, self.wrap_every = output_chars, wrap_every
        self.system = [{"type": "text", "text": f"{label}You are Claude Code, a coding agent.\n\n"
                        + prose(self.rng, system_chars)}]
        self.tools = claude_code_tools(self.rng, description_chars, AGENT_TOOLS[:n_tools])
        self.messages = [user_text(self.rng, 600)]
        self.results = 0

    def body(self, messages: list[dict] | None = None, max_tokens: int = 64) -> dict:
        return {"model": "claude-sonnet-4-6", "max_tokens": max_tokens, "system": self.system,
                "tools": self.tools, "messages": messages or self.messages}

    def add_reply(self, blocks: list[dict]) -> None:
        self.messages.append({"role": "assistant", "content": blocks})
        calls = [b for b in blocks if b.get("type") == "tool_use"]
        if not calls:
            self.messages.append(user_text(self.rng, self.rng.randint(200, 900)))
            return
        content = []
        for call in calls:
            self.results += 1
            text = code_output(self.rng, self.rng.randint(*self.output_chars))
            if self.results % self.wrap_every == 0:
                text += f"\n{WRAP_UP}"
            content.append({"type": "tool_result", "tool_use_id": call["id"],
                            "content": [{"type": "text", "text": text}]})
        self.messages.append({"role": "user", "content": content})


def last_n(messages: list[dict], n: int) -> list[dict]:
    """The naive client policy: the last ``n`` messages, starting at a user message; a tool
    result whose call was dropped becomes plain text."""
    start = max(0, len(messages) - n)
    while messages[start]["role"] != "user":
        start += 1
    head = messages[start]
    if any(b.get("type") == "tool_result" for b in head["content"]):
        head = {"role": "user", "content": [
            {"type": "text", "text": "".join(c.get("text", "") for c in b["content"])}
            if b.get("type") == "tool_result" else b for b in head["content"]]}
    return [head, *messages[start + 1:]]


def local_counter(model_dir):
    """body -> exact prompt tokens as the engine renders it (its tokenizer and template),
    without the optimizer: what a naive client can measure on its own."""
    from mlx_lm.tokenizer_utils import load
    from transformers.utils import logging as hf_logging

    from anyclaude.prompt.template import ChatRenderer
    hf_logging.set_verbosity_error()      # conversations longer than the model's window
    renderer = ChatRenderer(load(Path(model_dir)))

    def count(body: dict) -> int:
        internal = {**body, "system": [b["text"] if isinstance(b, dict) else b
                                       for b in body.get("system") or []]}
        return len(renderer.render(internal))
    return count


def bench_model_dir(preset: str, layers: int | None = None) -> Path:
    """The model directory a benchmark serves: ``smollm2`` = the default model (its GGUF
    converted to float32 MLX once, under ~/.cache/anyclaude-bench), else a random-weight
    model of ``anyclaude.tinymodel``'s preset shape with ``layers`` layers."""
    if preset == "smollm2":
        from anyclaude.modelfiles.gguf import gguf_model_dir
        from anyclaude.modelfiles.resolve import smollm2_gguf
        cache = Path.home() / ".cache" / "anyclaude-bench"
        return Path(gguf_model_dir(smollm2_gguf(), cache, model_id="smollm2", mode="float32").path)
    from anyclaude.tinymodel import ensure_tiny_model
    return ensure_tiny_model(preset=preset, layers=layers)
