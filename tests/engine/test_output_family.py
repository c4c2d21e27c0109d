"""choose_family: from chat-template markers, the model type, or an override."""

from __future__ import annotations

import pytest

from anyclaude.services.engine.parsing.output import FAMILIES, OutputParser, choose_family

QWEN25 = """{%- if tools %}
    {{- "\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- endif %}
{%- for tool_call in message.tool_calls %}{{- '<tool_call>\\n{"name": "' }}{{- tool_call.name }}{%- endfor %}"""

QWEN3 = QWEN25 + """{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"""

QWEN3_CODER = """{%- for tool_call in message.tool_calls %}
    {{- '\\n<tool_call>\\n<function=' + tool_call.name + '>\\n' }}
    {%- for args_name, args_value in tool_call.arguments|items %}
        {{- '<parameter=' + args_name + '>\\n' }}{{- args_value }}{{- '\\n</parameter>\\n' }}
    {%- endfor %}
    {{- '</function>\\n</tool_call>' }}
{%- endfor %}"""

MISTRAL = """{%- if tools is not none and (message == user_messages[-1]) %}{{- "[AVAILABLE_TOOLS] [" }}{%- endif %}
{%- elif message.tool_calls is defined and message.tool_calls is not none %}{{- "[TOOL_CALLS] [" }}{%- endif %}"""

MISTRAL_V11 = """{%- for tool in message.tool_calls %}{{- '[TOOL_CALLS]' + tool.function.name + '[ARGS]' + tool.function.arguments|tojson }}{%- endfor %}"""

LLAMA31 = """{{- "<|start_header_id|>assistant<|end_header_id|>\\n\\n" -}}
{%- if builtin_tools is defined and tool_call.name in builtin_tools %}{{- "<|python_tag|>" + tool_call.name + ".call(" }}
{%- else %}{{- '{"name": "' + tool_call.name + '", ' }}{{- '"parameters": ' }}{{- tool_call.arguments | tojson }}{{- "}" }}{%- endif %}"""

LLAMA32_NO_PYTHON_TAG = """{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}{{- '{"name": "' + tool_call.name + '", ' }}{{- '"parameters": ' }}"""

GEMMA = """{{ bos_token }}{% for message in messages %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"""


@pytest.mark.parametrize("template,family", [
    (QWEN25, "hermes"), (QWEN3, "hermes"), (QWEN3_CODER, "qwen3_coder"), (MISTRAL, "mistral"),
    (MISTRAL_V11, "mistral"), (LLAMA31, "llama3"), (LLAMA32_NO_PYTHON_TAG, "llama3"), (GEMMA, "none"),
])
def test_family_from_template_markers(template, family):
    assert choose_family(template, None, None) == family
    assert choose_family(template, None, "auto") == family


def test_template_wins_over_model_type():
    assert choose_family(QWEN3_CODER, "qwen3_moe", None) == "qwen3_coder"
    assert choose_family(QWEN25, "llama", None) == "hermes"   # Hermes-3 on a Llama base


@pytest.mark.parametrize("model_type,family", [
    ("qwen2", "hermes"), ("qwen3", "hermes"), ("qwen3_moe", "hermes"), ("mistral", "mistral"),
    ("mixtral", "mistral"), ("llama", "llama3"), ("gemma3", "none"), (None, "none"), ("", "none"),
])
def test_family_from_model_type_without_template(model_type, family):
    assert choose_family(None, model_type, None) == family
    assert choose_family(GEMMA, model_type, None) == family


def test_template_given_as_named_templates():
    assert choose_family({"default": GEMMA, "tool_use": QWEN25}, None, None) == "hermes"
    assert choose_family([{"name": "tool_use", "template": MISTRAL_V11}], None, None) == "mistral"


@pytest.mark.parametrize("family", FAMILIES)
def test_override_wins(family):
    assert choose_family(QWEN25, "qwen2", family) == family
    assert choose_family(None, None, family.upper()) == family


@pytest.mark.parametrize("bad", ["harmony", "json", "hermes2", "qwen3-coder"])
def test_unknown_override_names_the_allowed_values(bad):
    with pytest.raises(ValueError) as err:
        choose_family(QWEN25, None, bad)
    message = str(err.value)
    assert repr(bad) in message
    for family in ("auto",) + FAMILIES:
        assert family in message


def test_parser_rejects_unknown_family():
    with pytest.raises(ValueError, match="hermes"):
        OutputParser(family="harmony", tools=[], thinking=False)


# Small template strings with the markers each family's real chat template renders (mlx-lm
# reads the same markers, tokenizer_utils._infer_tool_parser).
NEW_FAMILY_TEMPLATES = [
    ("{{- '<minimax:tool_call>\\n<invoke name=\"' + tc.name + '\">' }}", "minimax_m2"),
    ("{{- '<|tool_call>call:' + tc.name + '{' }}{{- '}<tool_call|>' }}", "gemma4"),
    ("{{- '<start_function_call>call:' + tc.name }}", "function_gemma"),
    ("{{- '<longcat_tool_call>' + tc.name }}", "longcat"),
    ("{{- '<tool_call>' + tc.name }}{{- '<arg_key>' + k + '</arg_key>' }}", "glm47"),
    ("{{- '<|tool_list_start|>' + tools|tojson + '<|tool_list_end|>' }}", "pythonic"),
    ("{{- '<|tool_call_start|>[' + tc.name + '(' }}", "pythonic"),
    ("{{- '<|tool_calls_section_begin|>' }}", "kimi_k2"),
    ("{{- '<|open|>tools<|sep|>' }}", "kimi_k3"),
    ("{{- '<function name=\"' + tc.name + '\">' }}{{- '<param name=\"' + k + '\">' }}", "minicpm5"),
    ("{{- '<atem:function_calls>' }}", "muse_spark"),
    ("{{- '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tc.type + '<｜tool▁sep｜>' }}", "deepseek"),
]


@pytest.mark.parametrize("template,family", NEW_FAMILY_TEMPLATES)
def test_new_family_from_template_markers(template, family):
    assert choose_family(template, None, None) == family


def test_tokenizer_config_tool_parser_type_wins_over_the_template():
    assert choose_family(QWEN25, "qwen2", None, {"tool_parser_type": "qwen3_coder"}) == "qwen3_coder"
    assert choose_family(QWEN25, "qwen2", "hermes", {"tool_parser_type": "glm47"}) == "hermes"
    with pytest.raises(ValueError, match="harmony"):
        choose_family(QWEN25, None, None, {"tool_parser_type": "harmony"})


@pytest.mark.parametrize("alias,family", [("json_tools", "hermes"), ("laguna", "glm47")])
def test_mlx_lm_names_for_our_readers(alias, family):
    assert choose_family(None, None, alias) == family
    assert choose_family(None, None, None, {"tool_parser_type": alias}) == family
    assert OutputParser(family=alias, tools=[], thinking=False).family == family


@pytest.mark.parametrize("model_type,family", [("llama4", "pythonic"), ("deepseek_v3", "deepseek")])
def test_new_family_from_model_type(model_type, family):
    assert choose_family(None, model_type, None) == family


def test_config_allows_every_family():
    from anyclaude.config import _ALLOWED
    from anyclaude.services.engine.parsing.toolcall_scan import KNOWN_FAMILIES
    assert set(_ALLOWED[("models", "tool_parser")]) == {"auto", *KNOWN_FAMILIES}


def test_declared_family_reads_the_model_tokenizer_config(tmp_path):
    from anyclaude.services.engine.parsing.output import declared_family
    assert declared_family(tmp_path) == {}
    (tmp_path / "tokenizer_config.json").write_text('{"tool_parser_type": "kimi_k2", "x": 1}')
    assert choose_family(QWEN25, "qwen2", None, declared_family(tmp_path)) == "kimi_k2"
    (tmp_path / "tokenizer_config.json").write_text("not json")
    assert declared_family(tmp_path) == {}


def test_family_from_vocabulary_when_the_template_names_no_markers():
    lfm = {"<|im_start|>": 1, "<|tool_call_start|>": 2, "<|tool_call_end|>": 3}
    assert choose_family(GEMMA, "lfm2", None, {}, lfm) == "pythonic"
    xtml = {t: i for i, t in enumerate(("<|open|>", "<|close|>", "<|sep|>", "<|end_of_msg|>"))}
    assert choose_family(None, None, None, {}, xtml) == "kimi_k3"
    assert choose_family(QWEN25, None, None, {}, lfm) == "hermes"   # the template decides first
