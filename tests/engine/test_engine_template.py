"""Rendering internal requests through the tiny model's (Qwen3-style) chat template."""

from __future__ import annotations

import pytest
from engine_helpers import BASH_TOOL, make_request

from anyclaude.errors import InvalidRequest, UnsupportedContent
from anyclaude.prompt.blocks import merge_strict
from anyclaude.prompt.template import ChatRenderer, to_chat_messages


@pytest.fixture(scope="module")
def renderer(tiny_model_dir):
    from mlx_lm.utils import load_tokenizer
    return ChatRenderer(load_tokenizer(tiny_model_dir), model_id="tiny")


def text(role, value):
    return {"role": role, "content": [{"type": "text", "text": value}]}


def history():
    return make_request(
        system=["You are a coding agent.", "Be brief."],
        tools=[BASH_TOOL],
        thinking=True,
        messages=[
            text("user", "first question"),
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "OLD-REASONING"},
                {"type": "text", "text": "first answer"}]},
            text("system", "REMINDER: tests must pass"),
            text("user", "list the files"),
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "CURRENT-REASONING"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1",
                 "content": [{"type": "text", "text": "a.py\nb.py"}], "is_error": False},
                {"type": "tool_result", "tool_use_id": "toolu_2",
                 "content": [{"type": "text", "text": "permission denied"}], "is_error": True},
                {"type": "text", "text": "what next?"}]},
        ])


def test_history_renders_tools_calls_results_system_and_reasoning(renderer):
    out = renderer.render_prompt(history()).text
    assert out.startswith("<|im_start|>system\nYou are a coding agent.\n\nBe brief.\n\n# Tools")
    assert '"name": "Bash"' in out and '"description": "Run a shell command."' in out
    assert "<|im_start|>system\nREMINDER: tests must pass<|im_end|>" in out
    assert 'Let me look.\n<tool_call>\n{"name": "Bash", "arguments": {"command": "ls"}}\n</tool_call>' in out
    assert "<tool_response>\na.py\nb.py\n</tool_response>" in out
    assert "<tool_response>\nError: permission denied\n</tool_response>" in out
    assert "<|im_start|>user\nwhat next?<|im_end|>" in out
    # Qwen3: reasoning before the last real user query is dropped; the tool loop keeps it
    assert "OLD-REASONING" not in out
    assert "<think>\nCURRENT-REASONING\n</think>" not in out  # "what next?" is the last query
    assert out.endswith("<|im_start|>assistant\n")


def test_reasoning_of_the_current_tool_loop_is_kept(renderer):
    request = history()
    request["messages"][-1]["content"] = request["messages"][-1]["content"][:1]  # results only
    out = renderer.render_prompt(request).text
    assert "<think>\nCURRENT-REASONING\n</think>" in out
    assert "OLD-REASONING" not in out


def test_rendering_is_deterministic_and_ids_match_text(renderer):
    a, b = renderer.render_prompt(history()), renderer.render_prompt(history())
    assert a.ids == b.ids == renderer.render(history())
    assert renderer.tokenizer.decode(a.ids) == a.text


def test_thinking_flag_reaches_the_template(renderer):
    assert renderer.render_prompt(make_request(thinking=False)).text.endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert renderer.render_prompt(make_request(thinking=True)).text.endswith(
        "<|im_start|>assistant\n")


def test_tool_choice_none_renders_no_tools(renderer):
    out = renderer.render_prompt(make_request(tools=[BASH_TOOL], tool_choice={"type": "none"})).text
    assert "# Tools" not in out
    out = renderer.render_prompt(make_request(tools=[BASH_TOOL], tool_choice={"type": "any"})).text
    assert "# Tools" in out


def test_tool_call_arguments_stay_dicts(renderer):
    messages = to_chat_messages(history())
    calls = [m for m in messages if m.get("tool_calls")]
    assert calls[0]["tool_calls"][0]["function"]["arguments"] == {"command": "ls"}
    assert calls[0]["reasoning_content"] == "CURRENT-REASONING"


def test_text_documents_are_inlined_and_images_refused(renderer):
    request = make_request()
    request["messages"][0]["content"].append(
        {"type": "document", "media_type": "text/plain", "data": "DOC BODY"})
    assert "DOC BODY" in renderer.render_prompt(request).text
    for block in ({"type": "image", "media_type": "image/png", "data": "xx"},
                  {"type": "document", "media_type": "application/pdf", "data": "JVBER"}):
        bad = make_request()
        bad["messages"][0]["content"].append(block)
        with pytest.raises(UnsupportedContent, match="tiny"):
            renderer.render(bad)
    nested = make_request(messages=[{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "is_error": False,
         "content": [{"type": "image", "media_type": "image/png", "data": "xx"}]}]}])
    with pytest.raises(UnsupportedContent):
        renderer.render(nested)


def test_misplaced_blocks_and_roles_are_invalid(renderer):
    with pytest.raises(InvalidRequest):
        renderer.render(make_request(messages=[{"role": "bot", "content": []}]))
    with pytest.raises(InvalidRequest):
        renderer.render(make_request(messages=[{"role": "assistant", "content": [
            {"type": "tool_result", "tool_use_id": "x", "content": [], "is_error": False}]}]))


def test_redacted_thinking_is_dropped(renderer):
    request = make_request(messages=[
        text("user", "q"),
        {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "OPAQUE"},
                                          {"type": "text", "text": "a"}]},
        text("user", "q2")])
    assert "OPAQUE" not in renderer.render_prompt(request).text


def test_strict_templates_get_merged_turns():
    """A template that refuses system turns after the first and repeated roles."""
    from jinja2 import Environment
    from jinja2.exceptions import TemplateError

    env = Environment()

    def raise_exception(msg):
        raise TemplateError(msg)

    template = env.from_string(
        "{% for m in messages %}"
        "{% if m.role == 'system' and not loop.first %}{{ raise_exception('no system') }}{% endif %}"
        "{% if not loop.first and messages[loop.index0 - 1].role == m.role %}"
        "{{ raise_exception('roles must alternate') }}{% endif %}"
        "[{{ m.role }}]{{ m.content }}{% endfor %}[assistant]")

    class StrictTokenizer:
        def apply_chat_template(self, messages, tools=None, **kwargs):
            return template.render(messages=messages, raise_exception=raise_exception)

        def encode(self, s, add_special_tokens=False):
            return [ord(c) for c in s]

    request = make_request(system=["sys"], messages=[
        text("user", "one"), text("system", "reminder"), text("user", "two")])
    out = ChatRenderer(StrictTokenizer()).render_prompt(request).text
    assert out == "[system]sys[user]one\n\nreminder\n\ntwo[assistant]"


def test_merge_strict_keeps_tool_turns_apart():
    messages = [{"role": "system", "content": "s"},
                {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "x"}}]},
                {"role": "tool", "content": "r1"}, {"role": "tool", "content": "r2"},
                {"role": "system", "content": "later"}, {"role": "user", "content": "u"}]
    merged = merge_strict(messages)
    assert [m["role"] for m in merged] == ["system", "assistant", "tool", "tool", "user"]
    assert merged[-1]["content"] == "later\n\nu"


def test_a_template_that_renders_tools_is_told_apart_from_one_that_does_not(renderer):
    """SmolLM2's template has no place for tools: the engine warns at load when the probe
    renders the same text with and without a tool."""
    assert renderer.renders_tools() is True

    class NoToolsTokenizer:
        def apply_chat_template(self, messages, tools=None, **kwargs):
            return "".join(f"[{m['role']}]{m['content']}" for m in messages) + "[assistant]"

        def encode(self, s, add_special_tokens=False):
            return [ord(c) for c in s]

    assert ChatRenderer(NoToolsTokenizer()).renders_tools() is False
