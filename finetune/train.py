"""The LoRA training loop, in view: no transformers Trainer, no callbacks.

One optimizer step = `grad_accumulation` micro-batches of `micro_batch_rows` packed rows. The step's loss is
sum(token cross-entropy) / (trained tokens in the whole step): each micro-batch backpropagates its SUM divided
by the step's token count, so the accumulated gradient is exactly the gradient of one big batch's token mean
(tested: one batch of N == N/2 with 2 accumulation steps). Averaging per micro-batch instead would weight a
token in a short micro-batch more than one in a long micro-batch (the gradient-accumulation bug transformers
fixed in 4.46).

Data order is a pure function of (seed, epoch, step), and each checkpoint holds the adapter, AdamW, the
schedule, the early-stopping state and every RNG state, so `--resume` continues with the very batches and
dropout masks the uninterrupted run would have used: the loss curve is the same (tested; exactly on CPU, on
CUDA up to its non-deterministic kernels). A checkpoint also records the settings that define the run and a
fingerprint of the tokenized train split; `--resume` refuses a config or split that differs in them, naming
the keys (RESUMABLE_KEYS lists what may change: devices, kernels, logging, checkpointing, evaluation).
trainer_state.pt holds tensors and plain Python values only and is read with torch.load(weights_only=True):
a checkpoint is data, and unpickling anything else could run code, so a file that needs more (one written by
an older curator, or crafted) is refused, never loaded unsafely.

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
from finetune import modeling
from finetune.config import TrainConfig
from finetune.data import (
    ChatRecord,
    Example,
    collate,
    encode_records,
    epoch_micro_batches,
    make_rows,
    prompt_and_reference,
    read_chat_jsonl,
    sample_indices,
)
from finetune.evaluate import corpus_bleu, generate, streaming_perplexity
from finetune.output_dir import prepare_output_dir

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


def _rng_state() -> dict:
    """Every RNG state as tensors and plain values (no numpy array: weights_only does not load one)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached_gaussian)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    _set_cuda_rng_states(state.get("cuda") or [])


def _set_cuda_rng_states(states: list) -> None:
    """The CUDA RNG state of each device present; a host with fewer GPUs than the checkpoint's resumes too."""
    if not torch.cuda.is_available():
        return
    for index, device_state in enumerate(states[: torch.cuda.device_count()]):
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
    best: dict | None = None,
) -> Path:
    """checkpoints/step-N/: the adapter (PEFT format) and trainer_state.pt; written to a temp folder, then moved.

    trainer_state.pt holds AdamW, the schedule, TrainState, the RNG states, the run settings (`run_settings`)
    and, with early stopping, the best evaluation's adapter weights (`best`).
    """
    root = output_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.step:07d}"
    tmp = root / f".tmp-step-{state.step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    torch.save(
        {"format": CHECKPOINT_FORMAT, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
         "state": asdict(state), "rng": _rng_state(), "run": run, "best": best},
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


def load_checkpoint(path: Path, model, optimizer, scheduler, saved: dict | None = None) -> TrainState:
    """Adapter weights, AdamW, schedule and RNG states of checkpoint `path` into the given objects."""
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
        _set_rng_state(saved["rng"])
        return TrainState(**saved["state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # a damaged or hand-made file
        what = f"{type(exc).__name__}: {modeling.first_line(exc)}"
        raise CurateError(f"{path / 'trainer_state.pt'}: does not restore into this run ({what})") from exc


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(  # on stderr, as every command's progress: stdout stays for what a user pipes on
        TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[tps]:>8,.0f} tok/s"),
        TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled,
        console=Console(stderr=True),
    )


@dataclass
class Split:
    """One split, tokenized: examples, the records they came from, and the skip report."""

    records: list[ChatRecord]
    examples: list[Example]
    report: dict


def prepare_split(path: Path, tokenizer, context_length: int) -> Split:
    records = read_chat_jsonl(path)
    examples, report = encode_records(records, tokenizer, context_length)
    return Split(records, examples, asdict(report))


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
    checkpoints/ and tensorboard/ are cleared first).
    """
    output_dir = Path(output_dir)
    prepare_output_dir(output_dir, resume, overwrite)
    output_dir.mkdir(parents=True, exist_ok=True)
    if not train.examples:
        raise CurateError("train.jsonl: no example left to train on (all skipped: see data_report.json)")
    if Path(config.model).is_dir():
        # adapter_config.json (base_model_name_or_path) and train_config.yaml must name the base model from any
        # working directory: export, vLLM and PeftModel load it from there
        config = config.model_copy(update={"model": os.path.abspath(config.model)})
    run = run_settings(config, train)
    checkpoint, saved = None, None
    if resume:  # read and checked before the model loads: a refused checkpoint is refused at once
        checkpoint = latest_checkpoint(output_dir)
        if checkpoint is None:
            raise CurateError(f"{output_dir / 'checkpoints'}: no checkpoint to resume from")
        saved = read_trainer_state(checkpoint)
        check_same_run(checkpoint, saved.get("run"), run)
    device = modeling.resolve_device(config.device)
    dtype = modeling.resolve_dtype(config.precision, device)
    _seed_everything(config.seed)
    if model is None:
        model = modeling.build_training_model(config, device, dtype)
    if config.packing:
        modeling.check_packed_attention(model, device, dtype, config.micro_batch_rows)
    vocab = modeling.causal_lm(model).get_input_embeddings().num_embeddings
    biggest = max(max(e.ids) for e in train.examples)
    if biggest >= vocab:
        raise CurateError(f"{config.model}: embedding holds {vocab} tokens but the tokenizer produced id {biggest}")

    (output_dir / "train_config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    (output_dir / "data_report.json").write_text(json.dumps({"train": train.report, "val": val.report}, indent=2))

    rows = make_rows(train.examples, config.context_length, config.packing)
    val_rows = make_rows(val.examples, config.context_length, config.packing)
    micro_per_epoch = math.ceil(len(rows) / config.micro_batch_rows)
    steps_per_epoch = math.ceil(micro_per_epoch / config.grad_accumulation)
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))

    from transformers import get_cosine_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=config.learning_rate, betas=tuple(config.adam_betas), weight_decay=config.weight_decay,
        fused=device.type == "cuda",
    )
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)

    keep_best = config.eval.early_stopping_patience is not None
    best: dict | None = None  # CPU copy of the trainable weights at the best evaluation (early stopping only)
    state = TrainState()
    resume_step = None
    if saved is not None:
        state = load_checkpoint(checkpoint, model, optimizer, scheduler, saved)
        best = saved.get("best")
        resume_step = state.step
    log = MetricsLog(output_dir, resume_step)

    # The fixed BLEU sample: the last trained assistant turn of each sampled record is the reference, the
    # conversation before it the prompt (cut where that turn's training target starts).
    bleu_items = []
    if config.eval.bleu_samples:
        for i in sample_indices(len(val.records), config.eval.bleu_samples, config.seed):
            item = prompt_and_reference(val.records[i], tokenizer)
            if item is not None and len(item.ids) + config.eval.max_new_tokens <= config.context_length:
                bleu_items.append(item)

    def evaluate_now() -> dict:
        ppl = streaming_perplexity(
            model, val.examples, val_rows, config.micro_batch_rows, tokenizer.pad_id, config.loss_chunk_tokens,
            device, dtype,
        )
        values = {"val_loss": ppl.loss, "val_perplexity": ppl.perplexity, "val_tokens": ppl.n_tokens}
        if bleu_items:
            answers = generate(
                model, [item.ids for item in bleu_items], tokenizer, config.eval.max_new_tokens,
                config.eval.generation_batch_size, device, dtype,
            )
            values["bleu"] = corpus_bleu(answers, [item.reference for item in bleu_items])
            values["bleu_samples"] = len(bleu_items)
        return values

    result = TrainResult(output_dir=output_dir, steps=state.step, total_steps=total_steps)
    model.train()
    progress = _progress(show_progress)
    with progress:
        task = progress.add_task("train", total=total_steps, completed=state.step, tps=0.0, loss=float("nan"))
        while state.step < total_steps and not state.stopped_early:
            epoch, step_in_epoch = divmod(state.step, steps_per_epoch)
            micro = epoch_micro_batches(rows, config.micro_batch_rows, config.seed, epoch)
            step_micro = micro[step_in_epoch * config.grad_accumulation : (step_in_epoch + 1) * config.grad_accumulation]
            batches = [collate(train.examples, mb, tokenizer.pad_id) for mb in step_micro]
            n_target = sum(b["n_target_tokens"] for b in batches)
            n_real = sum(b["n_real_tokens"] for b in batches)

            started = time.perf_counter()
            loss_total = 0.0
            for batch in batches:
                with modeling.autocast_context(device, dtype):
                    loss, _ = modeling.loss_sum(model, batch, config.loss_chunk_tokens)
                (loss / n_target).backward()
                loss_total += float(loss.detach())
            if config.max_grad_norm is not None:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
            else:
                grad_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started

            state.step += 1
            state.tokens_seen += n_real
            step_loss = loss_total / n_target
            result.train_losses.append(step_loss)
            tps = n_real / seconds if seconds > 0 else 0.0
            progress.update(task, completed=state.step, tps=tps, loss=step_loss)
            if on_step is not None:
                on_step(state.step, step_loss)
            if state.step % config.log_every_steps == 0 or state.step == total_steps:
                log.write("train", state.step, {
                    "loss": step_loss, "lr": lr, "grad_norm": grad_norm, "epoch": state.step / steps_per_epoch,
                    "tokens_per_s": tps, "target_tokens": n_target, "tokens": n_real, "tokens_seen": state.tokens_seen,
                })

            end_of_epoch = state.step % steps_per_epoch == 0
            due = config.eval.every_steps and state.step % config.eval.every_steps == 0
            if val.examples and (due or (config.eval.every_steps is None and end_of_epoch) or state.step == total_steps):
                values = evaluate_now()
                if values["val_loss"] < state.best_val_loss:
                    state.best_val_loss = values["val_loss"]
                    state.best_step = state.step
                    state.evals_without_improvement = 0
                    if keep_best:
                        best = {k: p.detach().to("cpu", copy=True) for k, p in model.named_parameters() if p.requires_grad}
                else:
                    state.evals_without_improvement += 1
                patience = config.eval.early_stopping_patience
                if patience is not None and state.evals_without_improvement >= patience:
                    state.stopped_early = True
                    values["early_stop"] = True
                    values["best_step"] = state.best_step
                    values["best_val_loss"] = state.best_val_loss
                log.write("eval", state.step, values)
                result.evals.append({"step": state.step, **values})

            save_due = config.save_every_steps and state.step % config.save_every_steps == 0
            if save_due or state.step == total_steps or state.stopped_early:
                save_checkpoint(model, optimizer, scheduler, state, output_dir, config.keep_checkpoints, run, best)
    log.close()

    if best is not None and state.best_step != state.step:
        # the adapter (and compare.html) of the best evaluation, not of the last, non-improving one, whether
        # patience ran out or the run reached its last step first; the checkpoint above keeps the last
        # weights, as a checkpoint is where training stood
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in best:
                    p.copy_(best[name].to(p.device))
        result.best_step = state.best_step

    from finetune.export import save_adapter

    save_adapter(model, tokenizer, output_dir, base_model=config.model)
    result.steps = state.step
    result.stopped_early = state.stopped_early
    result.skipped_over_context = {
        "train": len(train.report.get("skipped_over_context", [])), "val": len(val.report.get("skipped_over_context", [])),
    }
    if config.eval.compare_sheet_samples and val.records:
        from finetune.compare_sheet import write_compare_sheet

        write_compare_sheet(
            model, tokenizer, val.records, output_dir / "compare.html", config.eval.compare_sheet_samples,
            config.eval.max_new_tokens, config.eval.generation_batch_size, config.seed, device, dtype,
        )
    return result


def train_from_folder(
    curated_dir: str | Path, output_dir: str | Path, config: TrainConfig, resume: bool = False,
    force: bool = False, overwrite: bool = False, show_progress: bool = True,
) -> TrainResult:
    """`curate train`: check the curated folder, tokenize with the curation's tokenizer, train.

    `force` trains on a folder that is not from a passing `curate run`; `overwrite` starts over in an output
    folder that holds an earlier run.
    """
    from curator.tokenize_chat import ChatTokenizer
    from finetune.curated import DEFAULT_TOKENIZER, open_curated_folder, tokenizer_from_manifest

    folder = open_curated_folder(curated_dir, force=force)
    modeling.check_model_reference(config.model)  # before tokenizing: a wrong --model is refused at once
    modeling.refuse_folder_code(config.model)  # before tokenizing: a refused model is refused at once
    name = config.tokenizer or tokenizer_from_manifest(folder.manifest) or DEFAULT_TOKENIZER
    tokenizer = ChatTokenizer.load(model=name)
    config = config.model_copy(update={"tokenizer": name})  # train_config.yaml records what was used
    train = prepare_split(folder.train, tokenizer, config.context_length)
    val = prepare_split(folder.val, tokenizer, config.context_length)
    return run_training(
        config, train, val, tokenizer, output_dir, resume=resume, show_progress=show_progress, overwrite=overwrite
    )
