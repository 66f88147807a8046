"""Shared helpers of the tests/test_finetune_*.py files: a tiny Mistral, real records, curated folders.

The tiny model is a real `MistralForCausalLM` built from a config (2 layers, hidden 64, random weights) with the
real tokenizer's vocabulary size (32,000), so the real Mistral-7B-Instruct-v0.2 tokenizer drives it.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from curator.manifest import MANIFEST_VERSION

CHAT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chat"
PROFILE = "mistral-7b-instruct-v0.2"


def real_records(file_name: str, n: int, start: int = 0) -> list[dict]:
    """The first n records (from `start`) of a real chat file in ../shared/data/chat."""
    out = []
    with (CHAT_DATA / file_name).open(encoding="utf-8") as handle:
        for i, line in enumerate(handle):
            if i < start:
                continue
            if len(out) == n:
                break
            out.append(json.loads(line))
    return out


def _line(record: dict) -> str:
    body = {"messages": record["messages"], "meta": record.get("meta") or {}}
    if record.get("tools"):
        body["tools"] = record["tools"]
    digest = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()[:32]
    return json.dumps({"id": digest, **body}, ensure_ascii=False) + "\n"


def curate(root: Path, records: list[dict]) -> Path:
    """`curate run` (default config) on `records` written to root/raw.jsonl; returns its OUT folder."""
    from curator.config import load_config
    from curator.pipeline import run

    raw = root / "raw.jsonl"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    out = root / "out"
    run(raw, out, load_config(None, []))
    return out


def split_lines(out: Path) -> list[dict]:
    """The records of OUT/train.jsonl, then OUT/val.jsonl."""
    return [json.loads(line) for name in ("train.jsonl", "val.jsonl")
            for line in (out / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_curated_folder(path: Path, train: list[dict], val: list[dict], gate_passed: bool = True) -> Path:
    """An OUT folder shaped like `curate run` writes it: train/val.jsonl and manifest.json with sha256s and gates."""
    path.mkdir(parents=True, exist_ok=True)
    outputs = {}
    for name, records in (("train.jsonl", train), ("val.jsonl", val)):
        data = "".join(_line(r) for r in records).encode("utf-8")
        (path / name).write_bytes(data)
        outputs[name] = hashlib.sha256(data).hexdigest()
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "config": {"tokens": {"model": PROFILE}},
        "versions": {"curator": "0.1.0"},
        "inputs": {},
        "inputs_skipped": [],
        "outputs": outputs,
        "counts": {"read": len(train) + len(val), "kept": len(train) + len(val), "rejected": 0,
                   "train": len(train), "val": len(val)},
        "funnel": [],
        "gates": [
            {"name": "size.min_examples", "passed": gate_passed, "value": float(len(train) + len(val)),
             "threshold": 10.0 if gate_passed else 10_000.0,
             "message": "kept set holds enough examples" if gate_passed else "kept 30 examples, 9,970 short of 10,000"},
        ],
        "stages": {"tokens": {"model": PROFILE, "chat_format": "mistral-v1", "context_length": 8192,
                              "policy": "reject", "chat_template": "chat_template.jinja"}},
        "summaries": {},
    }
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return path


@lru_cache(maxsize=1)
def chat_tokenizer():
    from curator.tokenize_chat import ChatTokenizer

    return ChatTokenizer.load(model=PROFILE)


def tiny_mistral_config():
    from transformers import MistralConfig

    return MistralConfig(
        vocab_size=32000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=4096, sliding_window=None,
        bos_token_id=1, eos_token_id=2, pad_token_id=None, tie_word_embeddings=False, use_cache=False,
        # wider than the 0.02 default so the frozen lm_head can express a peaked distribution, as a trained
        # model can; with 0.02 the logits span about one nat and no adapter can lower the loss much
        initializer_range=0.2,
    )


def tiny_mistral(seed: int = 0):
    """Random-weight tiny MistralForCausalLM in float32 with SDPA attention, in eval mode."""
    import torch
    from transformers import MistralForCausalLM

    torch.manual_seed(seed)
    model = MistralForCausalLM(tiny_mistral_config())
    model.config._attn_implementation = "sdpa"
    return model.eval()


def save_tiny_mistral(path: Path, seed: int = 0) -> Path:
    tiny_mistral(seed).save_pretrained(str(path), safe_serialization=True)
    return path


def tiny_train_settings(model_path: Path | str, **overrides) -> dict:
    """Train config values sized for CPU tests: short context, few steps, tiny generations."""
    settings = {
        "model": str(model_path), "device": "cpu", "precision": "fp32", "context_length": 512,
        "micro_batch_rows": 2, "grad_accumulation": 2, "learning_rate": 1e-3, "warmup_ratio": 0.0,
        "max_steps": 4, "save_every_steps": 2, "loss_chunk_tokens": 64,
        "eval": {"every_steps": 2, "bleu_samples": 2, "max_new_tokens": 4, "generation_batch_size": 2,
                 "compare_sheet_samples": 2},
    }
    settings.update(overrides)
    return settings


def one_torch_thread():
    """Generator for a module fixture: torch on one thread, restored after.

    The tiny model's ops are 64 wide; with two OpenMP threads on a shared 2-core box each op waits on thread
    hand-offs, and a training step ran 10-30x slower than on one thread (measured with torch.profiler).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tokenizer_folder(path: Path) -> str:
    """A Hugging Face tokenizer folder with the Mistral vocabulary (tokenizer.json, tokenizer_config.json): what a
    profile other than Mistral's reads from tokens.tokenizer_path, with no hub access in tests."""
    from tokenizers import AddedToken, Tokenizer

    path.mkdir(parents=True, exist_ok=True)
    hf = Tokenizer.from_str(chat_tokenizer().tokenizer.to_str())
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ["<s>", "</s>"]])
    hf.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    return str(path)


def save_tiny_llama(path: Path, seed: int = 0) -> Path:
    """A random-weight tiny LlamaForCausalLM (CodeLlama's architecture) with the Mistral vocabulary's size."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=32000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=16384, bos_token_id=1, eos_token_id=2,
        tie_word_embeddings=False, use_cache=False, initializer_range=0.2,
    )
    LlamaForCausalLM(config).save_pretrained(str(path), safe_serialization=True)
    return path
