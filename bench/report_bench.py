"""Report build time and HTML size on a 50,000-record run (targets: under 5 s, HTML under 5 MB).

Runs `curate run` once on bench/corpus/corpus50k.jsonl (built by bench/corpus.py when missing) with
the stages that work in this checkout, then times `curator.report.write_reports` on that folder
(best of --repeat runs) and each of its parts in one process, and prints a table.

    python bench/report_bench.py [--n 50000] [--repeat 3] [--skip-stages quality]
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
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-stages", default="", help="comma-separated stages to skip (those not built yet)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out-report")
    args = ap.parse_args()

    from corpus import build_corpus

    from curator.config import load_config
    from curator.pipeline import run
    from curator.report import build_report, render, write_reports
    from curator.report.load import load_run

    corpus = ROOT / "bench" / "corpus" / f"corpus{args.n // 1000}k.jsonl"
    if not corpus.exists():
        corpus.parent.mkdir(parents=True, exist_ok=True)
        with corpus.open("w", encoding="utf-8") as fh:
            for rec in build_corpus(args.n):
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    skip = [s for s in args.skip_stages.split(",") if s]
    config = load_config(None, [f"skip_stages=[{','.join(skip)}]"] if skip else [])
    t0 = time.perf_counter()
    result = run(corpus, args.out, config, force=True)
    run_s = time.perf_counter() - t0

    def best(fn) -> float:
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    loaded = {}
    t_load = best(lambda: loaded.__setitem__("run", load_run(args.out)))
    from curator.report.build import report_from_run

    t_build = best(lambda: loaded.__setitem__("rep", report_from_run(loaded["run"])))
    rep = loaded["rep"]
    t_json = best(lambda: render(rep, "json"))
    t_md = best(lambda: render(rep, "md"))
    t_html = best(lambda: render(rep, "html"))
    t_all = best(lambda: write_reports(args.out))
    t_cmp = best(lambda: build_report(args.out, compare=args.out))
    sizes = {f: (args.out / f"report.{f}").stat().st_size for f in ("json", "md", "html")}

    print(f"corpus: {corpus.name}, {result.counts['read']:,} read, {result.counts['kept']:,} kept, "
          f"{result.counts['rejected']:,} rejected; curate run {run_s:.1f} s; skipped stages: {skip or 'none'}")
    print(f"machine: {os.cpu_count()} CPUs (shared); best of {args.repeat}")
    print()
    print(f"| {'step':<40} | {'seconds':>8} | {'share of write_reports':>22} |")
    print(f"|{'-' * 42}|{'-' * 10}|{'-' * 24}|")
    for name, secs in [("load files (manifest, parquet)", t_load), ("build report dict", t_build),
                       ("render json", t_json), ("render md", t_md), ("render html", t_html),
                       ("write_reports (all, from the files)", t_all),
                       ("build_report with --compare (2 runs)", t_cmp)]:
        print(f"| {name:<40} | {secs:>8.3f} | {secs / t_all:>21.2f}x |")
    print()
    for f, size in sizes.items():
        print(f"report.{f}: {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
