"""The one schema for every message on the bus.

A frame on the wire is ``[header] [request_id] [body]`` (a ROUTER sees the peer identity
in front of it). The header is one version byte followed by the kind's name in ASCII; the
request id is raw bytes chosen by the caller; the body is a msgpack map of the fields.

Every kind is a frozen dataclass. Decoding checks the version, the kind and each field's
type, and raises :class:`WireError` with a message naming what was wrong, so a receiver can
answer with an :class:`Error` instead of crashing. Unknown fields in a body are ignored
(new fields are always optional), so older and newer peers interoperate.

The internal request (``Generate.request``, ``Count.request``, ``Optimize.request``) is a
plain dict, built and checked by the front door:

    model: str                  local model id, after routing
    system: list[str]           system prompt blocks (texts), in order
    messages: list[{role: "user"|"assistant"|"system", content: list[block]}]
        block: {type:"text", text} | {type:"image", media_type, data} |
               {type:"document", media_type, data} |
               {type:"tool_use", id, name, input: dict} |
               {type:"tool_result", tool_use_id, content: list[text|image block], is_error: bool} |
               {type:"thinking", thinking} | {type:"redacted_thinking", data}
    tools: list[{name, description, input_schema}]     custom tools only
    tool_choice: {type: auto|any|tool|none, name?} | None
    max_tokens: int
    temperature, top_p: float | None;  top_k: int | None
    stop_sequences: list[str]
    thinking: bool              the client asked for (or allowed) thinking
    prompt: dict (optional)     the optimizer's rendered prompt for a local model, so the
                                engine does not render again (anyclaude/prompt/handoff.py)

Neutral engine events (``Delta.events``), one dict each:

    {type:"text", text}  {type:"thinking", text}
    {type:"tool_start", id, name}  {type:"tool_args", json}  {type:"tool_end"}
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack

VERSION = 1


class WireError(ValueError):
    """A frame that cannot be decoded: wrong version, unknown kind, bad body or field."""


@dataclass(frozen=True)
class Message:
    kind: ClassVar[str] = ""


_KINDS: dict[str, type[Message]] = {}


def kind(cls):
    """Register a message class under its own name."""
    cls.kind = cls.__name__
    _KINDS[cls.__name__] = cls
    return cls


# --- generation -------------------------------------------------------------------------

@kind
@dataclass(frozen=True)
class Generate(Message):
    request: dict


@kind
@dataclass(frozen=True)
class Accepted(Message):
    """The engine took the request; ``queue_position`` 0 means it is running now."""
    queue_position: int = 0


@kind
@dataclass(frozen=True)
class Progress(Message):
    """Prefill progress: ``processed`` of ``total`` prompt tokens."""
    processed: int
    total: int


@kind
@dataclass(frozen=True)
class Delta(Message):
    events: list


@kind
@dataclass(frozen=True)
class Done(Message):
    """``cache`` (optional): how the prompt cache served this prompt, for the status page:
    {reused, source: memory|disk|none, prompt_tokens, diverged_at, closest_match,
    diverged_in: system+tools|messages} - token positions only, never prompt text."""
    stop_reason: str
    stop_sequence: str | None = None
    usage: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict)


@kind
@dataclass(frozen=True)
class Error(Message):
    """``type`` is one of the internal error types in anyclaude.errors."""
    type: str
    message: str
    retryable: bool = False
    retry_after: float = 0.0   # seconds, when the failing side knows (an upstream 429)


@kind
@dataclass(frozen=True)
class Cancel(Message):
    reason: str = ""


# --- counting and optimizing ------------------------------------------------------------

@kind
@dataclass(frozen=True)
class Count(Message):
    request: dict


@kind
@dataclass(frozen=True)
class Counted(Message):
    input_tokens: int
    context_window: int = 0
    estimated: bool = False   # no tokenizer could count it: a guess from the request's size


@kind
@dataclass(frozen=True)
class Optimize(Message):
    request: dict


@kind
@dataclass(frozen=True)
class Optimized(Message):
    request: dict
    notes: list = field(default_factory=list)


# --- KV-cache store ---------------------------------------------------------------------

@kind
@dataclass(frozen=True)
class CacheLookup(Message):
    """Find the longest stored prefix: ``block_hashes`` are the chained hashes of the
    token prefix at each block boundary, shortest first."""
    fingerprint: str
    block_hashes: list


@kind
@dataclass(frozen=True)
class CacheHit(Message):
    """``path`` is empty on a miss; ``tokens`` is the number of prefix tokens stored."""
    path: str = ""
    tokens: int = 0
    block_hash: str = ""


@kind
@dataclass(frozen=True)
class CachePut(Message):
    """The engine wrote a cache file at ``path`` (in the store's spool); the store adopts it."""
    fingerprint: str
    block_hash: str
    tokens: int
    path: str
    pinned: bool = False


# --- web search -------------------------------------------------------------------------

@kind
@dataclass(frozen=True)
class Search(Message):
    query: str
    allowed_domains: list = field(default_factory=list)
    blocked_domains: list = field(default_factory=list)
    max_results: int = 0


@kind
@dataclass(frozen=True)
class Results(Message):
    """``results`` are {url, title, snippet, page_age}; ``error_code`` is set on failure."""
    results: list = field(default_factory=list)
    error_code: str | None = None
    message: str = ""


# --- supervision and control ------------------------------------------------------------

@kind
@dataclass(frozen=True)
class Heartbeat(Message):
    service: str
    state: str
    pid: int
    seq: int
    info: dict = field(default_factory=dict)


@kind
@dataclass(frozen=True)
class Command(Message):
    """A data command: ``status``, ``restart`` {name}, ``stop``, ``ready`` {service, pid}, ..."""
    name: str
    args: dict = field(default_factory=dict)


@kind
@dataclass(frozen=True)
class Reply(Message):
    ok: bool
    data: dict = field(default_factory=dict)
    error: str = ""


# --- encoding ---------------------------------------------------------------------------

def header(kind_name: str) -> bytes:
    return bytes([VERSION]) + kind_name.encode("ascii")


_HEADERS = {name: header(name) for name in _KINDS}
_FIELDS = {name: dataclasses.fields(cls) for name, cls in _KINDS.items()}


def encode(msg: Message, request_id: bytes) -> list[bytes]:
    body = {f.name: getattr(msg, f.name) for f in _FIELDS[msg.kind]}
    return [_HEADERS[msg.kind], request_id, msgpack.packb(body, use_bin_type=True)]


def decode(frames: list[bytes]) -> tuple[Message, bytes]:
    """Decode ``[header, request_id, body]`` into (message, request_id)."""
    if len(frames) != 3:
        raise WireError(f"expected 3 frames (header, request_id, body), got {len(frames)}")
    head, request_id, body = frames
    if not head:
        raise WireError("empty header frame")
    if head[0] != VERSION:
        raise WireError(f"unsupported wire version {head[0]} (this side speaks {VERSION})")
    try:
        name = head[1:].decode("ascii")
    except UnicodeDecodeError:
        raise WireError("message kind is not ASCII") from None
    cls = _KINDS.get(name)
    if cls is None:
        raise WireError(f"unknown message kind {name!r}")
    try:
        values = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise WireError(f"{name}: body is not valid msgpack ({exc.__class__.__name__})") from None
    if not isinstance(values, dict):
        raise WireError(f"{name}: body must be a map, got {type(values).__name__}")
    kwargs = {}
    for f in _FIELDS[name]:
        if f.name in values:
            value = values[f.name]
            _check_type(name, f, value)
            kwargs[f.name] = value
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise WireError(f"{name}: missing field {f.name!r}")
    return cls(**kwargs), bytes(request_id)


_SIMPLE = {str: str, int: int, float: (int, float), bool: bool, list: list, dict: dict, bytes: bytes}


def _allowed_types(annotation: Any) -> tuple:
    if isinstance(annotation, str):
        annotation = eval(annotation, {"Any": Any})  # annotations are postponed strings
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        out: tuple = ()
        for arg in typing.get_args(annotation):
            out += _allowed_types(arg)
        return out
    if annotation is type(None) or annotation is None:
        return (type(None),)
    base = origin or annotation
    allowed = _SIMPLE.get(base, object)
    return allowed if isinstance(allowed, tuple) else (allowed,)


_TYPE_CACHE: dict[tuple[str, str], tuple] = {}


def _check_type(kind_name: str, f: dataclasses.Field, value: Any) -> None:
    key = (kind_name, f.name)
    allowed = _TYPE_CACHE.get(key)
    if allowed is None:
        allowed = _TYPE_CACHE[key] = _allowed_types(f.type)
    if bool in allowed or not isinstance(value, bool) or int not in allowed:
        ok = isinstance(value, allowed)
    else:
        ok = False  # a bool is an int in Python, but not on our wire
    if not ok:
        names = "/".join(t.__name__ for t in allowed)
        raise WireError(f"{kind_name}.{f.name}: expected {names}, got {type(value).__name__}")


def kinds() -> list[str]:
    return sorted(_KINDS)
