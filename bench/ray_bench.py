"""Ray engine benchmark: wall time of `curate run` under local, and under ray on a local Ray of 1 and 2 CPUs.

    python bench/ray_bench.py [--corpus bench/corpus/corpus50k.jsonl] [--batch-rows 12500] [--cpus 1 2] [--rounds 3]

Each run is a process of its own. A ray run starts its Ray (`ray.init(num_cpus=N)`) before
`curate run`, which then uses it, so its wall time includes starting Ray and its workers. Peak RSS
is not reported: Ray's workers are not children of the measured process. The outputs of each ray
run are compared byte for byte with local's. The runs alternate, round after round (on a shared box
the load drifts), and the median of each is reported with every round's time.
"""

from __future__ import annotations

import argparse
import os
import statistics
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
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()
    runs = [("local", None)] + [("ray", n) for n in opts.cpus]
    times: dict = {run: [] for run in runs}
    same: dict = {run: True for run in runs}
    loads = []
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as tmp:
        for _ in range(opts.rounds):
            for engine, cpus in runs:
                out = Path(tmp) / f"{engine}-{cpus}"
                loads.append(os.getloadavg()[0])
                times[engine, cpus].append(timed_run(opts.corpus, out, engine, opts.batch_rows, cpus))
                same[engine, cpus] &= engine == "local" or same_outputs(Path(tmp) / "local-None", out)
                print(f"  {engine} cpus={cpus}: {times[engine, cpus][-1]:.1f} s", file=sys.stderr)
    print(f"{opts.corpus.name}, batch_rows {opts.batch_rows:,} under ray, {os.cpu_count()} cores, "
          f"load average {min(loads):.1f} to {max(loads):.1f} before the runs\n")
    print("| engine | Ray CPUs | median wall s | each round, s | same bytes as local |")
    print("|---|---|---|---|---|")
    for (engine, cpus), seconds in times.items():
        each = ", ".join(f"{s:.1f}" for s in seconds)
        print(f"| {engine} | {cpus or '-'} | {statistics.median(seconds):.1f} | {each} | {'yes' if same[engine, cpus] else 'NO'} |")


if __name__ == "__main__":
    main()
