"""Attention computed vs needed on packed rows of the real split: counts per implementation, no timings.

The rows are built as `curate train` builds them: `curate run` (default config) on ../shared/data/chat into a
temporary folder (or --curated OUT), the tokenizer and context of its manifest (finetune.curated.settings_for),
finetune.train.prepare_split and plan_steps (best-fit-decreasing packing), the micro-batches of epoch 0
(epoch_micro_batches) and finetune.data.collate, whose `seq_lens` and width give each row's layout.

Needed: the causal (query, key) pairs within each example, sum of n(n+1)/2. Computed, per head and layer:
- sdpa, full mask: transformers' 4D block-diagonal mask; every score of each row is computed and masked after
  (a mask rules out the kernels' causal skipping): width^2 per row. The earlier 10.2x figure counted the
  lower triangle only, width (width + 1) / 2 per row: shown too, for comparison;
- sdpa_segments: SDPA with is_causal on each segment, padding included: sum of n(n+1)/2;
- flex_attention: the 128 x 128 blocks of its causal + document BlockMask holding an allowed pair, each
  computed whole (finetune.attention.flex_blocks; tested equal to the BlockMask transformers builds);
- flash_attention_2 varlen: causal pairs of each cu_seqlens segment, as sdpa_segments.
Per-segment and varlen kernels also work in tiles, so their real cost sits slightly above the pair count.

    python bench/attention_cost.py [--curated OUT] [--rows 1 4]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHAT_DIR = ROOT.parent / "shared" / "data" / "chat"


def curate(raw: Path, out: Path) -> Path:
    """`curate run` with the default config, gates reported but not failing the bench."""
    subprocess.run([sys.executable, "-m", "curator.cli", "run", str(raw), str(out), "--no-gate", "-q"], check=True)
    return out


def trainer_layouts(curated: Path, micro_batch_rows: int) -> tuple[list[list[list[int]]], list[int], int]:
    """Each micro-batch's rows as segment lengths (examples only), its width, and the context, from `curated`."""
    from curator.tokenize_chat import ChatTokenizer
    from finetune.config import TrainConfig
    from finetune.curated import open_curated_folder, settings_for
    from finetune.data import collate, epoch_micro_batches
    from finetune.train import plan_steps, prepare_split

    folder = open_curated_folder(curated, force=True)
    config = settings_for(TrainConfig(micro_batch_rows=micro_batch_rows), folder, None)
    tokenizer = ChatTokenizer.load(model=config.tokenizer, tokenizer_path=config.tokenizer_path)
    train = prepare_split(folder.train, tokenizer, config.context_length)
    plan = plan_steps(config, train, train)
    batches, widths = [], []
    for rows in epoch_micro_batches(plan.rows, micro_batch_rows, config.seed, 0):
        batch = collate(train.examples, rows, tokenizer.pad_id)
        width = batch["input_ids"].shape[1]
        batches.append([[len(train.examples[i].ids) for i in row] for row in rows])
        widths.append(width)
    return batches, widths, config.context_length


def cost_table(batches, widths) -> list[tuple[str, int]]:
    """(implementation, pairs computed) for every micro-batch of the epoch, with `needed` first."""
    from finetune import attention as A

    needed = sum(A.pairs_needed(b) for b in batches)
    return [
        ("needed: causal pairs within each example", needed),
        ("sdpa / eager, block-diagonal 4D mask", sum(A.pairs_sdpa_full_mask(len(b), w) for b, w in zip(batches, widths))),
        ("sdpa, lower triangle only (the 10.2x count)", sum(len(b) * A.causal_pairs(w) for b, w in zip(batches, widths))),
        ("flex_attention, BlockMask 128 x 128", sum(A.pairs_flex(b, w) for b, w in zip(batches, widths))),
        ("sdpa_segments, SDPA is_causal per segment", sum(A.pairs_per_segment(b, w) for b, w in zip(batches, widths))),
        ("flash_attention_2 varlen (cu_seqlens)", sum(A.pairs_per_segment(b, w) for b, w in zip(batches, widths))),
    ]


def report(micro_batch_rows: int, batches, widths, context: int) -> None:
    rows = [r for b in batches for r in b]
    n_examples = sum(len(r) for r in rows)
    tokens = sum(sum(r) for r in rows)
    print(f"\nmicro_batch_rows {micro_batch_rows}: {len(rows):,} rows of {context:,} tokens, {n_examples:,} examples "
          f"({n_examples / len(rows):.1f} per row), {tokens:,} tokens ({tokens / (len(rows) * context):.1%} of the rows)")
    table = cost_table(batches, widths)
    needed = table[0][1]
    print(f"| {'implementation':<44} | {'pairs computed':>16} | {'x needed':>8} | {'needed share':>12} |")
    print(f"|{'-' * 46}|{'-' * 18}|{'-' * 10}|{'-' * 14}|")
    for name, pairs in table:
        print(f"| {name:<44} | {pairs:>16,} | {pairs / needed:>7.2f}x | {needed / pairs:>12.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--curated", type=Path, help="an OUT folder of `curate run` (default: curate the chat data)")
    parser.add_argument("--raw", type=Path, default=CHAT_DIR, help="raw chat data to curate when --curated is unset")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4], help="micro_batch_rows to count")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        curated = args.curated or curate(args.raw, Path(tmp) / "out")
        print(f"curated split: {curated}")
        for micro_batch_rows in args.rows:
            report(micro_batch_rows, *trainer_layouts(curated, micro_batch_rows))


if __name__ == "__main__":
    main()
