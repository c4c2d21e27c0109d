"""The waitress server for the app, with waitress's own errors in the Anthropic format.

waitress answers some requests without calling the app (a body over its size limit,
malformed HTTP, an app crash before headers): those answers get the Anthropic error body
too, so an SDK always finds ``{"type":"error","error":{...}}``.
"""

from __future__ import annotations

import json
import uuid

import waitress
from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from anyclaude.config import Settings

from .sse import error_body, error_type_for

class AnthropicErrorTask(ErrorTask):
    def execute(self):
        error = self.request.error
        code = int(error.code)
        kind = "request_too_large" if code == 431 else error_type_for(code)
        request_id = "req_" + uuid.uuid4().hex[:24]
        message = f"{error.reason}: {error.body}"
        if code == 413:
            limit = getattr(self.channel.server, "anyclaude_body_limit", None)
            message = "request body is too large" + (
                f"; the limit is {limit} bytes (server.max_body_mb)" if limit else "")
        body = json.dumps(error_body(kind, message, request_id)).encode()
        self.status = f"{code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"),
                                      ("request-id", request_id),
                                      ("x-should-retry", "false" if code < 500 else "true")])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class AnthropicChannel(HTTPChannel):
    error_task_class = AnthropicErrorTask


def make_server(app, settings: Settings, *, host: str | None = None, port: int | None = None,
                **adjustments):
    """A bound (listening) waitress server; call ``.run()`` to serve.

    The app enforces the body cap itself (server.max_body_mb -> 413 with the Anthropic
    body, after reading the request). waitress's own cap sits well above it, so only an
    absurd body is cut off by waitress - and then still answered in the Anthropic format.
    """
    cap = settings.server.max_body_mb * 1024 * 1024
    options = dict(
        host=settings.server.host if host is None else host,
        port=settings.server.port if port is None else port,
        threads=settings.server.threads,
        channel_request_lookahead=1,      # read the socket during a request: see disconnects
        max_request_body_size=2 * cap + 1024 * 1024,
        outbuf_high_watermark=1024 * 1024,  # a stalled client blocks writes early (bounded)
        ident="anyclaude",
        clear_untrusted_proxy_headers=True,
    )
    options.update(adjustments)
    server = waitress.create_server(app, **options)
    server.channel_class = AnthropicChannel
    server.anyclaude_body_limit = cap
    return server
