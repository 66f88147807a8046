"""The model side of training: device and precision, base model + LoRA (peft), and the loss.

The loss is computed from the decoder's hidden states rather than from `model(labels=...)`: only positions
with a target go through `lm_head`, in chunks of `loss_chunk_tokens` that are recomputed in backward, so the
(tokens x 32,000) float32 logits of a long row are never held at once (the memory trick of Liger's and
Apple's cut-cross-entropy, done here with plain torch.utils.checkpoint). The loss is a SUM over target
tokens; the training loop divides by the trained-token count of the whole optimizer step, so gradient
accumulation weights every token equally whatever the micro-batch it fell in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from finetune.data import IGNORE_INDEX

if TYPE_CHECKING:
    from finetune.config import LoraSettings, TrainConfig


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """bf16 where the hardware has it (CUDA with bf16 support); fp32 otherwise (CPU bf16 is slow and lossy)."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def resolve_attn_implementation(setting: str, device: torch.device) -> str:
    if setting != "auto":
        return setting
    if device.type == "cuda":
        try:
            import flash_attn  # noqa: F401  (varlen kernels make packed rows cost only their own blocks)

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def load_base_model(path: str, dtype: torch.dtype, attn_implementation: str, device: torch.device):
    """The base causal LM from a folder or an already-cached hub id; never downloads."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, attn_implementation=attn_implementation, local_files_only=True
    )
    model.config.use_cache = False
    return model.to(device)


def lora_config(settings: "LoraSettings"):
    from peft import LoraConfig

    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def add_lora(model, settings: "LoraSettings", seed: int):
    """Wrap the base model with fresh LoRA adapters; the init is seeded so a rerun starts from the same point."""
    from peft import get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(model, lora_config(settings))
    # Adapters train in float32 even on a bf16 base (peft's autocast_adapter_dtype default): Adam updates of
    # 2e-5 are below bf16's resolution for weights of order 1e-2.
    return peft_model


def enable_gradient_checkpointing(peft_model) -> None:
    # Non-reentrant checkpointing needs no `enable_input_require_grads` hook on the frozen embeddings and
    # works with keyword arguments (position_ids); it is what PyTorch recommends since 2.1.
    lm = peft_model.get_base_model()
    if hasattr(lm, "activation_checkpointing_enable"):  # the name since transformers 5.2x; the old one warns
        lm.activation_checkpointing_enable({"use_reentrant": False})
    else:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def compile_decoder_layers(peft_model) -> None:
    """torch.compile each decoder layer (regional compilation: one graph reused by every layer)."""
    for layer in peft_model.get_base_model().model.layers:
        layer.compile(dynamic=False)


def causal_lm(model):
    """The transformers *ForCausalLM under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def hidden_states(model, batch: dict) -> torch.Tensor:
    """Last hidden states (B, L, H) of a packed batch: position ids and no 2D mask (see finetune.data)."""
    lm = causal_lm(model)
    device = lm.device
    out = lm.model(
        input_ids=batch["input_ids"].to(device, non_blocking=True),
        position_ids=batch["position_ids"].to(device, non_blocking=True),
        attention_mask=None,
        use_cache=False,  # a cache object would switch off packed-sequence detection in the mask builder
    )
    return out.last_hidden_state


def logits(model, batch: dict) -> torch.Tensor:
    """Full logits (B, L, V) in float32: for tests and small evaluations only."""
    h = hidden_states(model, batch)
    return causal_lm(model).lm_head(h).float()


def _chunk_loss(head: torch.nn.Module, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(h).float(), targets, reduction="sum")


def loss_sum(model, batch: dict, chunk_tokens: int) -> tuple[torch.Tensor, int]:
    """Sum of token cross-entropies over the batch's targets (float32), and the number of target tokens."""
    h = hidden_states(model, batch)
    targets = batch["targets"].to(h.device, non_blocking=True)
    keep = targets != IGNORE_INDEX
    h = h[keep]
    t = targets[keep]
    head = causal_lm(model).lm_head
    total = h.new_zeros((), dtype=torch.float32)
    for start in range(0, t.numel(), chunk_tokens):
        hs, ts = h[start : start + chunk_tokens], t[start : start + chunk_tokens]
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss, head, hs, ts, use_reentrant=False)
        else:
            total = total + _chunk_loss(head, hs, ts)
    return total, int(t.numel())


def autocast_context(device: torch.device, dtype: torch.dtype):
    """bf16 autocast on CUDA so the float32 adapters meet the bf16 base in bf16 matmuls."""
    if dtype == torch.bfloat16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    import contextlib

    return contextlib.nullcontext()


def build_training_model(config: "TrainConfig", device: torch.device, dtype: torch.dtype):
    """Base model + LoRA + checkpointing (+ compile), ready for the loop."""
    attn = resolve_attn_implementation(config.attn_implementation, device)
    base = load_base_model(config.model, dtype, attn, device)
    model = add_lora(base, config.lora, config.seed)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if config.compile:
        compile_decoder_layers(model)
    return model
