"""`curate train` / `curate export` end to end on a tiny random Mistral, the real tokenizer and real records."""

from __future__ import annotations

import json
import math

import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from click.testing import CliRunner  # noqa: E402

from curator.cli import cli  # noqa: E402
from finetune.config import TrainConfig  # noqa: E402
from finetune.train import prepare_split, run_training  # noqa: E402
from tests.finetune_support import (  # noqa: E402
    chat_tokenizer,
    one_torch_thread,
    real_records,
    save_tiny_mistral,
    tiny_train_settings,
    write_curated_folder,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    model_dir = save_tiny_mistral(root / "tiny-mistral")
    train = real_records("llamafactory_identity.jsonl", 10) + real_records("fastchat_dummy_conversation.jsonl", 10)
    val = real_records("llamafactory_identity.jsonl", 3, start=40) + real_records("fastchat_dummy_conversation.jsonl", 3, start=40)
    curated = write_curated_folder(root / "out", train, val)
    config_path = root / "train.yaml"
    config_path.write_text(yaml.safe_dump(tiny_train_settings(model_dir, context_length=256)))
    return {"root": root, "model": model_dir, "curated": curated, "config": config_path, "train": train, "val": val}


@pytest.fixture(scope="module")
def trained(workspace):
    adapter = workspace["root"] / "adapter"
    result = CliRunner().invoke(
        cli, ["train", str(workspace["curated"]), "--output", str(adapter), "--config", str(workspace["config"]), "-q"]
    )
    assert result.exit_code == 0, result.output
    return adapter, result.output


def _metrics(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_train_writes_adapter_tokenizer_logs_checkpoints_and_sheet(trained):
    adapter, output = trained
    assert "trained 4/4 steps; val perplexity" in output
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.model", "tokenizer_config.json"):
        assert (adapter / name).is_file(), name
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    assert adapter_config["r"] == 16 and adapter_config["lora_alpha"] == 32 and adapter_config["lora_dropout"] == 0.05
    assert set(adapter_config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert "[INST]" in json.loads((adapter / "tokenizer_config.json").read_text())["chat_template"]
    metrics = _metrics(adapter)
    train = [m for m in metrics if m["kind"] == "train"]
    evals = [m for m in metrics if m["kind"] == "eval"]
    assert [m["step"] for m in train] == [1, 2, 3, 4]
    assert all(m["tokens_per_s"] > 0 and m["target_tokens"] > 0 for m in train)
    assert [m["step"] for m in evals] == [2, 4]
    for m in evals:
        assert m["val_perplexity"] == pytest.approx(math.exp(m["val_loss"]))
        assert m["bleu_samples"] == 2 and 0 <= m["bleu"] <= 100
    assert sorted(p.name for p in (adapter / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]
    assert list((adapter / "tensorboard").glob("events.out.tfevents.*"))
    assert yaml.safe_load((adapter / "train_config.yaml").read_text())["tokenizer"] == "mistral-7b-instruct-v0.2"
    sheet = (adapter / "compare.html").read_text()
    assert sheet.count("<tr><td>") == 2 and "<th>fine-tuned</th>" in sheet


def test_val_perplexity_counts_exactly_the_assistant_tokens(trained, workspace):
    adapter, _ = trained
    expected = sum(sum(enc.trained) for enc in chat_tokenizer().encode_batch([r["messages"] for r in workspace["val"]]))
    assert _metrics(adapter)[-1]["val_tokens"] == expected


def test_exported_chat_template_renders_the_ids_the_model_was_trained_on(trained):
    from transformers import AutoTokenizer

    adapter, _ = trained
    hf = AutoTokenizer.from_pretrained(str(adapter))
    for record in real_records("fastchat_dummy_conversation.jsonl", 6):
        rendered = hf.apply_chat_template(record["messages"], tokenize=True, return_dict=True)["input_ids"]
        assert list(rendered) == chat_tokenizer().encode(record["messages"]).ids


def test_export_merge_writes_a_bf16_model_with_tokenizer(trained, workspace):
    from transformers import AutoModelForCausalLM

    adapter, _ = trained
    merged = workspace["root"] / "merged"
    result = CliRunner().invoke(cli, ["export", str(adapter), "--merge", str(merged)])
    assert result.exit_code == 0, result.output
    model = AutoModelForCausalLM.from_pretrained(str(merged), dtype="auto")
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert (merged / "tokenizer_config.json").is_file() and (merged / "tokenizer.model").is_file()


def _splits(workspace, context_length=256):
    tok = chat_tokenizer()
    folder = workspace["curated"]
    return prepare_split(folder / "train.jsonl", tok, context_length), prepare_split(folder / "val.jsonl", tok, context_length)


def test_resume_reproduces_the_loss_curve(workspace, tmp_path):
    # dropout stays on (0.05): the same curve needs the RNG state restored, not only weights and optimizer
    settings = tiny_train_settings(workspace["model"], context_length=256, max_steps=4, save_every_steps=2)
    settings["eval"] = {"every_steps": 2, "bleu_samples": 0, "compare_sheet_samples": 0}
    config = TrainConfig.model_validate(settings)
    train, val = _splits(workspace)
    tok = chat_tokenizer()
    straight = run_training(config, train, val, tok, tmp_path / "straight", show_progress=False).train_losses

    def interrupt(step, loss):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(config, train, val, tok, tmp_path / "resumed", show_progress=False, on_step=interrupt)
    resumed = run_training(config, train, val, tok, tmp_path / "resumed", resume=True, show_progress=False)
    assert len(straight) == 4 and len(resumed.train_losses) == 2
    assert resumed.train_losses == pytest.approx(straight[2:], rel=1e-6)
    logged = [m["loss"] for m in _metrics(tmp_path / "resumed") if m["kind"] == "train"]
    assert logged == pytest.approx(straight, rel=1e-6)  # the step-3 line of the interrupted run was dropped


def test_early_stopping_stops_when_val_loss_stops_falling(workspace, tmp_path):
    settings = tiny_train_settings(workspace["model"], context_length=256, max_steps=8, learning_rate=0.5)
    settings["eval"] = {"every_steps": 1, "bleu_samples": 0, "compare_sheet_samples": 0, "early_stopping_patience": 1}
    train, val = _splits(workspace)
    result = run_training(TrainConfig.model_validate(settings), train, val, chat_tokenizer(), tmp_path, show_progress=False)
    assert result.stopped_early and result.steps < 8
    losses = [e["val_loss"] for e in result.evals]
    assert losses[-1] >= min(losses[:-1])
    assert (tmp_path / "checkpoints" / f"step-{result.steps:07d}").is_dir()


def test_refuses_a_folder_from_a_failing_run_unless_forced(workspace, tmp_path):
    failing = write_curated_folder(tmp_path / "failing", workspace["train"][:4], workspace["val"][:2], gate_passed=False)
    args = ["train", str(failing), "--output", str(tmp_path / "a"), "--config", str(workspace["config"])]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "gate size.min_examples failed: kept 30 examples, 9,970 short of 10,000; use --force" in result.output
    assert not (tmp_path / "a").exists()


def test_refuses_split_files_edited_after_the_run(workspace, tmp_path):
    edited = write_curated_folder(tmp_path / "edited", workspace["train"][:4], workspace["val"][:2])
    with (edited / "train.jsonl").open("a") as handle:
        handle.write(json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}) + "\n")
    result = CliRunner().invoke(cli, ["train", str(edited), "--output", str(tmp_path / "a")])
    assert result.exit_code == 1
    assert "train.jsonl: sha256 differs from manifest.json outputs.train.jsonl" in result.output


def test_force_accepts_a_failing_folder():
    from finetune.curated import inspect_curated_folder, open_curated_folder
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_curated_folder(Path(tmp), real_records("gsm8k_train.jsonl", 2), real_records("gsm8k_train.jsonl", 1, 5), gate_passed=False)
        assert inspect_curated_folder(folder).problems == ["gate size.min_examples failed: kept 30 examples, 9,970 short of 10,000"]
        assert open_curated_folder(folder, force=True).path == folder
