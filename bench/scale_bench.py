"""Scaling benchmark: wall time, peak memory and per-stage cost of `curate run` under every engine and size.

    python bench/scale_bench.py [--sizes 50000 200000 1000000] [--engines local stream ray1 ray2]
                                [--batch-rows 25000] [--json bench/scale_bench.json] [--keep DIR]

Each run is `curate run CORPUS OUT --engine E` (every stage on, --no-gate) in a process of its own. `rayN` starts
a local Ray of N CPUs in that process first (`ray.init(num_cpus=N)`), which `curate run` then uses. Corpora are
bench/corpus/corpus{N//1000}k.jsonl, built by bench/corpus.py when missing (the real records of
../shared/data/chat, about 20,400, then repeats whose first user turn gains a lead-in naming the pass: at
1,000,000 records every real record has about 48 near-duplicate copies, the densest near-dup load there is).

Reported per run: wall seconds; the driver's peak RSS (its VmHWM, read as it exits: the process that holds
what the engines differ in); the largest peak RSS of the driver and the children it waited for (`os.wait4`:
local's row-stage workers, the language and code pools; Ray's workers are not its children and are not
counted); the peak of the sum of the RSS of the driver and all its descendants, sampled every 0.2 s (local's
workers, and a local Ray's own processes and workers); and each stage's
seconds (the pipeline's own timings). Every engine's train/val/rejects/duplicates/annotations are compared
byte for byte with local's at the same size.
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

# Runs `curate run` and leaves the stage timings and the driver's VmHWM in the file named by argv[1].
DRIVER = """
import json, sys
report = sys.argv.pop(1)
cpus = int(sys.argv.pop(1))
if cpus:
    import ray
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
import curator.pipeline as P
real, seen = P.run, {}
def run(*args, **kwargs):
    result = real(*args, **kwargs)
    seen["timings"] = result.timings
    seen["counts"] = result.counts
    return result
P.run = run
from curator.cli import cli
try:
    cli()
finally:
    hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0] * 1024
    json.dump({**seen, "driver_peak": hwm}, open(report, "w"))
"""


def corpus(n: int) -> Path:
    from engine_bench import corpus as build

    return build(n)


def measured_run(raw: Path, out: Path, engine: str, batch_rows: int, tmp: Path) -> dict:
    """One `curate run` in a process of its own: wall seconds, peak RSS and the stage timings."""
    name, cpus = (engine, 0) if not engine.startswith("ray") else ("ray", int(engine[3:]))
    report = tmp / f"{out.name}.json"
    args = [sys.executable, "-c", DRIVER, str(report), str(cpus), "run", str(raw), str(out), "--quiet", "--no-gate",
            "--force", "--engine", name, "-s", f"engine.batch_rows={batch_rows}"]
    started = time.perf_counter()
    child = subprocess.Popen(args)
    tree = TreePeak(child.pid)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    tree.stop()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"curate run --engine {engine} on {raw} failed")
    seen = json.loads(report.read_text())
    return {"engine": engine, "seconds": seconds, "driver_peak": seen["driver_peak"],
            "largest_peak": usage.ru_maxrss * 1024, "tree_peak": tree.peak, "timings": dict(seen["timings"]),
            "counts": seen["counts"]}


class TreePeak:
    """The largest sum of the RSS of a process and all its descendants (local's row-stage workers, a local
    Ray's processes), sampled every 0.2 s in a thread until stop()."""

    def __init__(self, pid: int) -> None:
        import threading

        import psutil

        self.peak, self._root, self._done = 0, psutil.Process(pid), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        while not self._done.wait(0.2):
            total = 0
            try:
                for proc in [self._root, *self._root.children(recursive=True)]:
                    try:
                        total += proc.memory_info().rss
                    except psutil.Error:  # ended between the listing and the reading
                        pass
            except psutil.Error:
                return
            self.peak = max(self.peak, total)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def same_outputs(a: Path, b: Path) -> bool:
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in COMPARED if (a / n).exists())


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def tables(runs: list[dict], sizes: list[int], engines: list[str]) -> str:
    """The markdown tables of RESULTS.md: runs, growth per record, cost per stage."""
    out = ["| records | engine | wall s | driver peak MiB | largest process MiB | all processes MiB | same bytes as local |",
           "|---:|---|---:|---:|---:|---:|---|"]
    for r in runs:
        out.append(f"| {r['n']:,} | {r['engine']} | {r['seconds']:.1f} | {mib(r['driver_peak'])} | "
                   f"{mib(r['largest_peak'])} | {mib(r['tree_peak'])} | {'yes' if r['same'] else 'NO'} |")
    small, large = min(sizes), max(sizes)
    if small != large:
        out += ["", f"Driver peak RSS growth per record read, {small:,} to {large:,} records:", ""]
        for engine in engines:
            peak = {r["n"]: r["driver_peak"] for r in runs if r["engine"] == engine}
            if small in peak and large in peak:
                out.append(f"- {engine}: {(peak[large] - peak[small]) / (large - small):,.0f} bytes")
    out += ["", f"Seconds per stage at {large:,} records read (microseconds per record read):", ""]
    at_large = [r for r in runs if r["n"] == large]
    stages = list(at_large[0]["timings"]) if at_large else []
    out.append("| stage | " + " | ".join(r["engine"] for r in at_large) + " |")
    out.append("|---|" + "---:|" * len(at_large))
    for stage in stages:
        cells = [f"{r['timings'].get(stage, 0):.1f} ({r['timings'].get(stage, 0) / large * 1e6:,.0f})" for r in at_large]
        out.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000, 1_000_000])
    parser.add_argument("--engines", nargs="+", default=["local", "stream", "ray1", "ray2"])
    parser.add_argument("--batch-rows", type=int, default=25_000)
    parser.add_argument("--json", type=Path, default=None, help="also write every run's figures here")
    parser.add_argument("--keep", type=Path, default=None,
                        help="write each run's OUT under this folder and keep it (to compare bytes across invocations)")
    opts = parser.parse_args()
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for n in opts.sizes:
            raw = corpus(n)
            outs: dict[str, Path] = {}
            for engine in opts.engines:
                outs[engine] = (opts.keep or tmp) / f"{engine}-{n}"
                run = {"n": n, **measured_run(raw, outs[engine], engine, opts.batch_rows, tmp)}
                run["same"] = same_outputs(outs[opts.engines[0]], outs[engine])
                runs.append(run)
                print(f"  {n:,} {engine}: {run['seconds']:.1f} s, driver {mib(run['driver_peak'])} MiB, "
                      f"same {run['same']}", file=sys.stderr, flush=True)
                if opts.json:
                    opts.json.write_text(json.dumps(runs, indent=1))
            for path in outs.values() if opts.keep is None else ():  # the 1M outputs take GBs
                subprocess.run(["rm", "-rf", str(path)], check=True)
    print(f"{os.cpu_count()} cores, load average at the end {os.getloadavg()[0]:.1f}; batch_rows {opts.batch_rows:,}\n")
    print(tables(runs, opts.sizes, opts.engines))


if __name__ == "__main__":
    main()
