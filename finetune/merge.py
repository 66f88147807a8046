"""`export --merge` without the model in memory: the base's safetensors read one weight at a time.

Each weight is read from the base's safetensors files, the adapter's delta (alpha / r) B A added in float32
where it has one, the sum rounded once to the output dtype, and written into shards of at most
`max_shard_bytes`: host memory holds one output shard, one weight in float32 and the (small) adapter, so a
7B merge needs a few GB rather than the 14.5 GB of its bf16 weights (bench/merge_memory_bench.py). The sums
are those of peft's merge with one rounding instead of two (finetune.export.fold_lora_weights, the same
arithmetic on a loaded model, is the path taken when this one cannot be).

Only a plain LoRA adapter (the kind `curate train` writes: no DoRA, bias, rank or alpha patterns, saved
modules or fan_in_fan_out) on a base stored as safetensors whose names match the adapter's is merged here;
`stream_merge` returns False, having written nothing, for anything else.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

ADAPTER_PREFIX = "base_model.model."
LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight")


def base_weight_files(folder: Path) -> list[Path] | None:
    """The base's safetensors files, in the order of its index; None when it has none."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        return [folder / name for name in dict.fromkeys(weight_map.values())]
    single = folder / "model.safetensors"
    return [single] if single.is_file() else None


def lora_scaling(config: dict) -> float | None:
    """alpha / r (alpha / sqrt(r) with rsLoRA) of a plain LoRA adapter_config.json; None for any other kind."""
    plain = (
        config.get("peft_type") == "LORA" and not config.get("use_dora") and not config.get("lora_bias")
        and not config.get("rank_pattern") and not config.get("alpha_pattern") and not config.get("modules_to_save")
        and not config.get("fan_in_fan_out") and not config.get("trainable_token_indices")
    )
    if not plain:
        return None
    r, alpha = config["r"], config["lora_alpha"]
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def lora_pairs(adapter_weights: dict) -> dict[str, tuple] | None:
    """Base weight name -> (A, B) from the adapter's tensors; None when a tensor is not a LoRA A or B."""
    pairs: dict[str, dict] = {}
    for key, tensor in adapter_weights.items():
        suffix = next((s for s in LORA_SUFFIXES if key.endswith(s)), None)
        if suffix is None or not key.startswith(ADAPTER_PREFIX):
            return None
        name = key[len(ADAPTER_PREFIX) : -len(suffix)] + ".weight"
        pairs.setdefault(name, {})[suffix] = tensor
    if any(len(both) != 2 for both in pairs.values()):
        return None
    return {name: (both[LORA_SUFFIXES[0]], both[LORA_SUFFIXES[1]]) for name, both in pairs.items()}


def plan_shards(files: list[Path], dtype, max_shard_bytes: int) -> list[list[tuple[Path, str]]]:
    """(file, weight name) per output shard, in the base's order, each shard at most max_shard_bytes (a bigger
    weight alone in its shard). Reads the headers only."""
    import torch
    from safetensors import safe_open

    shards: list[list[tuple[Path, str]]] = [[]]
    size = 0
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                piece = handle.get_slice(name)
                floating = piece.get_dtype() in ("F16", "BF16", "F32", "F64")
                item = torch.tensor([], dtype=dtype).element_size() if floating else _element_size(piece.get_dtype())
                nbytes = math.prod(piece.get_shape()) * item
                if shards[-1] and size + nbytes > max_shard_bytes:
                    shards.append([])
                    size = 0
                shards[-1].append((path, name))
                size += nbytes
    return shards


def _element_size(safetensors_dtype: str) -> int:
    digits = "".join(c for c in safetensors_dtype if c.isdigit())
    return max(1, int(digits) // 8) if digits else 1


def merged_weight(tensor, pair, scaling: float, dtype):
    """round_dtype(W + scaling * B A), the sum in float32; W cast to dtype when it has no adapter."""
    if not tensor.is_floating_point():
        return tensor
    if pair is None:
        return tensor.to(dtype)
    lora_a, lora_b = pair
    delta = (lora_b.float() @ lora_a.float()) * scaling
    return (tensor.float() + delta).to(dtype)


def stream_merge(base_folder: Path, adapter_dir: Path, out_dir: Path, dtype, max_shard_bytes: int) -> bool:
    """Write the merged model's weights, config and generation config into out_dir; False (nothing written)
    when the adapter or the base is of a kind this path does not merge."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    files = base_weight_files(base_folder)
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    scaling = lora_scaling(config)
    weights = adapter_dir / "adapter_model.safetensors"
    if files is None or scaling is None or not weights.is_file():
        return False
    pairs = lora_pairs(load_file(str(weights)))
    shards = plan_shards(files, dtype, max_shard_bytes)
    names = {name for shard in shards for _, name in shard}
    if pairs is None or not set(pairs) <= names:
        return False
    out_dir.mkdir(parents=True, exist_ok=True)
    weight_map, total = {}, 0
    for number, shard in enumerate(shards, start=1):
        file_name = "model.safetensors" if len(shards) == 1 else f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for path, name in shard:
            # one open per weight: the memory map, and the pages of the base it made resident, go with it
            with safe_open(str(path), framework="pt") as handle:
                tensors[name] = merged_weight(handle.get_tensor(name), pairs.get(name), scaling, dtype).contiguous()
            total += tensors[name].numel() * tensors[name].element_size()
            weight_map[name] = file_name
        save_file(tensors, str(out_dir / file_name), metadata={"format": "pt"})
        del tensors
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    write_config(base_folder, out_dir, dtype)
    return True


def write_config(base_folder: Path, out_dir: Path, dtype) -> None:
    """The base's config.json with the merged dtype, and its generation_config.json as it is."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(base_folder), local_files_only=True, trust_remote_code=False)
    config.dtype = dtype
    config.save_pretrained(str(out_dir))
    if (base_folder / "generation_config.json").is_file():
        shutil.copy2(base_folder / "generation_config.json", out_dir / "generation_config.json")
