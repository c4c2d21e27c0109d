"""The error envelope of ``generate``, shared by the MLX core and the upstream cores.

``run_generate(emit, produce, ...)`` runs ``produce(send) -> Done`` and makes sure the
caller gets exactly one Done or Error after whatever ``produce`` sent: a cancel is reported
as the "cancelled" error, an AnyclaudeError as ``to_error`` makes it, anything else as an
"engine" error, retryable only while no Delta has gone out (the client saw nothing yet).
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from anyclaude import errors
from anyclaude.messages import Delta, Done, Error

log = structlog.get_logger()


def as_raised(exc: errors.AnyclaudeError, sent: bool) -> Error:
    return Error(exc.type, exc.message, exc.retryable)


def run_generate(emit: Callable, produce: Callable[[Callable], Done], *, model_id: str,
                 cancelled: type[BaseException] = errors.Cancelled,
                 to_error: Callable[[errors.AnyclaudeError, bool], Error] = as_raised) -> None:
    """``cancelled``: the exception ``produce`` raises on a cancel; ``to_error(exc, sent)``:
    the Error for an AnyclaudeError, ``sent`` telling whether a Delta went out."""
    sent = False

    def send(msg) -> None:
        nonlocal sent
        if isinstance(msg, Delta):
            sent = True
        emit(msg)

    try:
        send(produce(send))
    except cancelled:
        log.info("engine.generate.cancelled", model=model_id)
        send(Error("cancelled", "request cancelled", False))
    except errors.AnyclaudeError as exc:
        send(to_error(exc, sent))
    except Exception as exc:
        log.exception("engine.generate.failed", model=model_id)
        # Safe to retry only while nothing has reached the client.
        send(Error("engine", f"engine failure: {exc.__class__.__name__}: {exc}", not sent))
