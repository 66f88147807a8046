"""The model side of training: device and precision, base model + LoRA (peft), and the loss.

The loss is computed from the decoder's hidden states rather than from `model(labels=...)`: only positions
with a target go through `lm_head`, in chunks of `loss_chunk_tokens` that are recomputed in backward, so the
(tokens x 32,000) float32 logits of a long row are never held at once (the memory trick of Liger's and
Apple's cut-cross-entropy, done here with plain torch.utils.checkpoint). The loss is a SUM over target
tokens; the training loop divides by the trained-token count of the whole optimizer step, so gradient
accumulation weights every token equally whatever the micro-batch it fell in.

A base model is loaded with transformers' own classes only: every transformers call passes
trust_remote_code=False, and a folder that would need its own Python code is refused before loading
(`refuse_folder_code`), so nothing prompts and no code from a model folder runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from curator.errors import CurateError
from curator.model_profiles import NO_FOLDER_CODE
from curator.model_profiles import refuse_folder_code as refuse_tokenizer_code
from finetune import attention
from finetune.data import IGNORE_INDEX, flatten_rows

if TYPE_CHECKING:
    from finetune.config import LoraSettings, TrainConfig


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """bf16 where the hardware has it natively; fp32 otherwise (CPU bf16 is slow and lossy).

    `auto` asks the configured device itself (cuda:1 is not the current device in every process) for its
    compute capability: bf16 tensor cores start with Ampere (8.0). `torch.cuda.is_bf16_supported()` is not
    used: it answers for the current device and, by default, counts the emulation of T4 / V100 (7.x), where
    bf16 runs several times slower than fp32.
    """
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
        return torch.bfloat16
    return torch.float32


def resolve_attn_implementation(setting: str, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """`auto` on CUDA: an implementation that computes attention within each packed example only
    (finetune.attention): flash_attention_2 when flash-attn is installed and the weights are bf16 / fp16 (its
    kernels take nothing else: an fp32 model would raise at the first forward), else flex_attention where it
    runs (triton), else sdpa_segments. `auto` on CPU: sdpa (flex has no backward there; CPU runs are small)."""
    if setting != "auto":
        return setting
    if device.type != "cuda":
        return "sdpa"
    if dtype in (torch.bfloat16, torch.float16):
        try:
            import flash_attn  # noqa: F401  (varlen kernels make packed rows cost only their own blocks)

            return "flash_attention_2"
        except ImportError:
            pass
    if attention.flex_attention_runs(device):
        return "flex_attention"
    return attention.SDPA_SEGMENTS


def check_attention_trains(attn_implementation: str, device: torch.device) -> None:
    """Refuse, in one line, an attention implementation that has no backward on `device` (flex on CPU)."""
    if attn_implementation == "flex_attention" and device.type != "cuda":
        raise CurateError(
            f"attn_implementation: flex_attention has no backward on {device.type} in torch {torch.__version__}; "
            "set attn_implementation: sdpa_segments (or auto)"
        )


def model_folder(model: str) -> Path | None:
    """The folder of `model` on disk: the folder itself, or the cached hub snapshot holding its config.json."""
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(model, "config.json")
    except ValueError:  # not a valid repo id: from_pretrained says so
        return None
    return Path(found).parent if isinstance(found, str) else None


def model_type(model: str) -> str | None:
    """The `model_type` of `model`'s config.json (its family: mistral, llama, phi3 ...), None when unknown."""
    folder = model_folder(model)
    path = folder / "config.json" if folder is not None else None
    if path is None or not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CurateError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    value = config.get("model_type") if isinstance(config, dict) else None
    return value if isinstance(value, str) else None


def refuse_folder_code(model: str) -> None:
    """Refuse, in one line naming the file, a model that would need Python code from its folder to load.

    config.json needs it when its model_type is not one transformers ships (`auto_map` then names the folder's
    own classes); a known model_type loads with transformers' classes, an `auto_map` beside it unused.
    tokenizer_config.json: any `auto_map` is refused (curator.model_profiles.refuse_folder_code).
    """
    folder = model_folder(model)
    if folder is None:
        return
    refuse_tokenizer_code(folder)
    path = folder / "config.json"
    if not path.is_file():
        return
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CurateError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    import transformers
    from transformers import CONFIG_MAPPING

    config = config if isinstance(config, dict) else {}
    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type in CONFIG_MAPPING:
        return
    if "auto_map" in config:
        raise CurateError(f"{path}: needs its own Python code (auto_map); {NO_FOLDER_CODE}")
    what = f"model_type {model_type!r}" if model_type is not None else "no model_type"
    raise CurateError(f"{path}: {what} is unknown to transformers {transformers.__version__}; {NO_FOLDER_CODE}")


def first_line(exc: Exception) -> str:
    """The first non-empty line of an exception's message (transformers' run to a paragraph)."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def check_model_reference(value: str) -> None:
    """Refuse at once a --model that is neither a folder nor a hub id already in the local cache.

    Never touches the network: a value that looks like a path (./x, /x, ~/x, a/b/c) is only ever a folder, and a
    hub id is looked up in the cache only, so the user learns which of the two was wrong in well under a second.
    """
    from pathlib import Path

    if Path(value).expanduser().is_dir():
        return
    looks_like_path = value.startswith((".", "/", "~")) or "\\" in value or value.count("/") > 1 or Path(value).exists()
    if looks_like_path:
        raise CurateError(f"{value}: no such model folder")
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(value, "config.json")
    except ValueError:  # huggingface_hub's HFValidationError: not a valid repo id either
        cached = None
    if not isinstance(cached, str):
        raise CurateError(f"{value}: not a model folder, nor a hub model id in the local cache (download it first)")


def load_base_model(
    path: str, dtype: torch.dtype, attn_implementation: str, device: torch.device, quantization: str = "none"
):
    """The base causal LM from a folder or an already-cached hub id; never downloads, never runs folder code.

    With `quantization` (nf4 / int8) the linear weights are quantized by bitsandbytes as they load, on `device`
    (a quantized model cannot be moved afterwards).
    """
    from transformers import AutoModelForCausalLM

    refuse_folder_code(path)
    attention.register_sdpa_segments()
    placement = {}
    if quantization != "none":
        placement = {"quantization_config": quantization_config(quantization, dtype), "device_map": {"": str(device)}}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, attn_implementation=attn_implementation, local_files_only=True, trust_remote_code=False,
            **placement,
        )
    except (OSError, ValueError) as exc:  # not cached, weights missing, not a causal LM
        raise CurateError(f"{path}: cannot load the base model: {first_line(exc)}") from exc
    model.config.use_cache = False
    return model if placement else model.to(device)


def require_bitsandbytes(quantization: str) -> None:
    """Refuse `quantization` without bitsandbytes installed, in one line naming the extra that brings it."""
    import importlib.util

    if quantization != "none" and importlib.util.find_spec("bitsandbytes") is None:
        raise CurateError(
            f"quantization: {quantization} needs bitsandbytes: pip install 'curator[train]' (or set quantization: none)"
        )


def quantization_config(quantization: str, compute_dtype: torch.dtype):
    """transformers' BitsAndBytesConfig for `nf4` (the QLoRA recipe: NormalFloat4, double quantization of the
    scales, matmuls in the run's dtype) or `int8` (LLM.int8(), outliers in 16 bit)."""
    from transformers import BitsAndBytesConfig

    if quantization == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"unknown quantization {quantization!r}")


def check_quantization_runs(quantization: str, device: torch.device, dtype: torch.dtype) -> None:
    """Refuse, in one line, a bitsandbytes that cannot run `quantization` on `device`.

    bitsandbytes imports on machines it has no kernels for and fails only at the first quantized matmul, deep
    in the first step; one 64 x 64 layer through forward and backward finds that out before the model loads.
    """
    require_bitsandbytes(quantization)
    if quantization == "none":
        return
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its import warns about optional kernel packages it falls back from
            import bitsandbytes as bnb

            if quantization == "nf4":
                layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=dtype, quant_type="nf4")
            else:
                layer = bnb.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False)
            layer = layer.to(device)  # quantizes the weight
            x = torch.randn(2, 64, device=device, dtype=dtype, requires_grad=True)
            layer(x).float().sum().backward()
    except Exception as exc:  # noqa: BLE001  (whatever the backend raises, the user gets one line)
        version = getattr(sys.modules.get("bitsandbytes"), "__version__", "?")
        raise CurateError(
            f"quantization: {quantization} does not run on {device} with bitsandbytes {version} and torch "
            f"{torch.__version__}: {first_line(exc)}; set quantization: none"
        ) from exc


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


def compile_decoder_layers(peft_model, backend="inductor") -> None:
    """torch.compile each decoder layer (regional compilation: one graph reused by every layer).

    The shapes are dynamic, so rows of every width share one graph: compiled for fixed shapes, each new row
    width recompiled until torch's recompile limit (8) sent the layers back to eager for the rest of the run.
    The embeddings' output is made to require grad, so the first layer's input is like every other layer's (a
    requires_grad guard would otherwise give it graphs of its own). Evaluation and generation run eager
    (finetune.evaluate). `backend`: tests count compilations with a cheap one.

    Under gradient checkpointing the layer's forward runs inside torch.utils.checkpoint, which dynamo traces only
    when the forward mutates no Python state; else it runs the whole layer eager and compiles nothing. Models
    of transformers >= 5.25 (which installs the `kernels` package) wrap attention's forward in kernels'
    `use_kernelized_func`, which sets and then resets a module-level variable on every call. That leaves nothing
    behind, so not replaying it in the backward's recomputation is harmless: dynamo is told so, while the
    layers compile only (a config patch around each compiled call, not a process-wide setting).
    """
    causal_lm(peft_model).enable_input_require_grads()
    dynamo_config = torch._dynamo.config
    skip_replay = hasattr(dynamo_config, "skip_fwd_side_effects_in_bwd_under_checkpoint")  # older torch: no such flag
    for layer in peft_model.get_base_model().model.layers:
        layer.compile(backend=backend, dynamic=True)
        if skip_replay:
            patch = dynamo_config.patch(skip_fwd_side_effects_in_bwd_under_checkpoint=True)
            layer._compiled_call_impl = patch(layer._compiled_call_impl)


def causal_lm(model):
    """The transformers *ForCausalLM under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def needs_flat_rows(attn_implementation: str | None) -> bool:
    """True for attention that finds example boundaries in position ids only when the batch is one row.

    transformers' flash-attention path (modeling_flash_attention_utils._is_packed_sequence) turns position ids
    into varlen `cu_seqlens` for batch size 1 only; with 2+ rows it runs the dense kernel and examples packed in
    a row attend to each other. Hub kernels and paged variants named "...flash..." go through the same path.
    """
    return attn_implementation is not None and "flash" in attn_implementation


def hidden_states(model, batch: dict) -> torch.Tensor:
    """Last hidden states (B, L, H) of a packed batch: position ids and no 2D mask (see finetune.data).

    Under flash-attention the B rows run as one flattened row (finetune.data.flatten_rows), the layout its
    varlen path confines per example; the result is reshaped back to (B, L, H).
    """
    lm = causal_lm(model)
    device = lm.device
    shape = batch["input_ids"].shape
    if shape[0] > 1 and needs_flat_rows(getattr(lm.config, "_attn_implementation", None)):
        batch = flatten_rows(batch)
    out = lm.model(
        input_ids=batch["input_ids"].to(device, non_blocking=True),
        position_ids=batch["position_ids"].to(device, non_blocking=True),
        attention_mask=None,
        use_cache=False,  # a cache object would switch off packed-sequence detection in the mask builder
    )
    return out.last_hidden_state.reshape(*shape, -1)


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


def check_packed_attention(model, device: torch.device, dtype: torch.dtype, micro_batch_rows: int = 1) -> None:
    """Refuse to train on packed rows when attention would cross example boundaries.

    Packing relies on transformers deriving a block-diagonal mask from the position ids (see finetune.data):
    sdpa / eager / flex do so since transformers 4.54 (masking_utils.find_packed_sequence_indices), flash-attn 2
    through varlen kernels, sdpa_segments by splitting each row where its position ids restart
    (finetune.attention). The tests show packed == unpacked for the transformers they run with, on CPU with
    sdpa; this guard checks the installed transformers with the run's own architecture, attention
    implementation, device, dtype and rows per micro-batch (flash-attention confines a batch of one row only),
    in a fraction of a second: a 1-layer random model of the same config class runs `micro_batch_rows` rows,
    each example B after example A (positions 0..5, 0..4), as training does, and B alone. Where attention is
    confined the two agree to rounding (<= 0.02 in bf16 on values of order 3); where B attends to A they
    differ by more than the values themselves (about 4.4). The global RNG is left as it was.
    """
    import warnings

    from transformers import AutoModelForCausalLM

    lm = causal_lm(model)
    attn = getattr(lm.config, "_attn_implementation", None) or "sdpa"
    attention.register_sdpa_segments()
    try:
        config = type(lm.config)(
            vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, initializer_range=0.5, sliding_window=None, use_cache=False,
        )
    except (TypeError, ValueError) as exc:  # an architecture whose config takes other fields
        warnings.warn(f"packed attention not checked for {type(lm.config).__name__}: {exc}", stacklevel=2)
        return
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        torch.manual_seed(0)
        probe = AutoModelForCausalLM.from_config(
            config, attn_implementation=attn, dtype=dtype, trust_remote_code=False
        ).to(device).eval()
        a, b = [5, 17, 33, 64, 9, 71], [90, 3, 45, 12, 100]
        rows = micro_batch_rows
        packed = {
            "input_ids": torch.tensor([a + b] * rows), "position_ids": torch.tensor([list(range(6)) + list(range(5))] * rows),
        }
        alone = {"input_ids": torch.tensor([b]), "position_ids": torch.tensor([list(range(5))])}
        with autocast_context(device, dtype):
            got = hidden_states(probe, packed)[:, len(a):].float()
            want = hidden_states(probe, alone)[0].float()
    diff = float((got - want).abs().max())
    if not diff <= 0.1 * float(want.abs().max()):
        import transformers

        raise CurateError(
            f"packed rows are not confined to their examples with transformers {transformers.__version__} and "
            f"attn_implementation {attn} at {micro_batch_rows} row(s) per micro-batch (an example's hidden states change by {diff:.3g} when another precedes it "
            "in the row): install transformers>=4.56 or set packing: false"
        )


def autocast_context(device: torch.device, dtype: torch.dtype):
    """bf16 autocast on CUDA so the float32 adapters meet the bf16 base in bf16 matmuls."""
    if dtype == torch.bfloat16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    import contextlib

    return contextlib.nullcontext()


def build_training_model(config: "TrainConfig", device: torch.device, dtype: torch.dtype):
    """Base model (quantized with `config.quantization`) + LoRA + checkpointing (+ compile), ready for the loop."""
    attn = resolve_attn_implementation(config.attn_implementation, device, dtype)
    check_attention_trains(attn, device)
    check_quantization_runs(config.quantization, device, dtype)
    base = load_base_model(config.model, dtype, attn, device, config.quantization)
    if config.quantization != "none":
        base = prepare_for_kbit_training(base, config.gradient_checkpointing)
    model = add_lora(base, config.lora, config.seed)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if config.compile:
        compile_decoder_layers(model)
    return model


def prepare_for_kbit_training(base, gradient_checkpointing: bool):
    """peft's preparation of a quantized base, as PEFT documents for QLoRA: every weight left unquantized
    (norms, embeddings, lm_head) in float32 for stable training, the base frozen, and non-reentrant
    checkpointing (which needs no input-grad hook on the frozen embeddings)."""
    from peft import prepare_model_for_kbit_training

    for module in base.modules():
        # bitsandbytes 0.50 repacks a 4-bit weight for its AVX512-BF16 CPU kernel at the first forward in eval
        # mode and keeps it so; that kernel has no backward, so every step after an evaluation would get wrong
        # gradients through the frozen layers (tested). Evaluation takes the dequantizing path instead.
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return prepare_model_for_kbit_training(
        base, use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )
