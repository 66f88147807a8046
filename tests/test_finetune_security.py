"""A checkpoint is data and a model folder is weights: neither runs code, and neither is asked about.

Every command here gets "y" on stdin (click's CliRunner input): a prompt such as transformers' "Do you wish to
run the custom code? [y/N]" would be answered yes, so an absent marker file proves nothing was asked or run.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from click.testing import CliRunner  # noqa: E402

from curator.cli import cli  # noqa: E402
from curator.errors import CurateError  # noqa: E402
from finetune import train as train_module  # noqa: E402
from finetune.config import TrainConfig  # noqa: E402
from finetune.modeling import load_base_model  # noqa: E402
from tests.finetune_support import (  # noqa: E402
    chat_tokenizer,
    one_torch_thread,
    real_records,
    save_tiny_mistral,
    tiny_train_settings,
    write_curated_folder,
)

NO_CODE = "curator never runs code from a model folder"


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("security")
    model = save_tiny_mistral(root / "tiny-mistral")
    train = real_records("llamafactory_identity.jsonl", 4)
    val = real_records("llamafactory_identity.jsonl", 2, start=40)
    curated = write_curated_folder(root / "out", train, val)
    config = root / "train.yaml"
    config.write_text(yaml.safe_dump(tiny_train_settings(model, context_length=256)))
    return {"root": root, "model": model, "curated": curated, "config": config}


def invoke(*args: str):
    """The CLI with "y" on stdin for any prompt."""
    return CliRunner().invoke(cli, list(args), input="y\n")


class WritesMarker:
    """Pickles as a call that creates `marker`: what a crafted checkpoint runs when unpickled unsafely."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


# --- checkpoints --------------------------------------------------------------------------------------------


def test_resume_refuses_a_checkpoint_whose_pickle_would_run_code(workspace, tmp_path):
    marker = tmp_path / "ran"
    checkpoint = tmp_path / "adapter" / "checkpoints" / "step-0000001"
    checkpoint.mkdir(parents=True)
    torch.save({"format": 2, "optimizer": WritesMarker(marker)}, checkpoint / "trainer_state.pt")
    result = invoke("train", str(workspace["curated"]), "--output", str(tmp_path / "adapter"),
                    "--config", str(workspace["config"]), "--resume", "-q")
    assert not marker.exists()
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: {checkpoint / 'trainer_state.pt'}: holds objects other than tensors and plain values (an older "
        "curator's checkpoint, or not one) and is not loaded, as unpickling them could run code; train into "
        "another --output, or --overwrite to start over\n"
    )


def test_a_checkpoint_of_the_older_layout_is_refused_not_loaded_unsafely(tmp_path):
    # the first layout pickled numpy's RNG state (an ndarray), which weights_only does not load
    torch.save({"rng": {"numpy": np.random.get_state(), "torch": torch.get_rng_state()}}, tmp_path / "trainer_state.pt")
    with pytest.raises(CurateError) as info:
        train_module.read_trainer_state(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'trainer_state.pt'}: holds objects other than tensors")
    torch.save({"rng": {}}, tmp_path / "trainer_state.pt")  # loads safely, but is no trainer state of this layout
    with pytest.raises(CurateError, match=r"trainer_state.pt: not a trainer state of format 2; train into another"):
        train_module.read_trainer_state(tmp_path)


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # each leaves a cached Gaussian, part of the state too
    np.random.standard_normal()
    torch.save({"rng": train_module._rng_state()}, tmp_path / "rng.pt")
    expected = (random.random(), random.gauss(0, 1), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    train_module._set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    got = (random.random(), random.gauss(0, 1), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    assert got == expected


def test_cuda_rng_states_are_restored_for_the_devices_present_only(monkeypatch):
    # a checkpoint from a 2-GPU host resumed on a 1-GPU host: device 1's state has nowhere to go
    state = {**train_module._rng_state(), "cuda": ["device-0 state", "device-1 state"]}
    restored = []

    def set_rng_state(state, device):
        if device >= 1:
            raise RuntimeError("CUDA error: invalid device ordinal")
        restored.append((state, device))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", set_rng_state)
    train_module._set_rng_state(state)
    assert restored == [("device-0 state", 0)]


def test_a_checkpoint_loads_with_weights_only(workspace, tmp_path):
    settings = tiny_train_settings(workspace["model"], context_length=256, max_steps=1, save_every_steps=1)
    settings["eval"] = {"every_steps": 1, "bleu_samples": 0, "compare_sheet_samples": 0,
                        "early_stopping_patience": 3}  # the best adapter's weights are in the file too
    folder = workspace["curated"]
    splits = [train_module.prepare_split(folder / f"{name}.jsonl", chat_tokenizer(), 256) for name in ("train", "val")]
    train_module.run_training(TrainConfig.model_validate(settings), *splits, chat_tokenizer(), tmp_path, show_progress=False)
    saved = torch.load(tmp_path / "checkpoints" / "step-0000001" / "trainer_state.pt", weights_only=True)
    assert saved["format"] == 2 and saved["state"]["step"] == 1 and saved["best"]
    assert saved["optimizer"]["state"] and saved["scheduler"]["last_epoch"] == 1


# --- model folders ------------------------------------------------------------------------------------------


def code_folder(folder, marker, model_type="evil-lm", tokenizer_auto_map=False):
    """A model folder whose config.json maps to Python files of its own that create `marker` when imported."""
    folder.mkdir(parents=True, exist_ok=True)
    code = f"open({str(marker)!r}, 'w').close()\n"
    (folder / "configuration_evil.py").write_text(
        code + "from transformers import PretrainedConfig\n\n\nclass EvilConfig(PretrainedConfig):\n"
        f"    model_type = {model_type!r}\n"
    )
    (folder / "modeling_evil.py").write_text(code)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    config.update({"model_type": model_type, "auto_map": {
        "AutoConfig": "configuration_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}})
    config_path.write_text(json.dumps(config))
    if tokenizer_auto_map:
        (folder / "tokenizer_config.json").write_text(json.dumps({
            "auto_map": {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]},
            "chat_template": "{{ messages }}", "model_max_length": 512, "bos_token": "<s>", "eos_token": "</s>"}))
        (folder / "tokenization_evil.py").write_text(code)
    return folder


def test_train_refuses_a_model_folder_that_needs_its_own_code(workspace, tmp_path):
    marker = tmp_path / "ran"
    evil = code_folder(tmp_path / "evil", marker)
    result = invoke("train", str(workspace["curated"]), "--output", str(tmp_path / "adapter"),
                    "--config", str(workspace["config"]), "--model", str(evil), "-q")
    assert not marker.exists()
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"error: {evil / 'config.json'}: needs its own Python code (auto_map); {NO_CODE}\n"


def test_train_refuses_a_model_type_transformers_does_not_know(workspace, tmp_path):
    folder = tmp_path / "unknown"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "not-a-model"}))
    result = invoke("train", str(workspace["curated"]), "--output", str(tmp_path / "adapter"),
                    "--config", str(workspace["config"]), "--model", str(folder), "-q")
    import transformers

    assert (result.exit_code, result.stderr) == (1, (
        f"error: {folder / 'config.json'}: model_type 'not-a-model' is unknown to transformers "
        f"{transformers.__version__}; {NO_CODE}\n"
    ))


def test_export_refuses_a_base_model_folder_that_needs_its_own_code(tmp_path):
    marker = tmp_path / "ran"
    evil = code_folder(tmp_path / "evil", marker)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(evil)}))
    result = invoke("export", str(adapter), "--merge", str(tmp_path / "merged"))
    assert not marker.exists() and not (tmp_path / "merged").exists()
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"error: {evil / 'config.json'}: needs its own Python code (auto_map); {NO_CODE}\n"


def test_run_refuses_a_tokenizer_folder_that_needs_its_own_code(tmp_path):
    from finetune.export import mistral_v1_tokenizer_json

    marker = tmp_path / "ran"
    folder = code_folder(tmp_path / "evil", marker, tokenizer_auto_map=True)
    mistral_v1_tokenizer_json().save(str(folder / "tokenizer.json"))  # a working tokenizer.json beside it
    raw = tmp_path / "raw.jsonl"
    raw.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}) + "\n")
    result = invoke("run", str(raw), str(tmp_path / "out"), "--model", str(folder), "--quiet")
    assert not marker.exists()
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"error: {folder / 'tokenizer_config.json'}: needs its own Python code (auto_map); {NO_CODE}\n"


def test_a_known_model_type_loads_with_transformers_own_class_and_ignores_auto_map(workspace, tmp_path):
    # an auto_map beside a model_type transformers ships (as some hub repos have) is not used: nothing runs
    import shutil

    from transformers import MistralForCausalLM

    marker = tmp_path / "ran"
    folder = shutil.copytree(workspace["model"], tmp_path / "mistral-with-auto-map")
    code_folder(folder, marker, model_type="mistral")
    model = load_base_model(str(folder), torch.float32, "sdpa", torch.device("cpu"))
    assert type(model) is MistralForCausalLM
    assert not marker.exists()


def test_a_cached_hub_model_is_checked_in_its_snapshot_folder(tmp_path, monkeypatch):
    # `--model owner/name` loads from the Hugging Face cache: its snapshot's config.json is what is checked
    from huggingface_hub import constants

    from finetune.modeling import refuse_folder_code

    snapshot = tmp_path / "hub" / "models--someone--evil-lm" / "snapshots" / "abc123"
    code_folder(snapshot, tmp_path / "ran")
    (tmp_path / "hub" / "models--someone--evil-lm" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--evil-lm" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(CurateError) as info:
        refuse_folder_code("someone/evil-lm")
    assert str(info.value) == f"{snapshot / 'config.json'}: needs its own Python code (auto_map); {NO_CODE}"
    refuse_folder_code("someone/not-cached")  # nothing on disk to check: from_pretrained says it is missing
