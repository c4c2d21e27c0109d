"""Upstream error shapes, retry-after, context-overflow numbers, and configuration errors."""

from __future__ import annotations

import pytest

from anyclaude.errors import ConfigError
from anyclaude.services.engine.backends import upstream_errors as uerr
from anyclaude.services.engine.backends.backend_anthropic import AnthropicCore
from anyclaude.services.engine.backends.backend_openai import OpenAICore
from anyclaude.services.engine.backends.upstream_http import SSEReader, parse_base_url

from .conftest import model_config


@pytest.mark.parametrize("headers, expected", [
    ({"retry-after": "7"}, 7.0), ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
    ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0), ({}, 3.0)])
def test_retry_after(headers, expected):
    assert uerr.retry_after(headers, 3.0) == expected


@pytest.mark.parametrize("body, message", [
    (b'{"error": {"message": "m1", "type": "x"}}', "m1"), (b'{"error": "m2"}', "m2"),
    (b'{"detail": "m3"}', "m3"), (b'{"message": "m4"}', "m4"), (b"plain text", "plain text"),
    (b"", "(empty body)")])
def test_error_detail_reads_every_common_shape(body, message):
    assert uerr.error_detail(body)[0] == message


@pytest.mark.parametrize("text, prompt, maximum", [
    ("'max_tokens' or 'max_completion_tokens' is too large: 4000. This model's maximum context "
     "length is 4096 tokens and your request has 1000 input tokens (4000 > 4096 - 1000).", 1000, 4096),
    ("The input (5000 tokens) is longer than the model's context length (4096 tokens).", 5000, 4096),
    ("This endpoint's maximum context length is 131072 tokens. However, you requested about 150000 "
     "tokens (140000 of text input, 10000 in the output). Please reduce the length.", 140000, 131072),
    ("prompt is too long: 210000 tokens > 200000 maximum", 210000, 200000),
])
def test_context_overflow_numbers(text, prompt, maximum):
    overflow = uerr.context_overflow(text, {})
    assert (overflow.prompt, overflow.maximum) == (prompt, maximum)


def test_other_errors_are_not_overflows():
    assert uerr.context_overflow("invalid tool schema", {}) is None
    assert uerr.context_overflow("bad", {"type": "exceed_context_size_error", "n_prompt_tokens": 9,
                                        "n_ctx": 8}) == uerr.Overflow(9, 8, None)


@pytest.mark.parametrize("status, kind, retryable", [
    (400, "invalid_request", False), (401, "authentication", False), (403, "permission", False),
    (404, "not_found", False), (413, "request_too_large", False), (429, "rate_limit", True),
    (500, "engine", True), (502, "overloaded", True), (503, "overloaded", True),
    (504, "timeout", True), (418, "engine", False)])
def test_status_mapping(status, kind, retryable):
    error = uerr.from_status(status, {}, b'{"error": "x"}', model_id="m", url="http://u", key_env="K")
    assert (error.type, error.retryable) == (kind, retryable)


def test_sse_reader_handles_comments_events_and_multiline_data():
    reader = SSEReader()
    out = []
    for line in [b": keepalive 1/2\n", b"event: message_start\n", b"data: {\"a\":\n", b"data: 1}\n", b"\n",
                 b"data:[DONE]\r\n", b"\r\n"]:
        out += reader.feed(line)
    assert out == [("comment", "keepalive 1/2"), ("message_start", '{"a":\n1}'), ("message", "[DONE]")]


@pytest.mark.parametrize("url, problem", [
    ("localhost:8080", "http:// or https://"), ("ftp://x", "http:// or https://"),
    ("http://u:p@host/v1", "credentials"), ("http://host:port/v1", "port")])
def test_bad_base_urls_are_named(url, problem):
    with pytest.raises(ConfigError, match=problem):
        parse_base_url(url, "models.x.base_url")


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="models.up.base_url is required"):
        OpenAICore("up", model_config(kind="openai"))
    with pytest.raises(ConfigError, match="max_tokens_field"):
        OpenAICore("up", model_config(kind="openai", base_url="http://h/v1", max_tokens_field="tokens"))
    with pytest.raises(ConfigError, match="base_urls must be a list"):
        AnthropicCore("c", model_config(kind="anthropic", base_urls=(5,)))


def test_base_url_paths_are_normalised():
    openai = OpenAICore("up", model_config(kind="openai", base_urls=("http://a:1", "http://b:2/v1",
                                                                    "https://c/api/v1")))
    assert [u.target("/chat/completions") for u in openai.upstreams.values()] == [
        "/v1/chat/completions", "/v1/chat/completions", "/api/v1/chat/completions"]
    anthropic = AnthropicCore("c", model_config(kind="anthropic", base_urls=("https://api.x.com",
                                                                            "https://y/v1")))
    assert [u.target("/v1/messages") for u in anthropic.upstreams.values()] == ["/v1/messages"] * 2
