"""A small, exact run folder for the report tests: the files `curate run` writes, made by hand.

Nine rows over two files, each with a known fate:

row ref        fate                       columns of note
0   a.jsonl:1  kept, train                en, python, score 0.90 (hq), 100 tokens, near cluster 7 (kept copy)
1   a.jsonl:2  schema.bad_role            role "bot" at messages[1]
2   a.jsonl:3  dup.exact of a.jsonl:1     same content hash as row 0
3   a.jsonl:4  dup.near of a.jsonl:1      cluster 7, jaccard 0.85
4   b.jsonl:1  kept, val                  de, no code, score 0.50 (flag quality.short_answer)
5   b.jsonl:2  quality.refusal            score 0.10
6   b.jsonl:3  tokens.over_budget         9,000 tokens
7   b.jsonl:4  json.invalid               line is not JSON
8   b.jsonl:5  kept, train                fr, rust+go, score 0.75 (hq), 300 tokens
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl


def conv(user: str, assistant: str, role2: str = "assistant") -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": role2, "content": assistant}]}


RECORDS = [
    conv("Write hello world in Python.", "```python\nprint('hello')\n```"),
    conv("Hi there", "Hello!", role2="bot"),
    conv("Write hello world in Python.", "```python\nprint('hello')\n```"),
    conv("Write hello world in Python please.", "```python\nprint('hello')\n```"),
    conv("Wie spät ist es?", "Es ist Mittag."),
    conv("Tell me a secret.", "As an AI language model, I cannot do that."),
    conv("Summarise this long text.", "word " * 40),
    None,  # invalid JSON line
    conv("Zwei Sprachen bitte.", "```rust\nfn main() {}\n```\n```go\nfunc main() {}\n```"),
]
REFS = ["a.jsonl:1", "a.jsonl:2", "a.jsonl:3", "a.jsonl:4", "b.jsonl:1", "b.jsonl:2", "b.jsonl:3", "b.jsonl:4",
        "b.jsonl:5"]
REASONS = [[], ["schema.bad_role"], ["dup.exact"], ["dup.near"], [], ["quality.refusal"], ["tokens.over_budget"],
           ["json.invalid"], []]
DETAILS = [
    [], ["messages[1].role: Input should be 'system', 'user', 'assistant' or 'tool'"], ["duplicate of a.jsonl:1"],
    ["near duplicate of a.jsonl:1 (jaccard 0.85)"], [], ["refusal phrase 'As an AI language model'"],
    ["9000 tokens > budget 8192"], ["line 1, column 2: Expecting property name"], [],
]


def annotations(full: bool = True) -> pl.DataFrame:
    """Every column when `full`, else only what the foundation stages write."""
    n = len(REFS)
    df = pl.DataFrame({
        "row": list(range(n)),
        "source_file": [r.split(":")[0] for r in REFS],
        "source_line": [int(r.split(":")[1]) for r in REFS],
        "ref": REFS,
        "content_hash": ["h0", None, "h0", "h3", "h4", "h5", "h6", None, "h8"],
        "reject_reasons": REASONS,
        "reject_details": DETAILS,
        "split": ["train", None, None, None, "val", None, None, None, "train"],
    }, schema_overrides={"reject_reasons": pl.List(pl.Utf8), "reject_details": pl.List(pl.Utf8)})
    if not full:
        return df
    flag = pl.Struct({"rule": pl.Utf8, "value": pl.Float64, "action": pl.Utf8})
    return df.with_columns(
        pl.Series("quality_score", [0.9, None, None, 0.8, 0.5, 0.1, None, None, 0.75], pl.Float64),
        pl.Series("quality_flags", [[], None, None, [], [{"rule": "short_answer", "value": 2.0, "action": "score"}],
                                    [{"rule": "refusal", "value": 1.0, "action": "reject"},
                                     {"rule": "short_answer", "value": 9.0, "action": "score"}],
                                    None, None, []], pl.List(flag)),
        pl.Series("high_quality", [True, None, None, True, False, False, None, None, True], pl.Boolean),
        pl.Series("lang", ["en", None, None, "en", "de", "en", "en", None, "fr"], pl.Utf8),
        pl.Series("code_langs", [["python"], None, None, ["python"], [], [], [], None, ["go", "rust"]],
                  pl.List(pl.Utf8)),
        pl.Series("has_code", [True, None, None, True, False, False, False, None, True], pl.Boolean),
        pl.Series("n_tokens", [100, None, None, 104, 20, 30, 9000, None, 300], pl.Int64),
        pl.Series("n_assistant_tokens", [60, None, None, 60, 8, 15, 8900, None, 200], pl.Int64),
        pl.Series("near_dup_cluster", [7, None, None, 7, None, None, None, None, None], pl.Int64),
        pl.Series("near_dup_of", [None, None, None, "a.jsonl:1", None, None, None, None, None], pl.Utf8),
        pl.Series("near_dup_jaccard", [None, None, None, 0.85, None, None, None, None, None], pl.Float64),
        pl.Series("prompt_conflict", [False, None, None, False, False, False, False, None, False], pl.Boolean),
    )


def manifest(full: bool = True) -> dict:
    m = {
        "config": {"seed": 0, "tokens": {"context_length": 8192}, "quality": {"high_quality_threshold": 0.7}},
        "versions": {"curator": "0.1.0", "polars": "test"},
        "inputs": {"a.jsonl": "0" * 64, "b.jsonl": "1" * 64},
        "outputs": {"train.jsonl": "2" * 64},
        "counts": {"read": 9, "kept": 3, "rejected": 6, "train": 2, "val": 1},
        "funnel": [{"stage": "validate", "alive_after": 7}, {"stage": "dedup_exact", "alive_after": 6}],
        "gates": [],
        "stages": {},
        "summaries": {},
    }
    if full:
        m["funnel"] += [{"stage": "tokens", "alive_after": 5}, {"stage": "quality", "alive_after": 4},
                        {"stage": "dedup_minhash", "alive_after": 3}, {"stage": "split", "alive_after": 3}]
        m["gates"] = [
            {"name": "quality.high_quality_rate", "passed": True, "value": 2 / 3, "threshold": 0.6,
             "message": "66.7% high quality, 6.7 points above the 60% minimum"},
            {"name": "size.min_examples", "passed": False, "value": 3, "threshold": 10000,
             "message": "3 examples, 9,997 short of 10,000"},
        ]
        m["summaries"] = {"tokens": {"cost": {"epochs": 3, "gpus": [
            {"gpu": "A100 80GB", "hours": 0.01, "usd": 0.02}, {"gpu": "H100", "hours": 0.005, "usd": 0.02}]}}}
    return m


def make_run(out: Path, full: bool = True, drop_rows: tuple[int, ...] = ()) -> Path:
    """Write the run folder into `out`; `drop_rows` leaves kept rows out (for --compare tests)."""
    out.mkdir(parents=True, exist_ok=True)
    ann = annotations(full)
    keep_mask = [i not in drop_rows for i in range(ann.height)]
    ann = ann.filter(pl.Series(keep_mask))
    ann.write_parquet(out / "annotations.parquet")
    rows = ann.to_dicts()
    with (out / "rejects.jsonl").open("w", encoding="utf-8") as fh:
        for r in rows:
            if r["reject_reasons"]:
                rec = RECORDS[r["row"]]
                raw = json.dumps(rec) if rec is not None else '{not json'
                fh.write(json.dumps({"source_file": r["source_file"], "source_line": r["source_line"],
                                     "ref": r["ref"], "raw": raw, "reasons": r["reject_reasons"],
                                     "details": r["reject_details"]}) + "\n")
    for split in ("train", "val"):
        with (out / f"{split}.jsonl").open("w", encoding="utf-8") as fh:
            for r in rows:
                if r["split"] == split:  # as the pipeline writes them: `id` is the content hash
                    fh.write(json.dumps({"id": r["content_hash"], **RECORDS[r["row"]]}) + "\n")
    m = manifest(full)
    kept = [r for r in rows if not r["reject_reasons"]]
    m["counts"] = {"read": len(rows), "kept": len(kept), "rejected": len(rows) - len(kept),
                   "train": sum(r["split"] == "train" for r in kept), "val": sum(r["split"] == "val" for r in kept)}
    (out / "manifest.json").write_text(json.dumps(m, indent=1), encoding="utf-8")
    return out
