"""The 50,000-record benchmark corpus, built from the real data in ../shared/data/chat.

Pass 0 is every real record of the 18 files, in file order (about 20,400 records, with their
natural defects: exact duplicates, empty answers, over-budget records, tool turns). Later
passes repeat the real records with a small, deterministic edit on the first user turn
(a lead-in phrase chosen by the pass and record index), so each copy has its own content hash
but is a near-duplicate of its original: the shape of data collected twice from the same
source. Records are taken in order until `n` is reached.

    python bench/corpus.py --n 50000 --out bench/corpus/corpus50k.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CHAT_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chat"
LEAD_INS = [
    "Please help with this.",
    "Question from a colleague:",
    "I need an answer to the following.",
    "Here is my task.",
    "Could you take a look?",
    "Another one for you:",
    "Quick request:",
]


def real_records(chat_dir: Path = CHAT_DIR) -> list[dict]:
    records = []
    for path in sorted(chat_dir.glob("*.jsonl")):
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    records.append(json.loads(line))
    return records


def build_corpus(n: int = 50_000, chat_dir: Path = CHAT_DIR) -> list[dict]:
    """`n` records: the real ones, then edited repeats (see module docstring)."""
    base = real_records(chat_dir)
    out: list[dict] = []
    pass_no = 0
    while len(out) < n:
        for i, rec in enumerate(base):
            if len(out) >= n:
                break
            if pass_no == 0:
                out.append(rec)
                continue
            copy = json.loads(json.dumps(rec))
            for msg in copy.get("messages", []):
                if isinstance(msg, dict) and msg.get("role") == "user" and isinstance(msg.get("content"), str):
                    lead = LEAD_INS[(i + pass_no) % len(LEAD_INS)]
                    msg["content"] = f"{lead} (pass {pass_no})\n{msg['content']}"
                    break
            out.append(copy)
        pass_no += 1
    return out


def write_corpus(path: Path, n: int = 50_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for rec in build_corpus(n):
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "corpus" / "corpus50k.jsonl")
    args = ap.parse_args()
    print(write_corpus(args.out, args.n))
