"""Foundation benchmark: `curate validate` throughput and start-up, and `curate run` with only the
foundation stages (read, validate, normalize, dedup_exact, split), on the 50,000-record corpus.

    python bench/corpus.py                      # builds bench/corpus/corpus50k.jsonl
    python bench/foundation_bench.py [--repeat 3] [--corpus PATH]

Prints one table. Each figure is the median of `--repeat` runs (the machine is shared, so the
spread is printed too). Variants measured in the same run are compared as ratios:
the CLI against the library call, and `curate validate` start-up against a bare `python -c pass`.
The import check runs `python -X importtime` on `curate validate` and lists any heavy module
(torch, transformers, polars, numpy ...) that got imported, which must be none.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DEFAULT_CORPUS = BENCH / "corpus" / "corpus50k.jsonl"
# Everything but the foundation: validate, normalize and split always run (curator/config.py).
NOT_FOUNDATION = ["secrets", "language", "code_language", "tokens", "quality", "dedup_minhash", "select"]
HEAVY = ("torch", "transformers", "polars", "numpy", "pyarrow", "datasketch", "tree_sitter", "langdetect", "tokenizers", "mistral_common")


def curate_cmd() -> list[str]:
    """The installed console script when there is one beside this interpreter, else `python -m`."""
    script = Path(sys.executable).with_name("curate")
    if script.is_file():
        return [str(script)]
    found = shutil.which("curate")
    return [found] if found else [sys.executable, "-m", "curator.cli"]


class Samples(list):
    """Wall-clock seconds of each repeat, with the CPU seconds (this process + its children) beside."""

    cpu: list[float]


def _cpu_now() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn, repeat: int) -> Samples:
    """Run `fn` `repeat` times. CPU time is printed too: on a shared machine the wall clock also
    counts the time other people's jobs held the cores, CPU seconds mostly do not."""
    out = Samples()
    out.cpu = []
    for _ in range(repeat):
        c0, t0 = _cpu_now(), time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
        out.cpu.append(_cpu_now() - c0)
    return out


def run_quiet(cmd: list[str], ok: tuple[int, ...] = (0, 1)) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode not in ok:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


def first_megabyte(corpus: Path, dest: Path) -> int:
    """Whole lines of the corpus up to 1 MB; returns the number of records."""
    n = size = 0
    with corpus.open("rb") as src, dest.open("wb") as out:
        for line in src:
            if size + len(line) > 1_000_000:
                break
            out.write(line)
            size += len(line)
            n += 1
    return n


def validate_library(corpus: Path) -> int:
    from curator.validation import validate_file

    n = 0
    for count, _ in validate_file(corpus):
        n += count
    return n


def heavy_imports(cmd: list[str], small: Path) -> tuple[list[str], float, list[tuple[int, str]]]:
    """Modules from HEAVY that `curate validate` imports, its total import time, and the top 5."""
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")  # same as -X importtime, works for a script too
    proc = subprocess.run(cmd + ["validate", str(small)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    top_level: list[tuple[int, str]] = []
    heavy = set()
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line or "cumulative" in line:
            continue
        _, cumulative, raw_name = line[len("import time:") :].split("|")
        name = raw_name.strip()
        if name.split(".")[0] in HEAVY:
            heavy.add(name.split(".")[0])
        if not raw_name.startswith("  "):  # nested imports are indented below their importer
            top_level.append((int(cumulative), name))
    total_us = sum(us for us, _ in top_level)
    return sorted(heavy), total_us / 1e6, sorted(top_level, reverse=True)[:5]


def fmt_spread(samples: list[float]) -> str:
    return f"{min(samples):.2f}-{max(samples):.2f}"


def cpu(samples: Samples) -> float:
    return statistics.median(samples.cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    corpus: Path = args.corpus
    if not corpus.is_file():
        raise SystemExit(f"{corpus}: missing; build it with `python bench/corpus.py`")
    n_records = count_lines(corpus)
    cmd = curate_cmd()
    load = os.getloadavg()
    rows: list[tuple[str, str, str, str, str]] = []  # what, median, spread, cpu, derived

    with tempfile.TemporaryDirectory(prefix="foundation-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        small = tmp / "one_mb.jsonl"
        n_small = first_megabyte(corpus, small)

        def row(what: str, samples: Samples, derived: str, digits: int = 2) -> None:
            rows.append(
                (
                    what,
                    f"{statistics.median(samples):.{digits}f} s",
                    f"{min(samples):.{digits}f}-{max(samples):.{digits}f}",
                    f"{cpu(samples):.{digits}f} s",
                    derived,
                )
            )

        # 1. validate throughput: library call (in process) and the CLI (a subprocess, start-up included)
        validate_library(small)  # warm the imports so the library figure is throughput only
        lib = timed(lambda: validate_library(corpus), args.repeat)
        cli = timed(lambda: run_quiet(cmd + ["validate", str(corpus)]), args.repeat)
        lib_rate, cli_rate = n_records / statistics.median(lib), n_records / statistics.median(cli)
        row("validate, library (validate_file)", lib, f"{lib_rate:,.0f} records/s wall, {n_records / cpu(lib):,.0f}/CPU-s")
        row(
            "validate, CLI subprocess",
            cli,
            f"{cli_rate:,.0f} records/s wall, {n_records / cpu(cli):,.0f}/CPU-s ({cli_rate / lib_rate:.2f}x library)",
        )

        # 2. start-up: curate validate on a 1 MB file against a bare interpreter
        bare = timed(lambda: run_quiet([sys.executable, "-c", "pass"], ok=(0,)), max(5, args.repeat))
        start = timed(lambda: run_quiet(cmd + ["validate", str(small)]), max(5, args.repeat))
        row("python -c pass", bare, "interpreter start-up", digits=3)
        row(
            f"validate 1 MB ({n_small:,} records), CLI",
            start,
            f"{statistics.median(start) / statistics.median(bare):.1f}x bare python",
            digits=3,
        )

        # 3. what `curate validate` imports
        heavy, import_s, top = heavy_imports(cmd, small)
        rows.append(("validate imports (-X importtime)", f"{import_s:.3f} s", "", "", "heavy: " + (", ".join(heavy) or "none")))

        # 4. curate run with only the foundation stages: the CLI and the library call
        skip = "skip_stages=[" + ",".join(NOT_FOUNDATION) + "]"
        run_cli = timed(lambda: run_quiet(cmd + ["run", str(corpus), str(tmp / "out"), "--force", "-q", "-s", skip], ok=(0, 3)), args.repeat)

        from curator.config import load_config
        from curator.pipeline import run

        config = load_config(None, [skip])
        results = []

        def library_run() -> None:
            results.append(run(corpus, tmp / "out-lib", config, force=True, progress=False))

        run_lib = timed(library_run, args.repeat)
        counts = results[-1].counts
        stage_times = ", ".join(f"{name} {secs:.2f} s" for name, secs in results[-1].timings)
        row("run (foundation), CLI subprocess", run_cli, f"{n_records / statistics.median(run_cli):,.0f} records/s wall")
        row(
            "run (foundation), library (pipeline.run)",
            run_lib,
            f"read {counts['read']:,} = kept {counts['kept']:,} + rejected {counts['rejected']:,}",
        )

    width = max(len(r[0]) for r in rows)
    print(f"foundation benchmark: {corpus.name} ({n_records:,} records, {corpus.stat().st_size / 1e6:.1f} MB), median of {args.repeat}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, curate = {' '.join(cmd)}")
    print(f"load average before the run: {load[0]:.1f} (1 min) on {os.cpu_count()} CPUs")
    print(f"{'what':<{width}}  {'median':>9}  {'min-max':>13}  {'CPU':>9}  derived")
    for what, median, spread, cpu_s, derived in rows:
        print(f"{what:<{width}}  {median:>9}  {spread:>13}  {cpu_s:>9}  {derived}")
    print(f"stage times of the last library run: {stage_times}")
    print("slowest top-level imports of curate validate: " + ", ".join(f"{name} {us / 1000:.0f} ms" for us, name in top))
    if heavy:
        raise SystemExit(f"curate validate imported heavy modules: {', '.join(heavy)}")


if __name__ == "__main__":
    main()
