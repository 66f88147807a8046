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


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
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
        _, cumulative, name = (part.strip() for part in line[len("import time:") :].split("|"))
        root = name.split(".")[0]
        if root in HEAVY:
            heavy.add(root)
        if not name.startswith(" ") and not line.split("|")[2].startswith("  "):
            top_level.append((int(cumulative), name))
    total_us = sum(us for us, _ in top_level)
    return sorted(heavy), total_us / 1e6, sorted(top_level, reverse=True)[:5]


def fmt_spread(samples: list[float]) -> str:
    return f"{min(samples):.2f}-{max(samples):.2f}"


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
    rows: list[tuple[str, str, str, str]] = []  # what, median, spread, derived

    with tempfile.TemporaryDirectory(prefix="foundation-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        small = tmp / "one_mb.jsonl"
        n_small = first_megabyte(corpus, small)

        # 1. validate throughput: library call (in process) and the CLI (a subprocess, start-up included)
        validate_library(small)  # warm the imports so the library figure is throughput only
        lib = timed(lambda: validate_library(corpus), args.repeat)
        cli = timed(lambda: run_quiet(cmd + ["validate", str(corpus)]), args.repeat)
        lib_rate, cli_rate = n_records / statistics.median(lib), n_records / statistics.median(cli)
        rows.append(("validate, library (validate_file)", f"{statistics.median(lib):.2f} s", fmt_spread(lib), f"{lib_rate:,.0f} records/s"))
        rows.append(("validate, CLI subprocess", f"{statistics.median(cli):.2f} s", fmt_spread(cli), f"{cli_rate:,.0f} records/s ({cli_rate / lib_rate:.2f}x library)"))

        # 2. start-up: curate validate on a 1 MB file against a bare interpreter
        bare = timed(lambda: run_quiet([sys.executable, "-c", "pass"], ok=(0,)), max(5, args.repeat))
        start = timed(lambda: run_quiet(cmd + ["validate", str(small)]), max(5, args.repeat))
        rows.append(("python -c pass", f"{statistics.median(bare):.3f} s", f"{min(bare):.3f}-{max(bare):.3f}", "interpreter start-up"))
        rows.append(
            (
                f"validate 1 MB ({n_small:,} records), CLI",
                f"{statistics.median(start):.3f} s",
                f"{min(start):.3f}-{max(start):.3f}",
                f"{statistics.median(start) / statistics.median(bare):.1f}x bare python",
            )
        )

        # 3. what `curate validate` imports
        heavy, import_s, top = heavy_imports(cmd, small)
        rows.append(("validate imports (-X importtime)", f"{import_s:.3f} s", "", "heavy: " + (", ".join(heavy) or "none")))

        # 4. curate run with only the foundation stages: the CLI and the library call
        skip = "skip_stages=[" + ",".join(NOT_FOUNDATION) + "]"
        out = tmp / "out"
        run_cli = timed(lambda: run_quiet(cmd + ["run", str(corpus), str(out), "--force", "-q", "-s", skip], ok=(0, 3)), args.repeat)

        from curator.config import load_config
        from curator.pipeline import run

        config = load_config(None, [skip])
        results = []

        def library_run() -> None:
            results.append(run(corpus, tmp / "out-lib", config, force=True, progress=False))

        run_lib = timed(library_run, args.repeat)
        last = results[-1]
        counts = last.counts
        rows.append(("run (foundation), CLI subprocess", f"{statistics.median(run_cli):.2f} s", fmt_spread(run_cli), f"{n_records / statistics.median(run_cli):,.0f} records/s"))
        rows.append(
            (
                "run (foundation), library (pipeline.run)",
                f"{statistics.median(run_lib):.2f} s",
                fmt_spread(run_lib),
                f"read {counts['read']:,} = kept {counts['kept']:,} + rejected {counts['rejected']:,}",
            )
        )
        stage_times = ", ".join(f"{name} {secs:.2f}s" for name, secs in last.timings)

    width = max(len(r[0]) for r in rows)
    print(f"foundation benchmark: {corpus.name} ({n_records:,} records, {corpus.stat().st_size / 1e6:.1f} MB), median of {args.repeat}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, curate = {' '.join(cmd)}")
    print(f"{'what':<{width}}  {'median':>9}  {'min-max':>11}  derived")
    for what, median, spread, derived in rows:
        print(f"{what:<{width}}  {median:>9}  {spread:>11}  {derived}")
    print(f"stage times of the last library run: {stage_times}")
    print("slowest top-level imports of curate validate: " + ", ".join(f"{name} {us / 1000:.0f} ms" for us, name in top))
    if heavy:
        raise SystemExit(f"curate validate imported heavy modules: {', '.join(heavy)}")


if __name__ == "__main__":
    main()
