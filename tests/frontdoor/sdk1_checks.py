"""Run by test_frontdoor_sdk1.py in a subprocess with PYTHONPATH=.cache/sdk1 (anthropic 1.x).

Usage: python sdk1_checks.py BASE_URL API_KEY  -> prints one JSON object of observations.
"""

import json
import sys

import anthropic

MODEL = "claude-opus-4-7"
TOOLS = [{"name": "get_weather", "description": "Weather",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]


def user(text):
    return [{"role": "user", "content": text}]


def main(base_url: str, api_key: str) -> dict:
    client = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)
    out = {"version": anthropic.__version__}
    created = client.messages.create(model=MODEL, max_tokens=50, messages=user("hello"))
    out["create"] = {"text": created.content[0].text, "model": created.model,
                     "stop_reason": created.stop_reason, "input_tokens": created.usage.input_tokens}
    with client.messages.stream(model=MODEL, max_tokens=50, messages=user("fake:text x y")) as s:
        out["stream_text"] = s.get_final_message().content[0].text
    with client.messages.stream(model=MODEL, max_tokens=50, tools=TOOLS,
                                messages=user('fake:tool get_weather {"city": "Lima"}')) as s:
        final = s.get_final_message()
        out["stream_tool"] = {"input": final.content[1].input, "stop_reason": final.stop_reason}
    with client.messages.stream(model=MODEL, max_tokens=50, messages=user("fake:thinking"),
                                thinking={"type": "enabled", "budget_tokens": 1024}) as s:
        final = s.get_final_message()
        out["stream_thinking"] = [b.type for b in final.content]
    out["count"] = client.messages.count_tokens(model=MODEL, messages=user("hello")).input_tokens
    out["models"] = [m.id for m in client.models.list().data]
    try:
        client.messages.create(model="gpt-4o", max_tokens=5, messages=user("hi"))
    except anthropic.NotFoundError as exc:
        out["not_found"] = exc.body["error"]["message"]
    try:
        with client.messages.stream(model=MODEL, max_tokens=5, messages=user("fake:error_mid")) as s:
            for _ in s:
                pass
    except anthropic.APIStatusError as exc:
        out["midstream_error"] = exc.body["error"]["type"]
    try:
        anthropic.Anthropic(base_url=base_url, api_key="wrong", max_retries=0).messages.create(
            model=MODEL, max_tokens=5, messages=user("hi"))
    except anthropic.AuthenticationError as exc:
        out["bad_key"] = exc.status_code
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
