"""Training on two processes (gloo on CPU): the steps, evaluations and adapter of one process at twice the
accumulation, files written once, resume on the same number of processes, and torchrun on the CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from click.testing import CliRunner  # noqa: E402

from curator.cli import cli  # noqa: E402
from curator.errors import CurateError  # noqa: E402
from finetune.config import TrainConfig  # noqa: E402
from finetune.train import plan_steps, prepare_split, run_training  # noqa: E402
from tests.finetune_support import (  # noqa: E402
    chat_tokenizer,
    one_torch_thread,
    real_records,
    save_tiny_mistral,
    tiny_mistral,
    tiny_train_settings,
    write_curated_folder,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    model_dir = save_tiny_mistral(root / "tiny-mistral")
    train = real_records("llamafactory_identity.jsonl", 10) + real_records("fastchat_dummy_conversation.jsonl", 10)
    val = real_records("llamafactory_identity.jsonl", 3, start=40) + real_records("fastchat_dummy_conversation.jsonl", 3, start=40)
    curated = write_curated_folder(root / "out", train, val)
    return {"root": root, "model": model_dir, "curated": curated}


def _settings(model_dir, **overrides) -> dict:
    """The 20 examples unpacked, in micro-batches of 3 rows: 7 per epoch, so a step of 2 takes 4 per epoch, the
    last holding one micro-batch (one process idles), and 7 steps cross into the second epoch's order."""
    settings = tiny_train_settings(
        model_dir, context_length=256, packing=False, micro_batch_rows=3, max_steps=7, save_every_steps=2,
        keep_checkpoints=5,
    )
    settings["eval"] = {"every_steps": 3, "bleu_samples": 2, "max_new_tokens": 4, "generation_batch_size": 1,
                        "compare_sheet_samples": 3, **overrides.pop("eval", {})}
    settings.update(overrides)
    return settings


def _float64_model(config: TrainConfig):
    """The tiny Mistral in float64 with fresh LoRA: the sums of two processes and of one then agree to ~1e-12."""
    from finetune import modeling

    return modeling.add_lora(tiny_mistral().double(), config.lora, config.seed)


def _splits(curated: Path):
    tok = chat_tokenizer()
    return prepare_split(curated / "train.jsonl", tok, 256), prepare_split(curated / "val.jsonl", tok, 256)


def _interrupt_at(step_to_stop: int):
    def on_step(step, loss):
        if step == step_to_stop:
            raise KeyboardInterrupt

    return on_step


def _worker(rank: int, world: int, port: int, workspace: dict, out: Path) -> None:
    """One of the two processes: the run to compare, then a run interrupted at step 5 and resumed."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    dist.init_process_group("gloo", rank=rank, world_size=world)
    train, val = _splits(workspace["curated"])
    tok = chat_tokenizer()
    config = TrainConfig.model_validate(_settings(workspace["model"], grad_accumulation=1, lora={"dropout": 0.0}))
    result = run_training(config, train, val, tok, out / "two", show_progress=False, model=_float64_model(config))
    # dropout on: each process draws its own masks, and resuming restores each one's RNG states
    config = TrainConfig.model_validate(_settings(
        workspace["model"], grad_accumulation=1, max_steps=4, eval={"bleu_samples": 0, "compare_sheet_samples": 0},
    ))
    straight = run_training(config, train, val, tok, out / "straight", show_progress=False, model=_float64_model(config))
    with pytest.raises(KeyboardInterrupt):
        run_training(config, train, val, tok, out / "resumed", show_progress=False, model=_float64_model(config),
                     on_step=_interrupt_at(3))
    resumed = run_training(config, train, val, tok, out / "resumed", resume=True, show_progress=False,
                           model=_float64_model(config))
    (out / f"rank{rank}.json").write_text(json.dumps({
        "losses": result.train_losses, "evals": result.evals, "total_steps": result.total_steps,
        "steps_per_epoch": plan_steps(config, train, val, world).steps_per_epoch,
        "straight": straight.train_losses, "resumed": resumed.train_losses,
    }))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(workspace, tmp_path_factory):
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("two-processes")
    mp.spawn(_worker, args=(2, _free_port(), workspace, out), nprocs=2, join=True)
    return out, [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def _adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_two_processes_take_the_steps_of_one_at_twice_the_accumulation(workspace, two_processes, tmp_path):
    out, (rank0, rank1) = two_processes
    config = TrainConfig.model_validate(_settings(workspace["model"], grad_accumulation=2, lora={"dropout": 0.0}))
    one = run_training(config, *_splits(workspace["curated"]), chat_tokenizer(), tmp_path, show_progress=False,
                       model=_float64_model(config))
    assert rank0["total_steps"] == one.total_steps == 7
    assert rank0["steps_per_epoch"] == 4
    assert rank0["losses"] == rank1["losses"]  # every process reports the step of all of them
    assert rank0["losses"] == pytest.approx(one.train_losses, rel=1e-9)
    assert len(set(rank0["losses"])) == 7  # the model learns: a wrong split would not stay within 1e-9
    assert rank0["evals"] == rank1["evals"]
    assert [e["step"] for e in rank0["evals"]] == [e["step"] for e in one.evals] == [3, 6, 7]
    for two_eval, one_eval in zip(rank0["evals"], one.evals):
        assert two_eval["val_tokens"] == one_eval["val_tokens"]
        assert two_eval["val_loss"] == pytest.approx(one_eval["val_loss"], rel=1e-9)
        assert (two_eval["bleu"], two_eval["bleu_samples"]) == (one_eval["bleu"], one_eval["bleu_samples"])
    two_adapter, one_adapter = _adapter(out / "two"), _adapter(tmp_path)
    assert sorted(two_adapter) == sorted(one_adapter)
    for name, weight in one_adapter.items():
        torch.testing.assert_close(two_adapter[name], weight, rtol=1e-9, atol=1e-12)
    # the comparison sheet holds each sampled prompt once, with the answers one process gives
    assert (out / "two" / "compare.html").read_text() == (tmp_path / "compare.html").read_text()


def test_only_rank_0_writes_metrics_and_checkpoints(two_processes):
    out, _ = two_processes
    lines = [json.loads(line) for line in (out / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if m["kind"] == "train"] == [1, 2, 3, 4, 5, 6, 7]
    assert [m["step"] for m in lines if m["kind"] == "eval"] == [3, 6, 7]
    checkpoints = sorted(p.name for p in (out / "two" / "checkpoints").iterdir())
    assert checkpoints == ["step-0000002", "step-0000004", "step-0000006", "step-0000007"]
    state = torch.load(out / "two" / "checkpoints" / "step-0000007" / "trainer_state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rank_rng"]) == 2


def test_resume_on_the_same_number_of_processes_continues_the_loss_curve(two_processes):
    _, (rank0, rank1) = two_processes
    assert len(rank0["straight"]) == 4 and len(rank0["resumed"]) == 2  # from the checkpoint of step 2
    # each process's own dropout masks are restored: resumed == straight exactly on CPU
    assert rank0["resumed"] == rank1["resumed"] == rank0["straight"][2:]


def test_resume_with_another_number_of_processes_is_refused_in_one_line(workspace, two_processes):
    out, _ = two_processes
    config = TrainConfig.model_validate(_settings(workspace["model"], grad_accumulation=1, lora={"dropout": 0.0}))
    with pytest.raises(CurateError) as info:
        run_training(config, *_splits(workspace["curated"]), chat_tokenizer(), out / "two", resume=True,
                     show_progress=False)
    assert str(info.value) == (
        f"{out / 'two' / 'checkpoints' / 'step-0000007'}: written by a run on 2 process(es), this one has 1; "
        "--resume needs the same number (torchrun --nproc_per_node 2 -m curator.cli train ... --resume), or train "
        "into another --output"
    )


def test_torchrun_launches_the_train_command_on_two_processes(workspace, tmp_path):
    settings = tiny_train_settings(workspace["model"], context_length=256, max_steps=2, grad_accumulation=1)
    settings["eval"] = {"every_steps": 2, "bleu_samples": 0, "compare_sheet_samples": 0}
    config_path = tmp_path / "train.yaml"
    config_path.write_text(yaml.safe_dump(settings))
    adapter = tmp_path / "adapter"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "curator.cli", "train", str(workspace["curated"]), "--output", str(adapter),
         "--config", str(config_path), "-q"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = [line for line in done.stderr.splitlines() if line.startswith("trained ")]
    assert len(summaries) == 1 and summaries[0].startswith("trained 2/2 steps; val perplexity ")
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "train_config.yaml").is_file()
    lines = [json.loads(line) for line in (adapter / "metrics.jsonl").read_text().splitlines()]
    assert [(m["kind"], m["step"]) for m in lines] == [("train", 1), ("train", 2), ("eval", 2)]
    # the same folder resumed on one process: one line saying how many processes it needs
    result = CliRunner().invoke(cli, [
        "train", str(workspace["curated"]), "--output", str(adapter), "--config", str(config_path), "--resume", "-q",
    ])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {adapter / 'checkpoints' / 'step-0000002'}: written by a run on 2 process(es), this one has 1; "
        "--resume needs the same number (torchrun --nproc_per_node 2 -m curator.cli train ... --resume), or train "
        "into another --output"
    ]


def test_ranks_come_from_the_launchers_environment(monkeypatch):
    from finetune.distributed import SINGLE, Ranks, launched_ranks

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert launched_ranks() == SINGLE
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")  # the second process of the second node
    assert launched_ranks() == Ranks(rank=3, world_size=4, local_rank=1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(CurateError, match=r"^RANK=4 and WORLD_SIZE=4: expected 0 <= RANK < WORLD_SIZE$"):
        launched_ranks()


def test_a_launched_process_trains_on_its_own_gpu_or_the_cpu():
    from finetune.distributed import Ranks, rank_device

    second = Ranks(rank=1, world_size=2, local_rank=1)
    assert rank_device("cpu", second) == torch.device("cpu")
    with pytest.raises(CurateError, match=r"^device: cuda:1 names one GPU, but each of the 2 launched processes"):
        rank_device("cuda:1", second)
