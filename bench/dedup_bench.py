"""Near-duplicate benchmark: accuracy on planted pairs, speed, and datatrove side by side.

Corpus: bench/corpus.py's 50,000 records from ../shared/data/chat (real records plus their natural
re-collected copies), plus PLANTED edited copies of real records: adjacent-word swaps, insertions,
deletions, re-formatting (case, punctuation, line breaks) and a changed system prompt, with an edit count
drawn so the true Jaccard spreads over [0.5, 1]. Ground truth of a planted pair is the exact Jaccard of the
two records' shingle sets, as the stage defines them (word 5-grams of the user and assistant turns; bigrams
when the shorter record has < 49 tokens). A pair counts as found when both records end in one cluster (what
datatrove's output can be scored on). curator also prints the outcome: pairs at J >= 0.8 whose two copies
are both kept (a duplicate left in), and records removed below 0.8 of the copy kept for them (chains). The
stage also requires a near-duplicate pair's answers to agree (`answer_threshold`); the script prints the answer
Jaccard of the planted pairs at J >= 0.8, the figure the default answer_threshold is chosen from.

Both tools get the same records (after validation, normalisation and exact dedup, as in `curate run`) and
the same settings: 5-grams, threshold 0.8 via 16 bands x 6 rows (what curator chooses for recall >= 0.99 at
0.8; datatrove has no threshold setting, only bands). datatrove runs its four MinHash stages (signatures,
buckets, clusters, filter) with the local executor and 2 workers, from its own venv:

    python -m venv bench/.venv-datatrove && bench/.venv-datatrove/bin/pip install datatrove orjson regex \
        tokenizers spacy "xxhash<4"   # datatrove 0.10.1 hashes str, which xxhash 4 refuses
    python bench/dedup_bench.py [--planted 2000] [--skip-datatrove]

Prints a table; figures go to bench/RESULTS.md ("Near-duplicate removal with MinHash LSH and a leak-free split").
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out" / "dedup"
DT_PYTHON = BENCH / ".venv-datatrove" / "bin" / "python"
THRESHOLD, NGRAM, BANDS, ROWS = 0.8, 5, 16, 6
SYSTEM_PROMPTS = ["You are a helpful assistant.", "You are a careful coding assistant.", "Answer briefly."]
FILLERS = ["also", "then", "indeed", "note", "really", "just", "so", "well"]


# ---------------------------------------------------------------------------------------- planted edits


def edit_words(words: list[str], k: int, kind: str, rng: random.Random) -> list[str]:
    words = list(words)
    for _ in range(k):
        if len(words) < 3:
            break
        at = rng.randrange(len(words) - 1)
        if kind == "swap":
            words[at], words[at + 1] = words[at + 1], words[at]
        elif kind == "insert":
            words.insert(at, rng.choice(FILLERS))
        elif kind == "delete":
            del words[at]
    return words


def plant(records: list[dict], n: int, seed: int = 0) -> list[tuple[int, dict, str]]:
    """`n` (source index, edited copy, edit kind) from real records with at least 60 words of answer."""
    rng = random.Random(seed)
    eligible = [i for i, r in enumerate(records) if len(str(r["messages"][-1].get("content", "")).split()) >= 60]
    out = []
    for i in rng.sample(eligible, n):
        copy = json.loads(json.dumps(records[i]))
        kind = rng.choice(["swap", "insert", "delete", "mixed", "reformat", "system"])
        turn = copy["messages"][-1]
        words = turn["content"].split(" ")
        k = rng.randint(1, max(1, len(words) // 12))  # up to ~8% of the words: J from ~0.5 to 1
        if kind == "mixed":
            for sub in ("swap", "insert", "delete"):
                words = edit_words(words, max(1, k // 3), sub, rng)
        elif kind in ("swap", "insert", "delete"):
            words = edit_words(words, k, kind, rng)
        elif kind == "reformat":  # case, punctuation and line breaks only: the same tokens
            words = [w.upper() if j % 7 == 0 else w for j, w in enumerate(words)]
            words = [w + "," if j % 11 == 5 else w for j, w in enumerate(words)]
            words = edit_words(words, k // 2, "delete", rng)
        else:  # system: a shared system prompt added, plus a few insertions
            copy["messages"].insert(0, {"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
            words = edit_words(words, k // 2, "insert", rng)
        turn["content"] = ("\n" if kind == "reformat" else " ").join(words)
        out.append((i, copy, kind))
    return out


# -------------------------------------------------------------------------------------------- curator side


def build_frame(records: list[dict]):
    """The frame `curate run` hands to dedup_minhash: validated, normalised, exact duplicates removed."""
    sys.path.insert(0, str(ROOT))
    from curator import columns as C
    from curator.config import CurateConfig
    from curator.io.readers import iter_file
    from curator.stages import dedup_exact, normalize, validate
    from curator.stages.base import StageContext

    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "corpus.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    ctx = StageContext(config=CurateConfig())
    frame = validate.build_frame(iter_file(path, "corpus.jsonl"), ctx)
    frame = normalize.run(frame.filter(C.alive()), ctx)
    frame = dedup_exact.run(frame.filter(C.alive()), ctx)
    return frame.filter(C.alive())


def run_curator(frame, workers: int):
    from curator import columns as C
    from curator.config import CurateConfig
    from curator.stages import dedup_minhash
    from curator.stages.base import StageContext

    import datasketch  # noqa: F401  (import time is paid once per process, not per run)

    ctx = StageContext(config=CurateConfig.model_validate({"dedup_minhash": {"workers": workers}}))
    started = time.perf_counter()
    out = dedup_minhash.run(frame, ctx)
    seconds = time.perf_counter() - started
    rows = out.get_column(C.ROW).to_list()
    clusters = out.get_column("near_dup_cluster").to_list()
    ctx.removed = dict(zip(rows, out.get_column("near_dup_of").is_not_null().to_list()))  # row -> removed
    ctx.removed_below = int((out.get_column("near_dup_jaccard") < THRESHOLD).sum())
    return seconds, dict(zip(rows, clusters)), ctx


def answer_jaccard(frame, pairs: list[tuple[int, int]]) -> list[float]:
    """Exact Jaccard of each (row, row) pair's answers, as the stage's answer check computes it."""
    import numpy as np

    from curator import columns as C
    from curator.shingles import tokenize_turns
    from curator.stages.dedup_minhash import AnswerSets, Config

    cfg = Config()
    index = {r: k for k, r in enumerate(frame.get_column(C.ROW).to_list())}
    turns = tokenize_turns(frame.get_column(C.MESSAGES), ["user", "assistant"])
    i = np.array([index[a] for a, _ in pairs], dtype=np.int64)
    j = np.array([index[b] for _, b in pairs], dtype=np.int64)
    return AnswerSets(turns, cfg).jaccard(i, j).tolist()


def true_jaccard(frame, pairs: list[tuple[int, int]]) -> list[float]:
    """Exact Jaccard of each (row, row) pair under the stage's own shingling rule."""
    import numpy as np

    from curator import columns as C
    from curator.shingles import jaccard, shingle, tokenize_turns
    from curator.stages.dedup_minhash import Config

    cfg = Config()
    index = {r: k for k, r in enumerate(frame.get_column(C.ROW).to_list())}
    turns = tokenize_turns(frame.get_column(C.MESSAGES), cfg.roles, cfg.system_prompt, cfg.shared_system_min_records)
    words = turns.words()
    long_sets, short_sets = shingle(turns, cfg.ngram), shingle(turns, cfg.short_ngram)
    out = []
    for a, b in pairs:
        i, j = index[a], index[b]
        sets = short_sets if min(words[i], words[j]) < cfg.short_words() else long_sets
        out.append(jaccard(np.unique(sets.raw(i)), np.unique(sets.raw(j))))
    return out


# ------------------------------------------------------------------------------------------ datatrove side


DT_DRIVER = r'''
import json, sys, time
from pathlib import Path
from datatrove.executor.local import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupSignature, MinhashDedupBuckets,
    MinhashDedupCluster, MinhashDedupFilter)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig

work, ngram, bands, rows, workers = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
cfg = MinhashConfig(n_grams=ngram, num_buckets=bands, hashes_per_bucket=rows, hash_config=HashConfig(precision=64))
inp = str(work / "input")
t0 = time.perf_counter()
LocalPipelineExecutor(pipeline=[JsonlReader(inp), MinhashDedupSignature(str(work / "sigs"), config=cfg)],
                      tasks=workers, workers=workers, logging_dir=str(work / "logs/1")).run()
LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=cfg)],
                      tasks=bands, workers=workers, logging_dir=str(work / "logs/2")).run()
LocalPipelineExecutor(pipeline=[MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=cfg,
                      save_cluster_id=True)], tasks=1, logging_dir=str(work / "logs/3")).run()
LocalPipelineExecutor(pipeline=[JsonlReader(inp), MinhashDedupFilter(str(work / "remove"), load_cluster_ids=True,
                      exclusion_writer=JsonlWriter(str(work / "removed"))), JsonlWriter(str(work / "kept"))],
                      tasks=workers, workers=workers, logging_dir=str(work / "logs/4")).run()
print(json.dumps({"seconds": time.perf_counter() - t0}))
'''


def run_datatrove(frame, workers: int):
    import gzip
    import shutil

    from curator import columns as C

    work = OUT / "datatrove"
    shutil.rmtree(work, ignore_errors=True)
    (work / "input").mkdir(parents=True)
    rows = frame.get_column(C.ROW).to_list()
    texts = [
        "\n".join(m["content"] for m in msgs if m["role"] in ("user", "assistant"))
        for msgs in frame.get_column(C.MESSAGES).to_list()
    ]
    per = (len(rows) + workers - 1) // workers
    for w in range(workers):  # one input file per task, as datatrove parallelises over files
        with (work / "input" / f"part{w}.jsonl").open("w", encoding="utf-8") as fh:
            for r, t in zip(rows[w * per : (w + 1) * per], texts[w * per : (w + 1) * per]):
                fh.write(json.dumps({"id": str(r), "text": t}, ensure_ascii=False) + "\n")
    (work / "driver.py").write_text(DT_DRIVER)
    proc = subprocess.run(
        [str(DT_PYTHON), str(work / "driver.py"), str(work), str(NGRAM), str(BANDS), str(ROWS), str(workers)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"datatrove failed:\n{proc.stderr[-3000:]}")
    seconds = json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]
    cluster = {}
    for sub in ("kept", "removed"):
        for path in sorted((work / sub).glob("*")):
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="utf-8") as fh:
                for line in fh:
                    doc = json.loads(line)
                    cid = doc["metadata"].get("minhash_cluster_id", -1)
                    cluster[int(doc["id"])] = None if cid == -1 else cid
    return seconds, cluster


# ----------------------------------------------------------------------------------------------- scoring


def score(pairs, truths, cluster) -> dict:
    tp = fp = fn = tn = 0
    for (a, b), j in zip(pairs, truths):
        found = cluster.get(a) is not None and cluster.get(a) == cluster.get(b)
        if j >= THRESHOLD:
            tp, fn = tp + found, fn + (not found)
        else:
            fp, tn = fp + found, tn + (not found)
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0}


def survivors(pairs, truths, removed: dict) -> tuple[int, int]:
    """(planted pairs at J >= threshold whose two records are both kept, such pairs): duplicates left in."""
    near = [(a, b) for (a, b), j in zip(pairs, truths) if j >= THRESHOLD]
    return sum(not removed.get(a) and not removed.get(b) for a, b in near), len(near)


def natural(cluster: dict, planted_rows: set, removed: dict | None = None) -> tuple[int, int]:
    """(clusters, records removed) among the corpus records that are not planted copies. Without `removed`
    (datatrove), every member of a cluster but one is removed."""
    groups: dict = {}
    for row, cid in cluster.items():
        if cid is not None and row not in planted_rows:
            groups.setdefault(cid, []).append(row)
    groups = {k: v for k, v in groups.items() if len(v) > 1}
    if removed is not None:
        return len(groups), sum(removed.get(r, False) for v in groups.values() for r in v)
    return len(groups), sum(len(v) - 1 for v in groups.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000, help="records from bench/corpus.py")
    ap.add_argument("--planted", type=int, default=2_000, help="planted edited copies added on top")
    ap.add_argument("--workers", type=int, default=2, help="curator's signature threads")
    ap.add_argument("--datatrove-workers", type=int, default=1,
                    help="datatrove's LocalPipelineExecutor workers (2 hung in its process pool on the reference box)")
    ap.add_argument("--skip-datatrove", action="store_true")
    args = ap.parse_args()

    sys.path.insert(0, str(BENCH))
    from corpus import build_corpus

    base = build_corpus(args.n)
    planted = plant(base, args.planted)
    records = base + [copy for _, copy, _ in planted]
    frame = build_frame(records)
    rows = set(frame.get_column("row").to_list())
    pairs, kinds = [], []
    for k, (src, _, kind) in enumerate(planted):
        a, b = src, len(base) + k
        if a in rows and b in rows:  # an edit that changed nothing is an exact duplicate, gone before this stage
            pairs.append((a, b))
            kinds.append(kind)
    truths = true_jaccard(frame, pairs)
    planted_rows = {b for _, b in pairs}

    results = {}
    seconds, cluster, ctx = run_curator(frame, args.workers)
    results[f"curator/{args.workers}"] = (seconds, cluster)
    removed = {f"curator/{args.workers}": ctx.removed}
    if args.workers != 1:
        seconds1, cluster1, ctx1 = run_curator(frame, 1)
        results["curator/1"] = (seconds1, cluster1)
        removed["curator/1"] = ctx1.removed
    if not args.skip_datatrove:
        results[f"datatrove/{args.datatrove_workers}"] = run_datatrove(frame, args.datatrove_workers)

    print(f"records into the stage: {frame.height:,} ({len(base):,} corpus + {len(planted):,} planted, "
          f"after exact dedup); planted pairs scored: {len(pairs):,}, "
          f"of which true J >= {THRESHOLD}: {sum(t >= THRESHOLD for t in truths):,}")
    bins = [(0.0, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.01)]
    print("planted true-J bins:", {f"{lo}-{min(hi, 1.0)}": sum(lo <= t < hi for t in truths) for lo, hi in bins})
    from curator.stages.dedup_minhash import Config

    near_answers = sorted(a for a, t in zip(answer_jaccard(frame, pairs), truths) if t >= THRESHOLD)
    answer_threshold = Config().answer_threshold
    print(f"answer Jaccard of the planted pairs at J >= {THRESHOLD}: min {near_answers[0]:.4f}, "
          f"below 0.5: {sum(a < 0.5 for a in near_answers)}, below answer_threshold {answer_threshold}: "
          f"{sum(a < answer_threshold for a in near_answers)} (pairs the answer check separates)")
    base_seconds = results[f"curator/{args.workers}"][0]
    print(f"\n{'tool/workers':<12} {'seconds':>8} {'x curator':>9} {'precision':>9} {'recall':>7} {'F1':>6} "
          f"{'natural clusters':>16} {'natural removed':>15}")
    for name, (secs, cl) in results.items():
        s = score(pairs, truths, cl)
        nc, nr = natural(cl, planted_rows, removed.get(name))
        print(f"{name:<12} {secs:>8.2f} {secs / base_seconds:>9.2f} {s['precision']:>9.4f} {s['recall']:>7.4f} "
              f"{s['f1']:>6.4f} {nc:>16,} {nr:>15,}   (tp {s['tp']}, fp {s['fp']}, fn {s['fn']})")
    print("\nrecall by edit kind (pairs with true J >= threshold):")
    for name, (_, cl) in results.items():
        parts = []
        for kind in sorted(set(kinds)):
            sel = [(p, t) for p, t, k in zip(pairs, truths, kinds) if k == kind and t >= THRESHOLD]
            hit = sum(cl.get(a) is not None and cl.get(a) == cl.get(b) for (a, b), _ in sel)
            parts.append(f"{kind} {hit}/{len(sel)}")
        print(f"  {name:<12} " + ", ".join(parts))
    left, near = survivors(pairs, truths, ctx.removed)
    print(f"\ncurator outcome: planted pairs at J >= {THRESHOLD} with both copies kept: {left} of {near} "
          f"(recall as 'not both kept': {1 - left / near:.4f}); records removed below {THRESHOLD} of the copy kept "
          f"for them: {ctx.removed_below}")
    summary = ctx.summaries["dedup_minhash"]
    print("\ncurator summary:", json.dumps({k: summary[k] for k in ("clusters", "near_duplicates_rejected",
                                                                   "largest_cluster", "prompt_conflict_groups", "lsh")}))


if __name__ == "__main__":
    main()
