"""Peak host memory of `curate export --merge`, as a multiple of the model's bf16 size.

A Mistral-shaped model (random weights stored in bf16, as Mistral-7B-Instruct-v0.2's are) gets a random LoRA
adapter (r 16 on every projection); each merge runs in a fresh subprocess that reports its peak resident set
(VmHWM of /proc/self/status, reset after its imports; it counts the pages of memory-mapped weight files too)
minus its resident set after the imports. Linux only. `float32 load` is the merge as it was before: base in float32, peft merge_and_unload, cast to bf16.

    python bench/merge_memory_bench.py                 # hidden 1024, 8 layers: 0.35 GB of bf16 weights
    python bench/merge_memory_bench.py --layers 16     # a bigger one
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, sys
from pathlib import Path
import torch, transformers, peft, safetensors  # imported before the baseline: their memory is not the merge's
from finetune.export import fold_lora_weights, load_adapter_model, merge_adapter
from transformers import AutoConfig, MistralForCausalLM  # noqa: F401  (lazy modules loaded before the baseline)
from peft import PeftModel  # noqa: F401

def status(key):  # bytes, from /proc/self/status (Linux)
    line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
    return int(line.split()[1]) * 1024

adapter, out, variant, shard = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
torch.set_num_threads(1)
open("/proc/self/clear_refs", "w").write("5")  # the peak restarts from here (getrusage's would keep the parent's)
before = status("VmRSS")
if variant == "streamed":
    merge_adapter(adapter, out, max_shard_bytes=shard)
elif variant == "bf16 load":  # the path for adapters and bases the streamed merge does not take
    model = load_adapter_model(adapter, dtype=torch.bfloat16)
    fold_lora_weights(model)
    model.unload().save_pretrained(str(out), safe_serialization=True, max_shard_size=shard)
else:  # the merge before: float32 base, peft's merge, one cast at the end, transformers' default shards
    model = load_adapter_model(adapter, dtype=torch.float32)
    model.merge_and_unload().to(torch.bfloat16).save_pretrained(str(out), safe_serialization=True)
peak = status("VmHWM")
print(json.dumps({"delta": peak - before}))
"""

# Mistral-7B-Instruct-v0.2: 14.48 GB of bf16 weights in 3 safetensors files; merged shards of 1 GB. The bench
# model keeps those proportions, so its ratios carry over to 7B.
SIZE_7B = 14.48e9
BASE_FILES = 3
OUT_SHARD_7B = 1e9


def build(root: Path, hidden: int, layers: int) -> tuple[Path, Path, int]:
    """A bf16 Mistral-shaped base and a random LoRA adapter on it; returns their folders and the bf16 size."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=32000, hidden_size=hidden, intermediate_size=hidden * 7 // 2, num_hidden_layers=layers,
        num_attention_heads=hidden // 128, num_key_value_heads=max(1, hidden // 512), head_dim=128,
        sliding_window=None, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = MistralForCausalLM(config).to(torch.bfloat16)
    size = sum(p.numel() for p in model.parameters()) * 2
    base = root / "base"
    model.save_pretrained(str(base), safe_serialization=True, max_shard_size=math.ceil(size / BASE_FILES) + 1)
    lora = get_peft_model(model, LoraConfig(
        r=16, lora_alpha=32, init_lora_weights=False, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    ))
    adapter = root / "adapter"
    lora.save_pretrained(str(adapter))
    config_path = adapter / "adapter_config.json"
    saved = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**saved, "base_model_name_or_path": str(base)}))
    (adapter / "tokenizer_config.json").write_text("{}")
    return base, adapter, size


def measure(adapter: Path, out: Path, variant: str, shard: int) -> int:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(adapter), str(out), variant, str(shard)], cwd=ROOT, capture_output=True,
        text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])["delta"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _, adapter, size = build(root, args.hidden, args.layers)
        shard = int(size * OUT_SHARD_7B / SIZE_7B)
        print(f"model: hidden {args.hidden}, {args.layers} layers, {size / 1e9:.3f} GB in bf16 "
              f"({BASE_FILES} base files, merged shards of {shard / 1e6:.0f} MB)")
        print(f"| {'merge':<14} | {'peak RSS delta GB':>17} | {'x bf16 size':>11} | {'7B estimate GB':>14} |")
        print(f"|{'-' * 16}|{'-' * 19}|{'-' * 13}|{'-' * 16}|")
        for variant in ("streamed", "bf16 load", "float32 load"):
            delta = measure(adapter, root / variant.replace(" ", "-"), variant, shard)
            ratio = delta / size
            print(f"| {variant:<14} | {delta / 1e9:>17.3f} | {ratio:>11.2f} | {ratio * SIZE_7B / 1e9:>14.1f} |")
        shards = sorted(p.name for p in (root / "streamed").glob("*.safetensors"))
        print(f"streamed merge wrote {len(shards)} shard(s)")


if __name__ == "__main__":
    main()
