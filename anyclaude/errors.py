"""One error hierarchy for every process, mapped to Anthropic errors in one place.

Services raise these (or send them as ``messages.Error(type, message, retryable)``); the
front door turns them into an HTTP status and the Anthropic error body via ``to_anthropic``.
"""

from __future__ import annotations


class AnyclaudeError(Exception):
    """Base class. ``type`` is the internal name that travels on the bus."""

    type = "internal"
    retryable = False

    def __init__(self, message: str, *, retryable: bool | None = None):
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable


class InvalidRequest(AnyclaudeError):
    type = "invalid_request"


class PromptTooLong(InvalidRequest):
    """Message must be exactly ``prompt is too long: N tokens > M maximum``."""
    type = "prompt_too_long"

    def __init__(self, tokens: int, maximum: int):
        super().__init__(f"prompt is too long: {tokens} tokens > {maximum} maximum")
        self.tokens, self.maximum = tokens, maximum


class UnsupportedContent(InvalidRequest):
    type = "unsupported_content"


class AuthenticationFailed(AnyclaudeError):
    type = "authentication"


class NotFound(AnyclaudeError):
    type = "not_found"


class RequestTooLarge(AnyclaudeError):
    type = "request_too_large"


class Overloaded(AnyclaudeError):
    """Queue full, breaker open, engine restarting: retry later."""
    type = "overloaded"
    retryable = True

    def __init__(self, message: str, *, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(AnyclaudeError):
    """An upstream server's own rate limit (remote backends)."""
    type = "rate_limit"
    retryable = True

    def __init__(self, message: str, *, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


class PermissionDenied(AnyclaudeError):
    type = "permission"


class Timeout(AnyclaudeError):
    type = "timeout"
    retryable = True


class ServiceUnavailable(AnyclaudeError):
    """A stage is down or did not answer (no Accepted): safe to retry elsewhere/later."""
    type = "unavailable"
    retryable = True


class EngineFailed(AnyclaudeError):
    """The engine failed while working on the request."""
    type = "engine"
    retryable = True


class Cancelled(AnyclaudeError):
    type = "cancelled"


class BadFrame(AnyclaudeError):
    """A peer sent something that is not a valid frame of our schema."""
    type = "bad_frame"


class ConfigError(AnyclaudeError):
    type = "config"


class ModelLoadError(ConfigError):
    """The configured model cannot be found, fetched, converted or loaded."""
    type = "config"


_BY_TYPE = {cls.type: cls for cls in (
    AnyclaudeError, InvalidRequest, PromptTooLong, UnsupportedContent, AuthenticationFailed,
    NotFound, RequestTooLarge, Overloaded, RateLimited, PermissionDenied, Timeout,
    ServiceUnavailable, EngineFailed,
    Cancelled, BadFrame, ConfigError)}

# internal type -> (HTTP status, Anthropic error.type)
_ANTHROPIC = {
    "invalid_request": (400, "invalid_request_error"),
    "prompt_too_long": (400, "invalid_request_error"),
    "unsupported_content": (400, "invalid_request_error"),
    "bad_frame": (500, "api_error"),
    "authentication": (401, "authentication_error"),
    "permission": (403, "permission_error"),
    "not_found": (404, "not_found_error"),
    "request_too_large": (413, "request_too_large"),
    "rate_limit": (429, "rate_limit_error"),
    "overloaded": (529, "overloaded_error"),
    "unavailable": (529, "overloaded_error"),
    "timeout": (504, "timeout_error"),
    "engine": (500, "api_error"),
    "cancelled": (499, "api_error"),
    "internal": (500, "api_error"),
    "config": (500, "api_error"),
}


def to_anthropic(error_type: str) -> tuple[int, str]:
    """(HTTP status, Anthropic error type) for an internal error type."""
    return _ANTHROPIC.get(error_type, (500, "api_error"))


def from_wire(error_type: str, message: str, retryable: bool = False,
              retry_after: float = 0.0) -> AnyclaudeError:
    """Rebuild an exception from a ``messages.Error``."""
    cls = _BY_TYPE.get(error_type, AnyclaudeError)
    if cls is PromptTooLong:
        exc = InvalidRequest(message)
        exc.type = "prompt_too_long"
        return exc
    if cls in (Overloaded, RateLimited):
        return cls(message, retry_after=retry_after or 1.0)
    exc = cls(message, retryable=retryable)
    if cls is AnyclaudeError:
        exc.type = error_type
    return exc
