"""A fake engine *service*: a real bus.Service that answers Generate/Count with scripted frames.

The script is chosen by the last text of the last user message:

    fake:text a b c            text deltas "a ", "b ", "c"
    fake:tool NAME {json}      one tool call (arguments streamed in 3 pieces), stop tool_use
    fake:thinking              thinking deltas, then text
    fake:progress S            Progress frames every 0.05 s for S seconds, then text
    fake:silent S              nothing (after Accepted) for S seconds, then text
    fake:error TYPE            an Error of internal TYPE right after Accepted
    fake:late_error S TYPE     an Error of internal TYPE S seconds after Accepted
    fake:error_mid             some text, then Error("engine", ...)
    fake:hang                  Accepted, then nothing until cancelled
    fake:noaccept              nothing at all
    fake:long N TAG            N text deltas "TAG<i> "
    fake:echo                  the received internal request as JSON text
    fake:bad_tool_json         a tool call whose arguments are not JSON
    fake:burst N               N text deltas of one character, sent as fast as possible
    anything else              "Hello from the fake engine."

Usage counts are deterministic: input_tokens = fake_tokens(request), the same as Count.
Run in a thread (``FakeEngine(...).start()``) or as a process
(``python fd_fake_engine.py MODEL_ID`` with ANYCLAUDE_RUN_DIR set).
"""

from __future__ import annotations

import json
import sys
import threading
import time

import msgpack

from anyclaude import bus
from anyclaude.messages import Accepted, Cancel, Count, Counted, Delta, Done, Error, Generate, Progress

PROMPT_TOO_LONG = "prompt is too long: 50000 tokens > 32768 maximum"


def fake_tokens(request: dict) -> int:
    """A deterministic 'token count' of the prompt part of a request."""
    prompt = [request.get("system"), request.get("messages"), request.get("tools")]
    return len(msgpack.packb(prompt, use_bin_type=True)) // 4 + 1


def script_of(request: dict) -> tuple[str, list[str]]:
    for message in reversed(request.get("messages", [])):
        if message["role"] != "user":
            continue
        for block in reversed(message["content"]):
            if block["type"] == "text" and block["text"].startswith("fake:"):
                name, _, rest = block["text"][5:].partition(" ")
                return name, rest.split(" ", 1) if name == "tool" else rest.split()
            if block["type"] == "tool_result":
                return "text", ["got", "the", "tool", "result"]
        break
    return "hello", []


class FakeEngine:
    def __init__(self, model_id: str):
        self.name = f"engine-{model_id}"
        self.generated: list[tuple[bytes, dict]] = []
        self.cancelled: list[bytes] = []
        self.counted: list[dict] = []
        self.log: list[tuple[str, bytes]] = []   # ("generate" | "cancel", request_id), in order
        self._cancel_events: dict[bytes, threading.Event] = {}
        self._lock = threading.Lock()
        self.service = bus.Service(self.name, {Generate: self._generate, Count: self._count,
                                               Cancel: self._cancel})
        self.thread: threading.Thread | None = None

    # -- running --
    def start(self) -> "FakeEngine":
        self.thread = threading.Thread(target=self.service.run, name=self.name, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 5
        while not bus.socket_path(self.name).exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not bind")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.service.stop()
        if self.thread is not None:
            self.thread.join(timeout=5)

    def was_cancelled(self, request_id: str) -> bool:
        return request_id.encode() in self.cancelled

    def request_of(self, request_id: str) -> dict:
        for rid, request in self.generated:
            if rid == request_id.encode():
                return request
        raise KeyError(request_id)

    # -- handlers (loop thread: return quickly) --
    def _count(self, call: bus.Call) -> None:
        self.counted.append(call.message.request)
        name, args = script_of(call.message.request)
        if name == "error" and args and args[0] == "prompt_too_long":
            call.send(Error("prompt_too_long", PROMPT_TOO_LONG))
            return
        call.send(Counted(fake_tokens(call.message.request), 32768))

    def _cancel(self, call: bus.Call) -> None:
        self.cancelled.append(call.request_id)
        self.log.append(("cancel", call.request_id))
        with self._lock:
            event = self._cancel_events.get(call.request_id)
        if event is not None:
            event.set()

    def _generate(self, call: bus.Call) -> None:
        cancel = threading.Event()
        with self._lock:
            self._cancel_events[call.request_id] = cancel
        self.generated.append((call.request_id, call.message.request))
        self.log.append(("generate", call.request_id))
        threading.Thread(target=self._run, args=(call, cancel), daemon=True).start()

    # -- one generation --
    def _run(self, call: bus.Call, cancel: threading.Event) -> None:
        try:
            self._script(call, cancel)
        finally:
            with self._lock:
                self._cancel_events.pop(call.request_id, None)
            self.service.close_thread_sockets()

    def _script(self, call: bus.Call, cancel: threading.Event) -> None:
        request = call.message.request
        name, args = script_of(request)
        if name == "noaccept":
            return
        send = call.send
        usage = {"input_tokens": fake_tokens(request), "output_tokens": 0,
                 "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}

        def done(reason: str = "end_turn", n: int = 1) -> None:
            send(Done(reason, None, {**usage, "output_tokens": n}))

        def wait(seconds: float) -> bool:
            """Sleep unless cancelled; True if cancelled."""
            return cancel.wait(seconds) or call.gone.is_set()

        send(Accepted(0))
        if name == "text":
            words = args or ["empty"]
            send(Delta([{"type": "text", "text": w + (" " if i < len(words) - 1 else "")}
                        for i, w in enumerate(words)]))
            done(n=len(words))
        elif name == "tool":
            tool, raw = (args + ["{}"])[:2] if args else ("get_weather", '{"city": "Paris"}')
            third = max(1, len(raw) // 3)
            pieces = [raw[:third], raw[third:2 * third], raw[2 * third:]]
            send(Delta([{"type": "text", "text": "Let me check."}]))
            send(Delta([{"type": "tool_start", "id": "toolu_fake01", "name": tool}]))
            for piece in pieces:
                if piece:
                    send(Delta([{"type": "tool_args", "json": piece}]))
            send(Delta([{"type": "tool_end"}]))
            done("tool_use", 5)
        elif name == "thinking":
            send(Delta([{"type": "thinking", "text": "Let me think. "},
                        {"type": "thinking", "text": "Two plus two is four."}]))
            send(Delta([{"type": "text", "text": "The answer is 4."}]))
            done(n=12)
        elif name in ("progress", "silent"):
            seconds = float(args[0]) if args else 1.0
            end = time.monotonic() + seconds
            processed = 0
            while time.monotonic() < end:
                if wait(0.05):
                    return
                processed += 100
                if name == "progress":
                    send(Progress(processed, processed * 10))
            send(Delta([{"type": "text", "text": "done after a long prefill"}]))
            done(n=5)
        elif name == "error":
            kind = args[0] if args else "engine"
            message = PROMPT_TOO_LONG if kind == "prompt_too_long" else f"fake {kind} error"
            send(Error(kind, message, kind in ("engine", "overloaded")))
        elif name == "late_error":
            if wait(float(args[0])):
                return
            kind = args[1] if len(args) > 1 else "engine"
            send(Error(kind, PROMPT_TOO_LONG if kind == "prompt_too_long" else f"fake {kind} error"))
        elif name == "error_mid":
            send(Delta([{"type": "text", "text": "partial "}]))
            if wait(0.05):
                return
            send(Error("engine", "fake engine failed mid-stream", True))
        elif name == "hang":
            cancel.wait(60)
        elif name == "long":
            count, tag = int(args[0]), args[1] if len(args) > 1 else "x"
            for i in range(count):
                if cancel.is_set() or call.gone.is_set():
                    return
                send(Delta([{"type": "text", "text": f"{tag}{i} "}]))
                if i % 10 == 9:
                    time.sleep(0.001)
            done(n=count)
        elif name == "burst":
            count = int(args[0])
            for i in range(count):
                if i % 256 == 0 and (cancel.is_set() or call.gone.is_set()):
                    return
                send(Delta([{"type": "text", "text": "a"}]))
            done(n=count)
        elif name == "echo":
            send(Delta([{"type": "text", "text": json.dumps(request, sort_keys=True)}]))
            done()
        elif name == "bad_tool_json":
            send(Delta([{"type": "tool_start", "id": "toolu_bad", "name": "get_weather"},
                        {"type": "tool_args", "json": "{not json"}, {"type": "tool_end"}]))
            done("tool_use")
        else:
            send(Delta([{"type": "text", "text": "Hello from "}]))
            send(Delta([{"type": "text", "text": "the fake engine."}]))
            done(n=6)


if __name__ == "__main__":
    engine = FakeEngine(sys.argv[1])
    print("ready", flush=True)
    engine.service.run()
