"""TrainConfig: every default of a LoRA training run, in one place.

The defaults are the recipe of the model selection guide: LoRA rank 16, alpha 32, dropout 0.05 on
every linear projection of Mistral-7B-Instruct-v0.2 (q, k, v, o, gate, up, down; the QLoRA paper, Dettmers et
al. 2023, found adapting all linear layers is what matches full fine-tuning), 3 epochs, learning rate 2e-5,
bf16 where the hardware has it; the tokenizer and the context are those the curated data was checked with
(finetune/curated.py). `finetune/default.yaml` is the same defaults with a comment on each; a test keeps the
two equal. A user file (`--config train.yaml`) and dotted overrides
(`-s lora.r=8`) are applied on top, with errors that name the file and the key.

This module imports no torch: `curate train --help` must not pay for it. YAML is read through curator.yaml_io
(duplicate keys refused, one-line errors with the line number), as the pipeline's config is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from curator.config import _allowed_keys, set_dotted
from curator.errors import CurateError
from curator.yaml_io import load_yaml, parse_value

DEFAULT_YAML = Path(__file__).with_name("default.yaml")


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: float = Field(32, gt=0, description="LoRA scaling numerator: updates are scaled by alpha / r")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="module names that get an adapter (Mistral's linear projections)",
    )


class EvalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    every_steps: int | None = Field(
        None, ge=1, description="evaluate every N optimizer steps; null evaluates at the end of each epoch"
    )
    bleu_samples: int = Field(32, ge=0, description="val prompts generated for BLEU (fixed, seeded); 0 skips BLEU")
    max_new_tokens: int = Field(256, ge=1, description="generation length for BLEU and the comparison sheet")
    generation_batch_size: int = Field(8, ge=1, description="prompts generated together (left padded)")
    early_stopping_patience: int | None = Field(
        None, ge=1, description="stop after this many evaluations without a lower val loss and save the adapter of "
        "the best one; null never stops"
    )
    compare_sheet_samples: int = Field(
        16, ge=0, description="val prompts in compare.html (base vs fine-tuned) written at the end; 0 skips it"
    )


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        "mistralai/Mistral-7B-Instruct-v0.2", description="base model: a local folder or a hub id (already cached)"
    )
    tokenizer: str | None = Field(
        None,
        description="tokenizer profile or HF tokenizer folder; null uses the one the curation run used "
        "(manifest.json stages.tokens), else mistral-7b-instruct-v0.2; another than the curation's is refused",
    )
    tokenizer_path: str | None = Field(
        None, description="folder with the tokenizer of a profile that is not built in; null uses the curation run's"
    )
    seed: int = Field(
        0, description="seeds data order, LoRA init, dropout and the BLEU sample: the same loss curve on a rerun "
        "(exactly on CPU; on CUDA up to its non-deterministic kernels)",
    )
    lora: LoraSettings = Field(default_factory=LoraSettings)
    epochs: float = Field(3, gt=0, description="passes over train.jsonl (a fraction stops mid-epoch)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps (overrides epochs)")
    learning_rate: float = Field(2e-5, gt=0, description="peak learning rate of AdamW")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay on the adapter weights")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="share of steps with linear warmup, then cosine decay")
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip the global gradient norm; null disables")
    context_length: int | None = Field(
        None, ge=16, description="tokens per row; longer examples are skipped and counted. null uses the context the "
        "curated data was checked against (manifest.json), else 8192; a larger one than that is refused",
    )
    packing: bool = Field(True, description="pack examples into rows of context_length with confined attention")
    micro_batch_rows: int = Field(1, ge=1, description="rows per forward pass")
    grad_accumulation: int = Field(
        8, ge=1, description="micro-batches per optimizer step and process (several processes: each takes this many)"
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto = bf16 on a CUDA device with native bf16 (compute capability 8.0+), else fp32"
    )
    attn_implementation: Literal["auto", "sdpa", "sdpa_segments", "eager", "flash_attention_2", "flex_attention"] = Field(
        "auto", description="auto on CUDA = attention within each packed example only: flash_attention_2 when "
        "installed, in bf16 / fp16; else flex_attention (block-sparse, needs triton); else sdpa_segments (SDPA per "
        "example); auto on CPU = sdpa. sdpa and eager compute each whole row and mask it (finetune/attention.py)",
    )
    quantization: Literal["none", "nf4", "int8"] = Field(
        "none", description="QLoRA: load the frozen base in 4-bit NormalFloat with double quantization (nf4) or "
        "8-bit (int8) through bitsandbytes; the adapter stays float32 and loads on the unquantized base",
    )
    gradient_checkpointing: bool = Field(True, description="recompute each decoder layer in backward")
    loss_chunk_tokens: int = Field(
        4096, ge=1, description="lm_head + cross-entropy run over this many trained tokens at a time"
    )
    compile: bool = Field(
        False, description="torch.compile each decoder layer with dynamic shapes (CUDA; first steps are slow); "
        "evaluation and generation run eager",
    )
    device: str = Field(
        "auto", description="auto = cuda when available, else cpu; launched on several processes, cuda:LOCAL_RANK"
    )
    log_every_steps: int = Field(1, ge=1, description="write metrics every N optimizer steps")
    save_every_steps: int | None = Field(200, ge=1, description="checkpoint every N optimizer steps; null: at end")
    keep_checkpoints: int = Field(2, ge=1, description="checkpoints kept on disk (oldest removed first)")
    eval: EvalSettings = Field(default_factory=EvalSettings)


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CurateError(f"{path}: cannot read train config: {exc.strerror}") from exc
    data = load_yaml(text, path) or {}  # duplicate keys refused; errors one line with the line number
    if not isinstance(data, dict):
        raise CurateError(f"{path}: a train config holds a mapping, got {type(data).__name__}")
    return data


def load_train_config(path: str | Path | None = None, overrides: tuple[str, ...] | list[str] = ()) -> TrainConfig:
    """Defaults, then a YAML file (optional), then `key.sub=value` overrides (values are YAML scalars)."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        data = _read_yaml(Path(path))
    set_by: dict[str, str] = {}  # key -> the override that set it, to name it in an error
    for item in overrides:
        if "=" not in item:
            raise CurateError(f"override {item!r}: expected key.sub=value")
        key, value = item.split("=", 1)
        set_dotted(data, key.strip(), parse_value(value, f"-s {item}"))
        set_by[key.strip()] = f"-s {item}"
        source = f"{source} + overrides" if "overrides" not in source else source
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise CurateError(_describe(exc, source, set_by)) from exc


def _describe(exc: ValidationError, source: str, set_by: dict[str, str]) -> str:
    """One line for the first error, as `curate run -s` says it: `-s key=value: message` when an override
    set the failing key, and the keys allowed where an unknown one was given."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        allowed = _allowed_keys(first["loc"][:-1], TrainConfig)
        if allowed:
            msg += f"; allowed: {', '.join(allowed)}"
    if where in set_by:
        return f"{set_by[where]}: {msg}"
    return f"{source}: {where}: {msg} ({len(exc.errors())} error(s) in train config)"


def default_yaml_config() -> TrainConfig:
    """The commented default file, parsed: equal to TrainConfig() (tested)."""
    return TrainConfig.model_validate(_read_yaml(DEFAULT_YAML))
