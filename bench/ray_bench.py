"""Ray engine benchmark: wall time of `curate run` under local, and under ray on a local Ray of 1 and 2 CPUs.

    python bench/ray_bench.py [--corpus bench/corpus/corpus50k.jsonl] [--batch-rows 12500] [--cpus 1 2]

Each run is a process of its own. A ray run starts its Ray (`ray.init(num_cpus=N)`) before
`curate run`, which then uses it, so its wall time includes starting Ray and its workers. Peak RSS
is not reported: Ray's workers are not children of the measured process. The outputs of each ray
run are compared byte for byte with local's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
COMPARED = ("train.jsonl", "val.jsonl", "rejects.jsonl", "duplicates.jsonl", "annotations.parquet")
RAY_FIRST = (
    "import sys, ray; ray.init(num_cpus=int(sys.argv.pop(1)), include_dashboard=False, log_to_driver=False,"
    " logging_level='WARNING'); from curator.cli import cli; cli()"
)


def timed_run(raw: Path, out: Path, engine: str, batch_rows: int, cpus: int | None) -> float:
    """Wall seconds of one `curate run` in a process of its own (under ray, on a Ray of `cpus` CPUs)."""
    code = RAY_FIRST if cpus else "from curator.cli import cli; cli()"
    args = [sys.executable, "-c", code, *([str(cpus)] if cpus else []), "run", str(raw), str(out), "--quiet",
            "--no-gate", "--force", "--engine", engine, "-s", f"engine.batch_rows={batch_rows}"]
    started = time.perf_counter()
    subprocess.run(args, check=True)
    return time.perf_counter() - started


def same_outputs(a: Path, b: Path) -> bool:
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in COMPARED if (a / n).exists())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=BENCH / "corpus" / "corpus50k.jsonl")
    parser.add_argument("--batch-rows", type=int, default=12_500)
    parser.add_argument("--cpus", type=int, nargs="+", default=[1, 2])
    opts = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as tmp:
        runs = [("local", None)] + [("ray", n) for n in opts.cpus]
        for engine, cpus in runs:
            out = Path(tmp) / f"{engine}-{cpus}"
            load = os.getloadavg()[0]
            seconds = timed_run(opts.corpus, out, engine, opts.batch_rows, cpus)
            same = engine == "local" or same_outputs(Path(tmp) / "local-None", out)
            rows.append((engine, cpus, seconds, load, os.getloadavg()[0], same))
            print(f"  {engine} cpus={cpus}: {seconds:.1f} s", file=sys.stderr)
    print(f"{opts.corpus.name}, batch_rows {opts.batch_rows:,} under ray, {os.cpu_count()} cores\n")
    print("| engine | Ray CPUs | wall s | load before, after | same bytes as local |")
    print("|---|---|---|---|---|")
    for engine, cpus, seconds, before, after, same in rows:
        print(f"| {engine} | {cpus or '-'} | {seconds:.1f} | {before:.1f}, {after:.1f} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
