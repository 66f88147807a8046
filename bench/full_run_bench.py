"""A full `curate run` of the 50k corpus with this checkout and with another revision, side by side.

The other revision (`--base`, default `main`) is checked out once as a git worktree under /tmp and
run with PYTHONPATH pointing at it, in the same interpreter and venv. Each round runs every
variant once in its own child process (the order alternates between rounds, so neither side
always runs on a warmer or quieter box); wall time, CPU time (the child and its pool workers) and
peak RSS (of the largest process) come from `wait4`. The stage times are those `curate run`
prints. After the last round the outputs are compared: train/val/rejects/duplicates byte for
byte, annotations.parquet as frames.

    python bench/full_run_bench.py --repeat 3 [--base main] [--new REF] [--variant "pool:code_language.workers=2"] [--input PATH]

`--new REF` measures a checkout of REF instead of this working tree (so edits made while it runs
do not leak into it); `--variant LABEL:KEY=VALUE,...` adds the new tree run with `-s KEY=VALUE`
overrides.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPARED_BYTES = ("train.jsonl", "val.jsonl", "rejects.jsonl", "duplicates.jsonl")


@dataclass
class Variant:
    label: str
    tree: Path
    overrides: list[str] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)


def worktree(ref: str) -> Path:
    """A checkout of `ref` under /tmp (made once, reused while it is at the same commit)."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", ref], check=True, capture_output=True, text=True).stdout.strip()
    path = Path(f"/tmp/curator-bench-{sha[:12]}")
    if not path.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), sha], check=True, capture_output=True)
    return path


def ensure_corpus(n: int) -> Path:
    corpus = ROOT / "bench" / "corpus" / f"corpus{n // 1000}k.jsonl"
    if not corpus.exists():
        subprocess.run([sys.executable, str(ROOT / "bench" / "corpus.py"), "--n", str(n), "--out", str(corpus)], check=True)
    return corpus


def run_once(variant: Variant, corpus: Path, out: Path) -> dict:
    """One `curate run` in a child process: wall, CPU and peak RSS from wait4, and its stage times."""
    cmd = [sys.executable, "-m", "curator.cli", "run", str(corpus), str(out), "--no-gate", "--force"]
    for override in variant.overrides:
        cmd += ["-s", override]
    env = {**os.environ, "PYTHONPATH": str(variant.tree), "COLUMNS": "400"}
    check = subprocess.run([sys.executable, "-c", "import curator; print(curator.__file__)"], env=env, cwd=out.parent,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not check.startswith(str(variant.tree)):
        raise SystemExit(f"{variant.label}: imports curator from {check}, not from {variant.tree}")
    log = out.parent / f"{out.name}.log"
    started = time.perf_counter()
    with log.open("w") as fh:
        # not the checkout as the working folder: `python -m` puts it first on sys.path, ahead of PYTHONPATH
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=out.parent)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{variant.label}: curate run failed ({proc.returncode}), see {log}")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_gib": usage.ru_maxrss / 2**20,
        "stages": stage_times(log.read_text(encoding="utf-8", errors="replace")),
        "load": os.getloadavg()[0],
    }


def stage_times(log: str) -> dict[str, float]:
    """The `read + validate 1.4s, normalize 0.7s, ...` line `curate run` prints last."""
    text = " ".join(log.split())
    at = text.rfind("read + validate ")
    times = {}
    for item in text[at:].split(", ") if at >= 0 else []:
        found = re.match(r"(.+?) (\d+\.\d)s", item.strip())
        if found:
            times[found.group(1)] = float(found.group(2))
    return times


def same_outputs(a: Path, b: Path) -> list[str]:
    """The outputs that differ between two run folders (empty: the same)."""
    import polars as pl
    from polars.testing import assert_frame_equal

    differ = [name for name in COMPARED_BYTES if (a / name).exists() != (b / name).exists()
              or ((a / name).exists() and (a / name).read_bytes() != (b / name).read_bytes())]
    try:
        assert_frame_equal(pl.read_parquet(a / "annotations.parquet"), pl.read_parquet(b / "annotations.parquet"))
    except AssertionError:
        differ.append("annotations.parquet")
    return differ


def summary(variants: list[Variant]) -> None:
    base = variants[0]
    print("\n| variant | wall s (median) | wall min-max | CPU s (median) | peak RSS GiB | wall / base | CPU / base |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    med = {v.label: {k: statistics.median(r[k] for r in v.runs) for k in ("wall", "cpu", "rss_gib")} for v in variants}
    for v in variants:
        m, walls = med[v.label], [r["wall"] for r in v.runs]
        print(f"| {v.label} | {m['wall']:.1f} | {min(walls):.1f}-{max(walls):.1f} | {m['cpu']:.1f} | {m['rss_gib']:.2f} | "
              f"{m['wall'] / med[base.label]['wall']:.2f} | {m['cpu'] / med[base.label]['cpu']:.2f} |")
    names = list(dict.fromkeys(n for v in variants for r in v.runs for n in r["stages"]))
    print("\nstage times printed by `curate run`, median s:\n")
    print("| stage | " + " | ".join(v.label for v in variants) + " |")
    print("|---|" + "---:|" * len(variants))
    for name in names:
        cells = [statistics.median(r["stages"].get(name, 0.0) for r in v.runs) for v in variants]
        print(f"| {name} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", default="main", help="git revision to compare with (default: main)")
    ap.add_argument("--new", default=None, help="git revision to measure instead of this working tree")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--input", type=Path, default=None, help="a file or folder to run instead of the bench corpus")
    ap.add_argument("--variant", action="append", default=[], help="LABEL:KEY=VALUE,... this checkout with overrides")
    ap.add_argument("--out", type=Path, default=Path("/tmp/curator-full-run-bench"))
    args = ap.parse_args()

    corpus = args.input.resolve() if args.input else ensure_corpus(args.n)
    new = ROOT if args.new is None else worktree(args.new)
    variants = [Variant(f"base ({args.base})", worktree(args.base)), Variant(args.new or "this checkout", new)]
    for spec in args.variant:
        label, _, sets = spec.partition(":")
        variants.append(Variant(label, new, [s for s in sets.split(",") if s]))
    args.out.mkdir(parents=True, exist_ok=True)
    size = sum(p.stat().st_size for p in ([corpus] if corpus.is_file() else corpus.rglob("*") if corpus.is_dir() else []) if p.is_file())
    print(f"corpus {corpus} ({size / 1e6:.1f} MB), {os.cpu_count()} CPUs, load average {os.getloadavg()}")
    print("| round | variant | wall s | CPU s | peak RSS GiB | load (1 min) after |")
    print("|---|---|---:|---:|---:|---:|")
    for round_no in range(args.repeat):
        order = variants if round_no % 2 == 0 else variants[::-1]
        for v in order:
            r = run_once(v, corpus, args.out / f"v{variants.index(v)}")
            v.runs.append(r)
            print(f"| {round_no + 1} | {v.label} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['rss_gib']:.2f} | {r['load']:.1f} |", flush=True)
    summary(variants)
    for i, v in enumerate(variants[1:], 1):
        differ = same_outputs(args.out / "v0", args.out / f"v{i}")
        print(f"\noutputs of {v.label} against {variants[0].label}: " + ("identical" if not differ else "DIFFER: " + ", ".join(differ)))
    print(json.dumps({v.label: v.runs for v in variants}), file=(args.out / "runs.json").open("w"))


if __name__ == "__main__":
    main()
