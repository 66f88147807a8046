"""Trainer vs stock transformers + peft: tokens/s over non-padding tokens and peak memory, in one process.

Both variants train the same Mistral-7B-shaped model (32 layers, hidden 4096, MLP 14336, 32 heads / 8 KV heads,
vocab 32,000; random bf16 weights), the same LoRA (r 16, alpha 32, dropout 0.05 on q, k, v, o, gate, up,
down), gradient checkpointing and SDPA attention, with AdamW on the adapters:

- stock: `get_peft_model` + `gradient_checkpointing_enable()` + `enable_input_require_grads()` and
  `model(input_ids, attention_mask, labels).loss`, batches of 4 sequences right-padded to the longest
  (transformers' DataCollatorForSeq2Seq recipe);
- trainer: finetune.modeling as `curate train` runs it: non-reentrant checkpointing, loss over trained tokens
  only with chunked lm_head + cross-entropy (no full float32 logits), and for real records best-fit-decreasing
  packing into rows of 2,048 with per-example position ids (4 rows per step).

Workloads: `full` = 4 x 2,048 random tokens, all trained; `real` = real chat records of at most 2,048 tokens
from ../shared/data/chat, tokenized with curator.tokenize_chat (prepared on the CPU box with --prepare, because
the GPU box lacks mistral-common; the file travels with `carry`).

Anchor, the baseline the targets below are multiples of: stock transformers 5.17 + peft 0.21 on an H100 at 4 x 2,048: 5,701 tokens/s, 20.2 GiB peak.
Target: trainer >= 2x stock on real records, >= 1.3x on full-length, at no more peak memory.

    python bench/train_gpu.py --prepare                 # CPU box: writes bench/corpus/train_gpu_records.json
    python bench/train_gpu.py --json $OUT/train_gpu.json  # GPU box: runs everything, prints the table
    python bench/train_gpu.py --smoke                   # CPU: same code paths on a tiny model (no GPU figures)
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RECORDS = ROOT / "bench" / "corpus" / "train_gpu_records.json"
CHAT_DIR = ROOT.parent / "shared" / "data" / "chat"
SEQ = 2048
ROWS = 4
LORA = SimpleNamespace(
    r=16, alpha=32, dropout=0.05,
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
)


def prepare(n: int, seed: int) -> None:
    """Tokenize a seeded sample of real records (<= SEQ tokens, >= 1 trained token) into ids + labels."""
    from curator.tokenize_chat import ChatTokenizer
    from finetune.data import labels_for

    records = []
    for path in sorted(CHAT_DIR.glob("*.jsonl")):
        with path.open(encoding="utf-8") as fh:
            records.extend(json.loads(line)["messages"] for line in fh if line.strip())
    random.Random(seed).shuffle(records)
    tok = ChatTokenizer.load(model="mistral-7b-instruct-v0.2")
    out = []
    for enc in tok.encode_batch(records):
        if len(enc.ids) <= SEQ and any(enc.trained):
            labels = labels_for(enc.ids, enc.trained)
            labels[0] = -100
            out.append({"ids": enc.ids, "labels": labels})
        if len(out) == n:
            break
    RECORDS.parent.mkdir(parents=True, exist_ok=True)
    RECORDS.write_text(json.dumps(out))
    lengths = [len(r["ids"]) for r in out]
    print(f"wrote {RECORDS}: {len(out)} records, mean {sum(lengths) / len(lengths):.0f} tokens, max {max(lengths)}")


def model_config(smoke: bool):
    from transformers import MistralConfig

    if smoke:
        return MistralConfig(vocab_size=32000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=None,
                             max_position_embeddings=SEQ, use_cache=False)
    # Mistral-7B-Instruct-v0.2's config.json
    return MistralConfig(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-5,
                         rope_theta=1e6, sliding_window=None, max_position_embeddings=32768, use_cache=False)


def build(variant: str, smoke: bool, device, dtype):
    import torch
    from transformers import AutoModelForCausalLM

    from finetune import modeling

    torch.manual_seed(0)
    with torch.device(device):
        base = AutoModelForCausalLM.from_config(model_config(smoke), dtype=dtype, attn_implementation="sdpa")
    if variant == "stock":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
                                                target_modules=LORA.target_modules))
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    else:
        model = modeling.add_lora(base, LORA, 0)
        modeling.enable_gradient_checkpointing(model)
        if variant == "trainer+compile":
            modeling.compile_decoder_layers(model)
    model.train()
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-5, fused=fused)
    return model, optimizer


def stock_batches(examples):
    """Lists of 4 examples -> padded input_ids / attention_mask / labels (the transformers recipe)."""
    import torch

    out = []
    for i in range(0, len(examples) - ROWS + 1, ROWS):
        group = examples[i : i + ROWS]
        width = max(len(e.ids) for e in group)
        ids = torch.full((ROWS, width), 2, dtype=torch.long)
        mask = torch.zeros((ROWS, width), dtype=torch.long)
        labels = torch.full((ROWS, width), -100, dtype=torch.long)
        for b, e in enumerate(group):
            n = len(e.ids)
            ids[b, :n] = torch.tensor(e.ids)
            mask[b, :n] = 1
            labels[b, :n] = torch.tensor(e.labels)
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels, "n_real": int(mask.sum())})
    return out


def trainer_batches(examples, pack: bool):
    from finetune.data import collate, make_rows

    rows = make_rows(examples, SEQ, pack)
    random.Random(0).shuffle(rows)
    return [collate(examples, rows[i : i + ROWS], pad_id=2) for i in range(0, len(rows) - ROWS + 1, ROWS)]


def step(variant: str, model, optimizer, batch, device, dtype) -> int:
    import torch

    from finetune import modeling

    with torch.autocast(device_type=device.type, dtype=dtype, enabled=device.type == "cuda"):
        if variant == "stock":
            loss = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                         labels=batch["labels"].to(device)).loss
            n_real = batch["n_real"]
        else:
            total, n = modeling.loss_sum(model, batch, 4096)
            loss = total / n
            n_real = batch["n_real_tokens"]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return n_real


def measure(variant: str, workload: str, model, optimizer, examples, device, dtype, warmup: int, steps: int) -> dict:
    import torch

    batches = stock_batches(examples) if variant == "stock" else trainer_batches(examples, workload == "real")
    need = warmup + steps
    if len(batches) < need:
        batches = (batches * math.ceil(need / max(1, len(batches))))[:need]
    for b in batches[:warmup]:
        step(variant, model, optimizer, b, device, dtype)
    # the device itself: without it, synchronize waits on the current device, not cuda:N
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    tokens = 0
    started = time.perf_counter()
    for b in batches[warmup:need]:
        tokens += step(variant, model, optimizer, b, device, dtype)
    sync()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"variant": variant, "workload": workload, "steps": steps, "tokens": tokens, "seconds": seconds,
            "tokens_per_s": tokens / seconds, "peak_gib": peak}


def load_examples(workload: str, smoke: bool, n_full: int):
    from finetune.data import Example

    if workload == "full":
        rng = random.Random(1)
        return [Example(ids=[1] + [rng.randrange(3, 32000) for _ in range(SEQ - 1)],
                        labels=[-100] + [rng.randrange(3, 32000) for _ in range(SEQ - 1)], ref=f"full:{i}")
                for i in range(n_full)]
    if not RECORDS.is_file():
        sys.exit(f"{RECORDS} missing: run `python bench/train_gpu.py --prepare` on the CPU box and carry it")
    data = json.loads(RECORDS.read_text())
    # labels of the real records: trained tokens only (the stock loss shifts inside the model; ours in collate)
    return [Example(ids=r["ids"], labels=r["labels"], ref=f"real:{i}") for i, r in enumerate(data)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepare", action="store_true", help="tokenize real records into the bench file and stop")
    parser.add_argument("--n-records", type=int, default=1200)
    parser.add_argument("--smoke", action="store_true", help="tiny model on CPU: exercises the code, not the GPU")
    parser.add_argument("--variants", default="stock,trainer", help="comma list of stock, trainer, trainer+compile")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--json", type=Path, default=Path(os.environ.get("OUT", ROOT / "bench")) / "train_gpu.json")
    args = parser.parse_args()
    if args.prepare:
        prepare(args.n_records, seed=0)
        return

    import torch
    import transformers
    import peft

    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.smoke:
        sys.exit("no CUDA device: run with --smoke for a CPU check of the code paths")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    card = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (smoke: tiny model)"
    workloads = {"full": load_examples("full", args.smoke, ROWS * (args.warmup + args.steps)),
                 "real": load_examples("real", args.smoke, 0)}
    results = []
    for variant in args.variants.split(","):
        model, optimizer = build(variant, args.smoke, device, dtype)
        for workload, examples in workloads.items():
            r = measure(variant, workload, model, optimizer, examples, device, dtype, args.warmup, args.steps)
            results.append(r)
            print(f"{variant:>16} {workload:>5}: {r['tokens_per_s']:>9,.0f} tok/s  peak {r['peak_gib']:.1f} GiB", flush=True)
        del model, optimizer
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    stock = {r["workload"]: r for r in results if r["variant"] == "stock"}
    print(f"\n{card}; torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    print(f"| variant | workload | tokens/s (non-pad) | peak GiB | vs stock |\n|---|---|---:|---:|---:|")
    for r in results:
        base = stock.get(r["workload"])
        ratio = r["tokens_per_s"] / base["tokens_per_s"] if base else float("nan")
        r["vs_stock"] = ratio
        print(f"| {r['variant']} | {r['workload']} | {r['tokens_per_s']:,.0f} | {r['peak_gib']:.1f} | {ratio:.2f}x |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"device": card, "torch": torch.__version__, "transformers": transformers.__version__,
                                     "peft": peft.__version__, "seq": SEQ, "rows": ROWS, "results": results}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
