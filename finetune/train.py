"""The LoRA training loop, in view: no transformers Trainer, no callbacks.

One optimizer step = `grad_accumulation` micro-batches of `micro_batch_rows` packed rows. The step's loss is
sum(token cross-entropy) / (trained tokens in the whole step): each micro-batch backpropagates its SUM divided
by the step's token count, so the accumulated gradient is exactly the gradient of one big batch's token mean
(`train_step`; tested: N micro-batches give the gradient and update of one batch holding them all). Averaging
per micro-batch instead would weight a token in a short micro-batch more than one in a long micro-batch (the
gradient-accumulation bug transformers fixed in 4.46).

Data order is a pure function of (seed, epoch, step), and each checkpoint holds the adapter, AdamW, the
schedule, the early-stopping state and every RNG state, so `--resume` continues with the very batches and
dropout masks the uninterrupted run would have used: the loss curve is the same (tested; exactly on CPU, on
CUDA up to its non-deterministic kernels). A checkpoint also records the settings that define the run and a
fingerprint of the tokenized train split; `--resume` refuses a config or split that differs in them, naming
the keys (RESUMABLE_KEYS lists what may change: devices, kernels, logging, checkpointing, evaluation).
trainer_state.pt holds tensors and plain Python values only and is read with torch.load(weights_only=True):
a checkpoint is data, and unpickling anything else could run code, so a file that needs more (one written by
an older curator, or crafted) is refused, never loaded unsafely.

Launched on several processes (torchrun, accelerate launch), a step's micro-batches are dealt out over them
(`step_batches`), the token count and the LoRA gradients are summed across them (`train_step`, by hand:
finetune.distributed says why not DistributedDataParallel), evaluation is shared out, and rank 0 alone writes
files; a checkpoint records the number of processes and each one's RNG states, and `--resume` on another
number is refused.

`run_training` reads top to bottom: set up (output folder, resume check, model, optimizer), then `_train_loop`
(`step_batches`, `train_step`, evaluation and `track_best`, checkpoints as they fall due), then the outputs.

Early stopping keeps a CPU copy of the adapter weights of the best evaluation (lowest val loss, `best_step`);
when the run ends, by patience or at its last step, that copy is what the adapter folder gets, not the weights
of a later, worse evaluation.

Outputs in the output folder: the PEFT adapter with tokenizer and chat template (finetune.export),
metrics.jsonl (one line per train log / evaluation), tensorboard/ (the same scalars), checkpoints/step-N/,
train_config.yaml (resolved), data_report.json (what was skipped and why), compare.html (base vs fine-tuned).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

from curator.errors import CurateError
from finetune import distributed, modeling
from finetune.config import TrainConfig
from finetune.data import (
    SplitRecord,
    Example,
    collate,
    encode_records,
    epoch_micro_batches,
    make_rows,
    prompt_and_reference,
    read_chat_jsonl,
    sample_indices,
)
from finetune.distributed import SINGLE, Ranks
from finetune.evaluate import corpus_bleu, generate, streaming_perplexity
from finetune.output_dir import prepare_output_dir
from finetune.progress import RunProgress

# Config keys that may differ on --resume: where and how fast the same math runs, what is logged and saved,
# and evaluation (which never changes the weights). Any other key (model, tokenizer, seed, lora.*, epochs,
# max_steps, learning rate and schedule, optimizer, context_length, packing, batch rows, accumulation, and keys
# added later) defines the run: a change would silently continue a different run or break its schedule.
RESUMABLE_KEYS = (
    "device", "precision", "attn_implementation", "gradient_checkpointing", "loss_chunk_tokens", "compile",
    "log_every_steps", "save_every_steps", "keep_checkpoints", "eval",
)


@dataclass
class TrainState:
    """What a checkpoint must restore besides weights and optimizer, to continue the same run."""

    step: int = 0
    best_val_loss: float = math.inf
    best_step: int | None = None  # the step of the evaluation with the lowest val loss
    evals_without_improvement: int = 0
    stopped_early: bool = False
    tokens_seen: int = 0


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    total_steps: int
    train_losses: list[float] = field(default_factory=list)  # one per optimizer step of this process
    evals: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    best_step: int | None = None  # with early stopping: the step whose adapter was saved, when not the last
    skipped_over_context: dict[str, int] = field(default_factory=dict)  # examples longer than context_length
    context_length: int | None = None  # tokens per row, as resolved from the config and the curated folder


class MetricsLog:
    """metrics.jsonl plus TensorBoard scalars. On resume, lines past the checkpoint's step are dropped."""

    def __init__(self, output_dir: Path, resume_step: int | None):
        self.path = output_dir / "metrics.jsonl"
        if resume_step is None:
            self.path.write_text("", encoding="utf-8")
        elif self.path.exists():
            kept = [
                line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["step"] <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops, on reading, the events at and after it: those the interrupted run wrote after its
        # checkpoint. The checkpoint's own step is not written again, so it is kept: purge from the step after.
        purge_step = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(log_dir=str(output_dir / "tensorboard"), purge_step=purge_step)

    def write(self, kind: str, step: int, values: dict) -> None:
        record = {"kind": kind, "step": step, **values}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        self.writer.close()


# The layout of trainer_state.pt: 2 holds tensors and plain values only (loadable with weights_only); the
# unnumbered first layout pickled numpy arrays.
CHECKPOINT_FORMAT = 2


def _rng_state(device: torch.device | None = None) -> dict:
    """Every RNG state as tensors and plain values (no numpy array: weights_only does not load one).

    On CUDA, the state of the run's own device only: asking every GPU would open a CUDA context on each of them
    from every process of a multi-GPU run.
    """
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached_gaussian)],
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        state["cuda"] = {index: torch.cuda.get_rng_state(index)}
    elif device is None and torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    _set_cuda_rng_states(state.get("cuda") or [])


def _set_cuda_rng_states(states: list | dict) -> None:
    """The CUDA RNG state of each device present (a list: every device; a dict: device index -> state); a host
    with fewer GPUs than the checkpoint's resumes too."""
    if not torch.cuda.is_available():
        return
    pairs = states.items() if isinstance(states, dict) else enumerate(states)
    for index, device_state in pairs:
        if index < torch.cuda.device_count():
            torch.cuda.set_rng_state(device_state, index)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_settings(config: TrainConfig, train: "Split") -> dict:
    """What defines a run, as flat `key.sub: value` pairs: the config less RESUMABLE_KEYS, and the train data."""
    flat: dict = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}{key}.", sub)
        else:
            flat[prefix[:-1]] = value

    walk("", {k: v for k, v in config.model_dump(mode="json").items() if k not in RESUMABLE_KEYS})
    digest = hashlib.sha256()
    for example in train.examples:
        digest.update(np.asarray(example.ids, dtype=np.int64).tobytes())
        digest.update(np.asarray(example.labels, dtype=np.int64).tobytes())
    flat["train data"] = f"{len(train.examples)} examples, sha256 {digest.hexdigest()[:16]}"
    return flat


def check_same_run(checkpoint: Path, saved: dict | None, current: dict) -> None:
    """One line naming every run-defining setting that differs between the checkpoint and this invocation."""
    if saved is None:
        raise CurateError(f"{checkpoint}: records no run settings (an older checkpoint); cannot check --resume")
    differ = [k for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]
    if differ:
        shown = "; ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in differ)
        raise CurateError(
            f"{checkpoint}: --resume needs the run's own settings, these differ: {shown} "
            "(train into another --output, or --overwrite to start over)"
        )


def save_checkpoint(
    model, optimizer, scheduler, state: TrainState, output_dir: Path, keep: int, run: dict | None = None,
    best: dict | None = None, rank_rng: list[dict] | None = None,
) -> Path:
    """checkpoints/step-N/: the adapter (PEFT format) and trainer_state.pt; written to a temp folder, then moved.

    trainer_state.pt holds AdamW, the schedule, TrainState, the RNG states, the run settings (`run_settings`),
    the number of processes that trained (`world_size`) and, with early stopping, the best evaluation's adapter
    weights (`best`). `rank_rng`: the RNG states of every process of a multi-process run, in rank order (each
    draws its own dropout masks); rank 0's are also the `rng` a one-process run has.
    """
    root = output_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.step:07d}"
    tmp = root / f".tmp-step-{state.step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    torch.save(
        {"format": CHECKPOINT_FORMAT, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
         "state": asdict(state), "rng": rank_rng[0] if rank_rng else _rng_state(), "run": run, "best": best,
         "world_size": len(rank_rng) if rank_rng else 1, "rank_rng": rank_rng if rank_rng and len(rank_rng) > 1 else None},
        tmp / "trainer_state.pt",
    )
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(p for p in root.iterdir() if p.name.startswith("step-"))[:-keep]:
        shutil.rmtree(old)
    return final


def latest_checkpoint(output_dir: Path) -> Path | None:
    root = output_dir / "checkpoints"
    if not root.is_dir():
        return None
    found = sorted(p for p in root.iterdir() if p.name.startswith("step-") and (p / "trainer_state.pt").exists())
    return found[-1] if found else None


def read_trainer_state(path: Path) -> dict:
    """trainer_state.pt of checkpoint `path`, read with weights_only=True: tensors and plain values, never code."""
    file = path / "trainer_state.pt"
    try:
        saved = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CurateError(
            f"{file}: holds objects other than tensors and plain values (an older curator's checkpoint, or not "
            "one) and is not loaded, as unpickling them could run code; train into another --output, or "
            "--overwrite to start over"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:  # truncated or not a torch file
        raise CurateError(f"{file}: cannot be read: {modeling.first_line(exc)}") from None
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise CurateError(
            f"{file}: not a trainer state of format {CHECKPOINT_FORMAT}; train into another --output, or "
            "--overwrite to start over"
        )
    return saved


def load_checkpoint(
    path: Path, model, optimizer, scheduler, saved: dict | None = None, ranks: Ranks = SINGLE
) -> TrainState:
    """Adapter weights, AdamW, schedule and this process's RNG states of checkpoint `path` into the given objects."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(path / "adapter_model.safetensors"), device=str(next(model.parameters()).device))
    try:
        result = set_peft_model_state_dict(model, weights)
    except RuntimeError as exc:  # shape mismatches: one line, not one per tensor
        raise CurateError(f"{path}: adapter weights do not fit the model: {str(exc).strip().splitlines()[-1].strip()}") from exc
    # missing: adapter weights the model has and the checkpoint lacks; unexpected: the reverse
    missing_lora = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    unexpected = list(getattr(result, "unexpected_keys", []))
    if missing_lora or unexpected:
        what = f"missing {missing_lora[0]}" if missing_lora else f"unexpected {unexpected[0]}"
        count = len(missing_lora) + len(unexpected)
        raise CurateError(f"{path}: adapter weights do not fit the model: {what} ({count} key(s) differ)")
    saved = read_trainer_state(path) if saved is None else saved
    try:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        _set_rng_state(saved["rank_rng"][ranks.rank] if saved.get("rank_rng") else saved["rng"])
        return TrainState(**saved["state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # a damaged or hand-made file
        what = f"{type(exc).__name__}: {modeling.first_line(exc)}"
        raise CurateError(f"{path / 'trainer_state.pt'}: does not restore into this run ({what})") from exc


@dataclass
class Split:
    """One split, tokenized: examples, the records they came from, and the skip report."""

    records: list[SplitRecord]
    examples: list[Example]
    report: dict


def prepare_split(path: Path, tokenizer, context_length: int) -> Split:
    records = read_chat_jsonl(path)
    examples, report = encode_records(records, tokenizer, context_length)
    return Split(records, examples, asdict(report))


@dataclass
class StepPlan:
    """The rows of both splits and how many optimizer steps the run takes."""

    rows: list[list[int]]
    val_rows: list[list[int]]
    steps_per_epoch: int
    total_steps: int


def plan_steps(config: TrainConfig, train: Split, val: Split, world_size: int = 1) -> StepPlan:
    """Rows and step counts; a step takes `grad_accumulation` micro-batches on each of `world_size` processes."""
    rows = make_rows(train.examples, config.context_length, config.packing)
    val_rows = make_rows(val.examples, config.context_length, config.packing)
    micro_per_epoch = math.ceil(len(rows) / config.micro_batch_rows)
    steps_per_epoch = math.ceil(micro_per_epoch / (config.grad_accumulation * world_size))
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    return StepPlan(rows, val_rows, steps_per_epoch, total_steps)


def step_batches(
    train: Split, plan: StepPlan, config: TrainConfig, step: int, pad_id: int, ranks: Ranks = SINGLE
) -> list[dict]:
    """This process's micro-batches of optimizer step `step` (counted from 0): a pure function of (seed, epoch,
    step, rank). The step holds `grad_accumulation` x world size micro-batches, dealt out round-robin, so N
    processes take the steps one process takes at N times the accumulation (and the last step of an epoch,
    holding fewer, stays balanced)."""
    epoch, step_in_epoch = divmod(step, plan.steps_per_epoch)
    micro = epoch_micro_batches(plan.rows, config.micro_batch_rows, config.seed, epoch)
    per_step = config.grad_accumulation * ranks.world_size
    in_step = micro[step_in_epoch * per_step : (step_in_epoch + 1) * per_step]
    return [collate(train.examples, mb, pad_id) for mb in in_step[ranks.rank :: ranks.world_size]]


@dataclass
class StepResult:
    """What one optimizer step did."""

    loss: float  # token mean of the cross-entropy over the whole accumulated step
    n_target_tokens: int  # trained tokens of the step: the loss's denominator
    n_tokens: int  # tokens the step ran through, padding excluded
    grad_norm: float  # global gradient norm before clipping
    lr: float  # the learning rate the step used


def train_step(
    model, batches: list[dict], optimizer, scheduler, max_grad_norm: float | None, loss_chunk_tokens: int,
    device: torch.device, dtype: torch.dtype, ranks: Ranks = SINGLE,
) -> StepResult:
    """One optimizer step accumulated over `batches` (micro-batches of finetune.data.collate).

    Each micro-batch backpropagates its loss SUM divided by the trained tokens of the whole step, so the
    accumulated gradient is that of one batch holding every micro-batch: the token mean over the step.
    Then the global norm is clipped (unless `max_grad_norm` is None), and the optimizer and schedule step.
    Under several processes the step is every process's `batches` together: the token count is summed before
    backward and the gradients after it (finetune.distributed), so every process takes the same update.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    n_target, n_tokens = distributed.sum_counts(
        [sum(b["n_target_tokens"] for b in batches), sum(b["n_real_tokens"] for b in batches)], ranks, device
    )
    loss_total = 0.0
    for batch in batches:
        with modeling.autocast_context(device, dtype):
            loss, _ = modeling.loss_sum(model, batch, loss_chunk_tokens)
        (loss / n_target).backward()
        loss_total += float(loss.detach())
    distributed.sum_gradients(params, ranks)
    (loss_total,) = distributed.sum_floats([loss_total], ranks, device)
    grad_norm = _clip_gradients(params, max_grad_norm)
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":  # the caller times the step: wait for its kernels, on the run's own device
        torch.cuda.synchronize(device)
    return StepResult(
        loss=loss_total / n_target, n_target_tokens=n_target, n_tokens=n_tokens, grad_norm=grad_norm, lr=lr,
    )


def _clip_gradients(params: list, max_grad_norm: float | None) -> float:
    """Clip the global gradient norm to `max_grad_norm` (None: leave it); returns the norm before clipping."""
    if max_grad_norm is not None:
        return float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))


def make_optimizer(model, config: TrainConfig, device: torch.device, total_steps: int):
    """AdamW over the trainable (adapter) weights, and linear warmup then cosine decay over `total_steps`."""
    from transformers import get_cosine_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=config.learning_rate, betas=tuple(config.adam_betas), weight_decay=config.weight_decay,
        fused=device.type == "cuda",
    )
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)
    return optimizer, scheduler


def _with_absolute_model_path(config: TrainConfig) -> TrainConfig:
    if Path(config.model).is_dir():
        # adapter_config.json (base_model_name_or_path) and train_config.yaml must name the base model from any
        # working directory: export, vLLM and PeftModel load it from there
        return config.model_copy(update={"model": os.path.abspath(config.model)})
    return config


def _checkpoint_to_resume(output_dir: Path, run: dict, ranks: Ranks = SINGLE) -> tuple[Path, dict]:
    """The latest checkpoint and its trainer state, refused unless it is of this very run."""
    checkpoint = latest_checkpoint(output_dir)
    if checkpoint is None:
        raise CurateError(f"{output_dir / 'checkpoints'}: no checkpoint to resume from")
    saved = read_trainer_state(checkpoint)
    check_same_world_size(checkpoint, saved.get("world_size", 1), ranks.world_size)
    check_same_run(checkpoint, saved.get("run"), run)
    return checkpoint, saved


def check_same_world_size(checkpoint: Path, saved: int, current: int) -> None:
    """Refuse to resume on another number of processes: a step's micro-batches are dealt out over the processes,
    so another number would take other batches per step, and each process restores its own RNG states."""
    if saved != current:
        launch = f"torchrun --nproc_per_node {saved} -m curator.cli train ..." if saved > 1 else "curate train ..."
        raise CurateError(
            f"{checkpoint}: written by a run on {saved} process(es), this one has {current}; --resume needs the same "
            f"number ({launch} --resume), or train into another --output"
        )


def _ready_model(config: TrainConfig, model, train: Split, device: torch.device, ranks: Ranks = SINGLE):
    """Dtype and the model (built from `config.model` unless given), checked against the data."""
    dtype = modeling.resolve_dtype(config.precision, device)
    _seed_everything(config.seed)  # before the model is built: the LoRA init is part of the run
    if model is None:
        model = modeling.build_training_model(config, device, dtype)
    if ranks.distributed:
        distributed.broadcast_from_main([p for p in model.parameters() if p.requires_grad], ranks)
        torch.manual_seed(config.seed + ranks.rank)  # each process draws its own dropout masks
    if config.packing:
        modeling.check_packed_attention(model, device, dtype, config.micro_batch_rows)
    vocab = modeling.causal_lm(model).get_input_embeddings().num_embeddings
    biggest = max(max(e.ids) for e in train.examples)
    if biggest >= vocab:
        raise CurateError(f"{config.model}: embedding holds {vocab} tokens but the tokenizer produced id {biggest}")
    return dtype, model


def _write_run_description(output_dir: Path, config: TrainConfig, train: Split, val: Split) -> None:
    (output_dir / "train_config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    (output_dir / "data_report.json").write_text(json.dumps({"train": train.report, "val": val.report}, indent=2))


def bleu_sample(val: Split, tokenizer, config: TrainConfig) -> list:
    """The fixed BLEU sample: the last trained assistant turn of each sampled record is the reference, the
    conversation before it the prompt (cut where that turn's training target starts)."""
    items = []
    if config.eval.bleu_samples:
        for i in sample_indices(len(val.records), config.eval.bleu_samples, config.seed):
            item = prompt_and_reference(val.records[i], tokenizer)
            if item is not None and len(item.ids) + config.eval.max_new_tokens <= config.context_length:
                items.append(item)
    return items


@dataclass
class _Session:
    """Everything the loop works with, set up once by run_training."""

    config: TrainConfig
    model: object
    tokenizer: object
    train: Split
    val: Split
    plan: StepPlan
    optimizer: object
    scheduler: object
    device: torch.device
    dtype: torch.dtype
    log: MetricsLog
    output_dir: Path
    run: dict
    bleu_items: list
    ranks: Ranks = SINGLE
    progress: RunProgress = field(default_factory=lambda: RunProgress(enabled=False))


def evaluate_adapter(s: _Session) -> dict:
    """Val loss, perplexity and token count, and BLEU on the fixed sample when there is one (each process
    evaluates its share; all get the whole result)."""
    config = s.config
    rows_per_batch, gen_batch = config.micro_batch_rows, config.eval.generation_batch_size
    n_batches = math.ceil(len(s.plan.val_rows) / rows_per_batch)
    with s.progress.task("eval", distributed.share_size(n_batches, 1, s.ranks)) as advance:
        ppl = streaming_perplexity(
            s.model, s.val.examples, s.plan.val_rows, rows_per_batch, s.tokenizer.pad_id, config.loss_chunk_tokens,
            s.device, s.dtype, s.ranks, advance,
        )
    values = {"val_loss": ppl.loss, "val_perplexity": ppl.perplexity, "val_tokens": ppl.n_tokens}
    if s.bleu_items:
        with s.progress.task("bleu", distributed.share_size(len(s.bleu_items), gen_batch, s.ranks)) as advance:
            answers = generate(
                s.model, [item.ids for item in s.bleu_items], s.tokenizer, config.eval.max_new_tokens, gen_batch,
                s.device, s.dtype, s.ranks, advance,
            )
        values["bleu"] = corpus_bleu(answers, [item.reference for item in s.bleu_items])
        values["bleu_samples"] = len(s.bleu_items)
    return values


def _evaluation_due(config: TrainConfig, plan: StepPlan, step: int) -> bool:
    end_of_epoch = step % plan.steps_per_epoch == 0
    due = config.eval.every_steps and step % config.eval.every_steps == 0
    return bool(due or (config.eval.every_steps is None and end_of_epoch) or step == plan.total_steps)


def _checkpoint_due(config: TrainConfig, state: TrainState, total_steps: int) -> bool:
    due = config.save_every_steps and state.step % config.save_every_steps == 0
    return bool(due or state.step == total_steps or state.stopped_early)


def track_best(state: TrainState, values: dict, patience: int | None) -> bool:
    """Early-stopping bookkeeping for one evaluation; True when it is the best so far. When patience runs
    out, marks the state stopped and adds the best step and loss to `values`."""
    improved = values["val_loss"] < state.best_val_loss
    if improved:
        state.best_val_loss = values["val_loss"]
        state.best_step = state.step
        state.evals_without_improvement = 0
    else:
        state.evals_without_improvement += 1
    if patience is not None and state.evals_without_improvement >= patience:
        state.stopped_early = True
        values["early_stop"] = True
        values["best_step"] = state.best_step
        values["best_val_loss"] = state.best_val_loss
    return improved


def _trainable_weights_copy(model) -> dict:
    return {k: p.detach().to("cpu", copy=True) for k, p in model.named_parameters() if p.requires_grad}


def _log_step(s: _Session, state: TrainState, step: StepResult, tokens_per_s: float) -> None:
    if state.step % s.config.log_every_steps == 0 or state.step == s.plan.total_steps:
        s.log.write("train", state.step, {
            "loss": step.loss, "lr": step.lr, "grad_norm": step.grad_norm,
            "epoch": state.step / s.plan.steps_per_epoch, "tokens_per_s": tokens_per_s,
            "target_tokens": step.n_target_tokens, "tokens": step.n_tokens, "tokens_seen": state.tokens_seen,
        })


def _train_loop(
    s: _Session, state: TrainState, best: dict | None, result: TrainResult,
    on_step: Callable[[int, float], None] | None,
) -> dict | None:
    """Optimizer steps until the last or an early stop, with evaluations and checkpoints as they fall due;
    returns the best evaluation's weights (early stopping only)."""
    config, total_steps = s.config, s.plan.total_steps
    keep_best = config.eval.early_stopping_patience is not None
    s.model.train()
    s.progress.start_training(total_steps, state.step)
    while state.step < total_steps and not state.stopped_early:
        batches = step_batches(s.train, s.plan, config, state.step, s.tokenizer.pad_id, s.ranks)
        started = time.perf_counter()
        step = train_step(
            s.model, batches, s.optimizer, s.scheduler, config.max_grad_norm, config.loss_chunk_tokens,
            s.device, s.dtype, s.ranks,
        )
        seconds = time.perf_counter() - started
        state.step += 1
        state.tokens_seen += step.n_tokens
        result.train_losses.append(step.loss)
        tps = step.n_tokens / seconds if seconds > 0 else 0.0  # of every process together
        s.progress.step_done(state.step, tps, step.loss)
        if on_step is not None:
            on_step(state.step, step.loss)
        _log_step(s, state, step, tps)
        if s.val.examples and _evaluation_due(config, s.plan, state.step):
            values = evaluate_adapter(s)
            if track_best(state, values, config.eval.early_stopping_patience) and keep_best:
                best = _trainable_weights_copy(s.model)
            s.log.write("eval", state.step, values)
            result.evals.append({"step": state.step, **values})
        if _checkpoint_due(config, state, total_steps):
            _save_run_checkpoint(s, state, best)
    return best


def _save_run_checkpoint(s: _Session, state: TrainState, best: dict | None) -> None:
    """The checkpoint, written by rank 0 with every process's RNG states."""
    rank_rng = distributed.gather(_rng_state(s.device), s.ranks)
    if s.ranks.main:
        save_checkpoint(
            s.model, s.optimizer, s.scheduler, state, s.output_dir, s.config.keep_checkpoints, s.run, best, rank_rng
        )


def _restore_weights(model, weights: dict) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in weights:
                p.copy_(weights[name].to(p.device))


def _write_outputs(s: _Session) -> None:
    """The adapter with tokenizer and chat template, and compare.html (base vs fine-tuned); rank 0 writes them,
    every process generates its share of the sheet's answers."""
    from finetune.export import save_adapter

    config = s.config
    if s.ranks.main:
        save_adapter(s.model, s.tokenizer, s.output_dir, base_model=config.model)
    if config.eval.compare_sheet_samples and s.val.records:
        from finetune.compare_sheet import write_compare_sheet

        write_compare_sheet(
            s.model, s.tokenizer, s.val.records, s.output_dir / "compare.html", config.eval.compare_sheet_samples,
            config.eval.max_new_tokens, config.eval.generation_batch_size, config.seed, s.device, s.dtype,
            ranks=s.ranks, progress=s.progress,
        )


class _NoLog:
    """The metrics log of a process other than rank 0: rank 0 writes metrics.jsonl and TensorBoard."""

    def write(self, kind: str, step: int, values: dict) -> None:
        pass

    def close(self) -> None:
        pass


def run_training(
    config: TrainConfig,
    train: Split,
    val: Split,
    tokenizer,
    output_dir: str | Path,
    resume: bool = False,
    show_progress: bool = True,
    model=None,
    on_step: Callable[[int, float], None] | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train LoRA adapters on `train`, evaluating on `val`; write the adapter and logs to `output_dir`.

    `model` may be given (a peft model already on its device), for tests and benchmarks; otherwise it is built
    from `config.model`. A folder holding an earlier run is refused unless `resume`, or `overwrite` (then its
    checkpoints/ and tensorboard/ are cleared first). Launched on several processes (torchrun, accelerate
    launch; finetune.distributed), each trains on its share of every step, and rank 0 writes every file.
    """
    if config.context_length is None:
        raise ValueError("context_length: unset; train_from_folder takes it from the curated folder's manifest")
    ranks = distributed.current_ranks()
    device = distributed.rank_device(config.device, ranks)
    created = distributed.join_process_group(ranks, device)
    try:
        return _run_training(
            config, train, val, tokenizer, Path(output_dir), resume, show_progress, model, on_step, overwrite, ranks,
            device,
        )
    finally:
        distributed.leave_process_group(created)


def _run_training(
    config: TrainConfig, train: Split, val: Split, tokenizer, output_dir: Path, resume: bool, show_progress: bool,
    model, on_step: Callable[[int, float], None] | None, overwrite: bool, ranks: Ranks, device: torch.device,
) -> TrainResult:
    if ranks.main:
        prepare_output_dir(output_dir, resume, overwrite)
        output_dir.mkdir(parents=True, exist_ok=True)
    distributed.barrier(ranks)  # no process reads the folder before rank 0 has cleared it
    if not train.examples:
        raise CurateError("train.jsonl: no example left to train on (all skipped: see data_report.json)")
    config = _with_absolute_model_path(config)
    run = run_settings(config, train)
    # read and checked before the model loads: a refused checkpoint is refused at once
    checkpoint, saved = _checkpoint_to_resume(output_dir, run, ranks) if resume else (None, None)
    dtype, model = _ready_model(config, model, train, device, ranks)
    if ranks.main:
        _write_run_description(output_dir, config, train, val)
    plan = plan_steps(config, train, val, ranks.world_size)
    optimizer, scheduler = make_optimizer(model, config, device, plan.total_steps)

    state, best = TrainState(), None  # best: CPU copy of the trainable weights at the best evaluation
    if saved is not None:
        state = load_checkpoint(checkpoint, model, optimizer, scheduler, saved, ranks)
        best = saved.get("best")
    log = MetricsLog(output_dir, state.step if saved is not None else None) if ranks.main else _NoLog()
    session = _Session(
        config, model, tokenizer, train, val, plan, optimizer, scheduler, device, dtype, log, output_dir, run,
        bleu_sample(val, tokenizer, config), ranks, RunProgress(enabled=show_progress and ranks.main),
    )
    result = TrainResult(
        output_dir=output_dir, steps=state.step, total_steps=plan.total_steps, context_length=config.context_length
    )
    with session.progress:
        best = _train_loop(session, state, best, result, on_step)
        log.close()
        if best is not None and state.best_step != state.step:
            # the adapter (and compare.html) of the best evaluation, not of the last, non-improving one, whether
            # patience ran out or the run reached its last step first; the checkpoint keeps the last weights, as
            # a checkpoint is where training stood
            _restore_weights(model, best)
            result.best_step = state.best_step
        _write_outputs(session)
    distributed.barrier(ranks)  # every process returns once the outputs are written
    result.steps = state.step
    result.stopped_early = state.stopped_early
    result.skipped_over_context = {
        "train": len(train.report.get("skipped_over_context", [])), "val": len(val.report.get("skipped_over_context", [])),
    }
    return result


def train_from_folder(
    curated_dir: str | Path, output_dir: str | Path, config: TrainConfig, resume: bool = False,
    force: bool = False, overwrite: bool = False, show_progress: bool = True,
) -> TrainResult:
    """`curate train`: check the curated folder, tokenize as the curation did, train.

    The tokenizer profile, its chat template and the context come from the folder's manifest.json unless the
    config sets them (finetune.curated.settings_for refuses what contradicts the curation). `force` trains on
    a folder that is not from a passing `curate run`; `overwrite` starts over in an output folder that holds an
    earlier run.
    """
    from curator.tokenize_chat import ChatTokenizer
    from finetune.curated import open_curated_folder, settings_for

    folder = open_curated_folder(curated_dir, force=force)
    modeling.check_model_reference(config.model)  # before tokenizing: a wrong --model is refused at once
    modeling.refuse_folder_code(config.model)  # before tokenizing: a refused model is refused at once
    config = settings_for(config, folder, modeling.model_type(config.model))  # train_config.yaml records it
    tokenizer = ChatTokenizer.load(model=config.tokenizer, tokenizer_path=config.tokenizer_path)
    train = prepare_split(folder.train, tokenizer, config.context_length)
    val = prepare_split(folder.val, tokenizer, config.context_length)
    return run_training(
        config, train, val, tokenizer, output_dir, resume=resume, show_progress=show_progress, overwrite=overwrite
    )
