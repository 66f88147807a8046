"""Engine benchmark: wall time and peak memory of `curate run` under the local and the stream engine.

    python bench/engine_bench.py [--sizes 50000 200000] [--batch-rows 25000]

Each run is `curate run CORPUS OUT --engine E` in its own process, every stage on; its peak RSS is
that process's (`os.wait4`, which counts the worker pools it waited for). Corpora are built by
bench/corpus.py (the real records, then edited repeats) as bench/corpus/corpus{N//1000}k.jsonl when
missing. The outputs of the two engines are compared byte for byte. The growth per record is the
difference of peak RSS between the smallest and the largest size, over the records added.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
COMPARED = ("train.jsonl", "val.jsonl", "rejects.jsonl", "duplicates.jsonl", "annotations.parquet")


def corpus(n: int) -> Path:
    """bench/corpus/corpus{n//1000}k.jsonl, built by bench/corpus.py when missing."""
    path = BENCH / "corpus" / f"corpus{n // 1000}k.jsonl"
    if not path.exists():
        from corpus import build_corpus

        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as fh:
            for record in build_corpus(n):
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def measured_run(raw: Path, out: Path, engine: str, batch_rows: int) -> tuple[float, int]:
    """(wall seconds, peak RSS in bytes) of one `curate run` in a process of its own."""
    args = [sys.executable, "-c", "from curator.cli import cli; cli()", "run", str(raw), str(out), "--quiet",
            "--no-gate", "--force", "--engine", engine, "-s", f"engine.batch_rows={batch_rows}"]
    started = time.perf_counter()
    child = subprocess.Popen(args)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"curate run --engine {engine} failed with {child.returncode}")
    return seconds, usage.ru_maxrss * 1024  # Linux reports kilobytes


def same_outputs(a: Path, b: Path) -> bool:
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in COMPARED if (a / n).exists())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--batch-rows", type=int, default=25_000)
    opts = parser.parse_args()
    rows: list[tuple[int, str, float, int, bool]] = []
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
        for n in opts.sizes:
            raw = corpus(n)
            outs = {}
            for engine in ("local", "stream"):
                outs[engine] = Path(tmp) / f"{engine}-{n}"
                seconds, rss = measured_run(raw, outs[engine], engine, opts.batch_rows)
                rows.append((n, engine, seconds, rss, False))
                print(f"  {n:,} records, {engine}: {seconds:.1f} s, {rss / 2**20:,.0f} MiB", file=sys.stderr)
            same = same_outputs(outs["local"], outs["stream"])
            rows[-2:] = [(*r[:4], same) for r in rows[-2:]]
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} on {os.cpu_count()} cores; stream batch_rows {opts.batch_rows:,}\n")
    print("| records | engine | wall s | peak RSS MiB | same bytes |")
    print("|---------|--------|--------|--------------|------------|")
    for n, engine, seconds, rss, same in rows:
        print(f"| {n:,} | {engine} | {seconds:.1f} | {rss / 2**20:,.0f} | {'yes' if same else 'NO'} |")
    small, large = min(opts.sizes), max(opts.sizes)
    if small != large:
        print()
        for engine in ("local", "stream"):
            peak = {n: rss for n, e, _, rss, _ in rows if e == engine}
            growth = (peak[large] - peak[small]) / (large - small)
            print(f"{engine}: {growth / 1024:.1f} KiB more peak RSS per record from {small:,} to {large:,}")


if __name__ == "__main__":
    main()
