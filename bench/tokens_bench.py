"""Token-budget benchmark: tokenizer throughput and the whole tokens stage on the 50k corpus.

Variants, in one run:
- `TokenCounter.count`: the stage's path (curator/token_counts.py): counts only, each distinct unit
  (a word with its leading spaces, or a newline) encoded once; checked equal to encode_batch here.
- `encode_batch`: ChatTokenizer.encode_batch on all conversations (the trainer's path: ids and masks,
  one batched `tokenizers` call over both cores; each distinct segment text is encoded once).
- `encode_batch, no segment reuse`: the same segments, every one encoded (tokenizers alone).
- `per-record encode`: ChatTokenizer.encode in a Python loop (on the first --subset records).
- `mistral_common reference`: MistralTokenizer (tokenizer.model.v1) chat-completion encoding, one
  record at a time (on the same subset).
- the whole `tokens` stage on a frame of all records (to_list, encode, policy, summary).

    python bench/corpus.py              # once: writes bench/corpus/corpus50k.jsonl
    python bench/tokens_bench.py [--n 50000] [--subset 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402

from curator import columns as C  # noqa: E402
from curator.token_counts import TokenCounter  # noqa: E402
from curator.tokenize_chat import ChatTokenizer, _plan_mistral_v1, mistral_v1_model_file  # noqa: E402

CORPUS = ROOT / "bench" / "corpus" / "corpus50k.jsonl"


def load(n: int) -> list[list[dict]]:
    if CORPUS.is_file():
        with CORPUS.open(encoding="utf-8") as fh:
            records = [json.loads(line) for _, line in zip(range(n), fh)]
    else:
        from bench.corpus import build_corpus

        records = build_corpus(n)
    return [
        [
            {"role": m["role"], "content": m.get("content"), "weight": None, "tool_calls": None, "tool_call_id": None}
            for m in r["messages"]
        ]
        for r in records
    ]


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def reference(convs: list[list[dict]]) -> list[list[int]]:
    from mistral_common.protocol.instruct.messages import AssistantMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.protocol.instruct.validator import ValidationMode
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    ref = MistralTokenizer.from_file(str(mistral_v1_model_file()), mode=ValidationMode.finetuning)
    out = []
    for conv in convs:
        msgs = [
            AssistantMessage(content=m["content"]) if m["role"] == "assistant" else UserMessage(content=m["content"])
            for m in conv
        ]
        try:
            out.append(ref.encode_chat_completion(ChatCompletionRequest(messages=msgs)).tokens)
        except Exception:  # empty answers: the reference refuses them
            out.append([])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--subset", type=int, default=5_000, help="records for the slow one-at-a-time variants")
    args = ap.parse_args()

    convs = load(args.n)
    tok, load_s, _ = timed(ChatTokenizer.load)
    tok.encode_batch(convs[:100])  # warm the thread pool

    TokenCounter(tok).count(convs[:100])  # build the unit tokenizer (memoised, as in a run)

    rows = []
    counts, wall, cpu = timed(lambda: TokenCounter(tok).count(convs))
    rows.append(("TokenCounter.count (stage path)", len(convs), int(counts["n_tokens"].sum()), wall, cpu))
    batch, wall, cpu = timed(lambda: tok.encode_batch(convs))
    total = sum(e.n_tokens for e in batch)
    rows.append(("encode_batch (trainer path: ids, masks)", len(convs), total, wall, cpu))
    _, wall, cpu = timed(lambda: TokenCounter(tok).count(convs))
    rows.append(("TokenCounter.count again", len(convs), total, wall, cpu))
    count_mismatches = sum(
        1
        for (n, t, turns), e in zip(counts.select("n_tokens", "n_assistant_tokens", "turn_tokens").iter_rows(), batch)
        if (n, t, turns) != (e.n_tokens, e.n_trained, e.turn_tokens)
    )

    texts = [seg.text for conv in convs for seg in _plan_mistral_v1(conv)]
    raw, wall, cpu = timed(lambda: tok.tokenizer.encode_batch_fast(texts, add_special_tokens=False))
    rows.append(("tokenizers alone, no segment reuse", len(convs), sum(len(e.ids) for e in raw), wall, cpu))
    del raw

    sub = convs[: args.subset]
    sub_tokens = sum(e.n_tokens for e in batch[: args.subset])
    _, wall, cpu = timed(lambda: tok.encode_batch(sub))
    rows.append((f"encode_batch, first {len(sub):,}", len(sub), sub_tokens, wall, cpu))
    _, wall, cpu = timed(lambda: [tok.encode(c) for c in sub])
    rows.append((f"per-record encode, first {len(sub):,}", len(sub), sub_tokens, wall, cpu))
    ref_ids, wall, cpu = timed(lambda: reference(sub))
    rows.append((f"mistral_common reference, first {len(sub):,}", len(sub), sub_tokens, wall, cpu))
    mismatches = sum(1 for r, e in zip(ref_ids, batch) if r and r != e.ids)

    # the whole stage on a frame, as the pipeline calls it
    from curator.config import load_config
    from curator.stages import tokens
    from curator.stages.base import StageContext

    df = pl.DataFrame(
        {C.MESSAGES: convs, C.REJECT_REASONS: [[] for _ in convs], C.REJECT_DETAILS: [[] for _ in convs]},
        schema={C.MESSAGES: pl.List(C.MESSAGE), C.REJECT_REASONS: pl.List(pl.Utf8), C.REJECT_DETAILS: pl.List(pl.Utf8)},
    )
    ctx = StageContext(config=load_config(None, []))
    out, wall, cpu = timed(lambda: tokens.run(df, ctx))
    rows.append(("tokens stage (whole)", len(convs), total, wall, cpu))

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; tokenizer load {load_s:.2f} s")
    print(f"{'variant':<44} {'records':>8} {'tokens':>11} {'wall s':>8} {'cpu s':>7} {'tok/s':>11}")
    for name, n, t, wall, cpu in rows:
        print(f"{name:<44} {n:>8,} {t:>11,} {wall:>8.2f} {cpu:>7.2f} {t / wall:>11,.0f}")
    by = {r[0]: r for r in rows}
    count_s = min(by["TokenCounter.count (stage path)"][3], by["TokenCounter.count again"][3])
    print(f"encode_batch / TokenCounter.count: {by['encode_batch (trainer path: ids, masks)'][3] / count_s:.2f}x slower; "
          f"count mismatches against encode_batch: {count_mismatches}")
    fast = by[f"encode_batch, first {len(sub):,}"][3]
    print(f"per-record / encode_batch: {by[f'per-record encode, first {len(sub):,}'][3] / fast:.1f}x slower; "
          f"reference / encode_batch: {by[f'mistral_common reference, first {len(sub):,}'][3] / fast:.1f}x slower; "
          f"reference mismatches on the subset: {mismatches}")
    print(f"stage: {ctx.summaries['tokens']['rejected_over_budget']} over budget, "
          f"{ctx.summaries['tokens']['rejected_no_trainable']} no_trainable, kept {ctx.summaries['tokens']['kept_examples']:,}")


if __name__ == "__main__":
    main()
