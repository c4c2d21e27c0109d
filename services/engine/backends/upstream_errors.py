"""Upstream HTTP errors -> the anyclaude error hierarchy (shared by the openai and anthropic
backends), so Claude Code reacts the way it would to the real API:

    400/422 -> invalid_request (a context overflow becomes the exact prompt_too_long form)
    401 -> authentication, 403 -> permission (both name the model's api_key_env)
    404 -> not_found      408/504 -> timeout (retryable)      413 -> request_too_large
    429 -> rate_limit with the upstream's retry-after (retryable)
    500 and other 5xx -> engine (retryable)      502/503/529, refused -> overloaded (retryable)
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import re
import time

from anyclaude import errors, messages


RateLimited = errors.RateLimited
PermissionDenied = errors.PermissionDenied

_ERROR_FIELDS = {f.name for f in dataclasses.fields(messages.Error)}


def to_wire(exc: errors.AnyclaudeError, *, retryable: bool | None = None) -> messages.Error:
    """A messages.Error for ``exc``; carries retry_after where the schema has the field, and
    names the wait in the text either way (``retry after N s``)."""
    flag = exc.retryable if retryable is None else retryable
    extra = {}
    wait = getattr(exc, "retry_after", None)
    if wait is not None and "retry_after" in _ERROR_FIELDS:
        extra["retry_after"] = float(wait)
    return messages.Error(exc.type, exc.message, flag, **extra)


def retry_after(headers: dict, default: float = 1.0) -> float:
    """Seconds to wait from retry-after-ms / retry-after (seconds or an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(float(value) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            return max(float(value), 0.0)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value) if value.strip() else None
            if when is not None:
                return max(when.timestamp() - time.time(), 0.0)
    return default


def error_detail(body: bytes) -> tuple[str, dict]:
    """(message text, the error object) from an error body of any common shape."""
    text = body.decode("utf-8", "replace").strip()
    try:
        payload = json.loads(text)
    except ValueError:
        return text[:1000] or "(empty body)", {}
    obj: dict = {}
    if isinstance(payload, dict):
        inner = payload.get("error", payload)
        if isinstance(inner, dict):
            obj = inner
            message = inner.get("message") or inner.get("detail") or payload.get("detail")
        else:
            message = inner if isinstance(inner, str) else payload.get("message") or payload.get("detail")
        if not isinstance(message, str):
            message = json.dumps(message if message is not None else payload)[:1000]
        return message[:1000], obj
    return text[:1000], obj


# --- context overflow -------------------------------------------------------------------

_CONTEXT_HINTS = re.compile(
    r"context[ _-]?(length|size|window|limit)|maximum context|prompt is too long|too many tokens"
    r"|exceed_context_size|longer than the model|input is too long|reduce the length", re.I)
_MAXIMUM = [
    re.compile(r"maximum context length is (\d+)", re.I),
    re.compile(r"context length of (?:only )?(\d+)", re.I),
    re.compile(r"model's context length \((\d+)", re.I),
    re.compile(r"> (\d+) maximum", re.I),
    re.compile(r"context (?:size|window|limit)(?: is| of)? (\d+)", re.I),
]
_PROMPT = [
    re.compile(r"(\d+) in the messages", re.I),
    re.compile(r"(\d+) of text input", re.I),
    re.compile(r"(?:messages resulted in|request has|prompt (?:has|contains|is)) (\d+)(?: input)? tokens",
               re.I),
    re.compile(r"input \((\d+) tokens\)", re.I),
    re.compile(r"prompt is too long: (\d+)", re.I),
    re.compile(r"(?:requested|request of) (?:about )?(\d+) tokens", re.I),
]
_COMPLETION = re.compile(r"(\d+) in the completion", re.I)


@dataclasses.dataclass(frozen=True)
class Overflow:
    prompt: int | None       # prompt tokens, when the server said
    maximum: int | None      # the server's context window, when it said
    completion: int | None   # the max_tokens part, when the server counted it in


def context_overflow(text: str, obj: dict) -> Overflow | None:
    """The numbers of a context-length error, or None when the error is something else."""
    if obj.get("type") == "exceed_context_size_error" or "n_ctx" in obj:   # llama.cpp
        return Overflow(_int(obj.get("n_prompt_tokens")), _int(obj.get("n_ctx")), None)
    if not _CONTEXT_HINTS.search(text):
        return None
    maximum = next((int(m.group(1)) for r in _MAXIMUM if (m := r.search(text))), None)
    prompt = next((int(m.group(1)) for r in _PROMPT if (m := r.search(text))), None)
    completion = _COMPLETION.search(text)
    return Overflow(prompt, maximum, int(completion.group(1)) if completion else None)


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def complains_about(text: str, field: str) -> bool:
    """A 400 that names ``field`` as unsupported / unknown / not allowed."""
    return field in text and bool(re.search(r"unsupported|not supported|unknown|unrecognized|"
                                            r"not allowed|extra|invalid|use '?max_completion", text, re.I))


# --- status -> error --------------------------------------------------------------------

def from_status(status: int, headers: dict, body: bytes, *, model_id: str, url: str,
                key_env: str) -> errors.AnyclaudeError:
    text, _ = error_detail(body)
    where = f"upstream {url} (model {model_id})"
    key_hint = (f"the key in ${key_env}" if key_env
                else f"no key (set models.{model_id}.api_key_env to the variable holding one)")
    if status in (400, 422):
        return errors.InvalidRequest(f"{where} rejected the request: {text}")
    if status == 401:
        return errors.AuthenticationFailed(f"{where} refused {key_hint} (401): {text}")
    if status == 403:
        return PermissionDenied(f"{where} does not allow {key_hint} to do this (403): {text}")
    if status == 404:
        return errors.NotFound(f"{where} answered 404: {text}; check models.{model_id}.base_url "
                               f"and models.{model_id}.path (the upstream model name)")
    if status == 413:
        return errors.RequestTooLarge(f"{where}: request too large (413): {text}")
    if status == 429:
        wait = retry_after(headers, 5.0)
        return RateLimited(f"{where} is rate limiting (429), retry after {wait:g} s: {text}",
                           retry_after=wait)
    if status in (408, 504):
        return errors.Timeout(f"{where} timed out ({status}): {text}")
    if status in (502, 503, 529):
        wait = retry_after(headers, 2.0)
        return errors.Overloaded(f"{where} is unavailable ({status}), retry after {wait:g} s: {text}",
                                 retry_after=wait)
    if status >= 500:
        return errors.EngineFailed(f"{where} failed ({status}): {text}", retryable=True)
    return errors.EngineFailed(f"{where} answered HTTP {status}: {text}", retryable=False)


def unreachable(detail: str, *, model_id: str) -> errors.AnyclaudeError:
    return errors.Overloaded(f"model {model_id}: {detail}", retry_after=2.0)
