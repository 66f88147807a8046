"""finetune.config and the `curate train` command's cheap parts: defaults, overrides, errors, lazy imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from curator.errors import CurateError
from finetune.config import TrainConfig, default_yaml_config, load_train_config


def test_commented_default_yaml_equals_the_code_defaults():
    assert default_yaml_config() == TrainConfig()


def test_defaults_are_the_selection_guides_recipe():
    c = TrainConfig()
    assert (c.lora.r, c.lora.alpha, c.lora.dropout) == (16, 32, 0.05)
    assert c.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert (c.epochs, c.learning_rate, c.context_length, c.precision) == (3, 2e-5, None, "auto")  # None: the manifest's
    assert c.packing and c.gradient_checkpointing and c.seed == 0


def test_file_then_overrides(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("epochs: 1\nlora:\n  r: 8\n")
    config = load_train_config(path, ["lora.alpha=16", "eval.early_stopping_patience=2", "packing=false"])
    assert (config.epochs, config.lora.r, config.lora.alpha) == (1, 8, 16)
    assert config.eval.early_stopping_patience == 2 and config.packing is False
    assert config.lora.dropout == 0.05  # untouched keys keep their defaults


def test_errors_name_the_file_and_the_key(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("lora:\n  rank: 8\n")
    with pytest.raises(CurateError, match=r"train.yaml: lora.rank: Extra inputs are not permitted"):
        load_train_config(path)
    with pytest.raises(CurateError, match=r"^-s lora.r=0: Input should be greater than or equal to 1$"):  # as `run -s` says it
        load_train_config(None, ["lora.r=0"])
    with pytest.raises(CurateError, match=r"override 'epochs': expected key.sub=value"):
        load_train_config(None, ["epochs"])


def test_duplicate_keys_and_bad_override_values_are_one_line_errors(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("lora:\n  r: 8\nlora:\n  alpha: 16\n")
    with pytest.raises(CurateError, match=r"^.*train\.yaml:3: duplicate key 'lora' \(first on line 1\)$"):
        load_train_config(path)
    with pytest.raises(CurateError, match=r"^-s seed=\[: not valid YAML: "):
        load_train_config(None, ["seed=["])


def test_commands_module_imports_no_torch_or_transformers():
    code = "import sys, finetune.commands; print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_train_extra_names_the_install_command(monkeypatch):
    import importlib.util

    from finetune import commands

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    with pytest.raises(CurateError, match=r"pip install 'curator\[train\]' \(missing: peft\)"):
        commands.require_train_extra()
