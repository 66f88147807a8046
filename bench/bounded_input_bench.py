"""Bounded input benchmark: peak memory of `curate run` and `curate validate` on hostile input.

    python bench/bounded_input_bench.py [--bomb-gib 3] [--cap-mb 2048] [--root DIR]

Builds each input in a temporary folder (a 3 GiB newline-free line in a 3 MB .jsonl.gz, a .json
array with a 46 MB element, a 100 MB .json array, a symbolic link to /dev/zero and a FIFO in RAW, a
400-byte YAML alias bomb as --config and --rules, 1 MB of blank lines for `validate --format json`)
and runs the command in a child process with the default config (input.max_line_bytes 4,000,000).
Prints one table: the child's peak RSS (ru_maxrss from wait4), wall seconds, exit code and outcome.

A child whose resident set passes `--cap-mb` is killed and reported as such, so that measuring the
code from before these limits (`--root` a checkout of it) does not take the machine's memory; a child
still running after `--timeout` seconds (a FIFO read that never returns) is killed too.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"messages": [{"role": "user", "content": "What is two plus two?"}, {"role": "assistant", "content": "Two plus two is four."}]}
OTHER = {"messages": [{"role": "user", "content": "Name a prime number."}, {"role": "assistant", "content": "Seven is a prime number."}]}
FOUNDATION = "skip_stages=[secrets,language,code_language,tokens,quality,dedup_minhash,select]"
MIB = 1 << 20
BILLION_LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip(["", "a", "b", "c", "d", "e", "f", "g", "h"], "abcdefghi")
)


def measure(args: list[str], root: Path, cap_mb: int, timeout: float, logs: Path) -> dict:
    """Run `curate ARGS` from `root`; peak RSS (MB), seconds, exit code, whether it was killed, and the
    first line of its stdout and the last of its stderr."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    out, err = logs / "stdout", logs / "stderr"
    started = time.perf_counter()
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "curator.cli", *args], cwd=root, env=env, stdout=fo, stderr=fe)
    killed = None
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if _hwm_mb(proc.pid) > cap_mb:
            killed = f"killed at {cap_mb:,} MB"
        elif time.perf_counter() - started > timeout:
            killed = f"killed after {timeout:.0f} s"
        if killed:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    with out.open("rb") as fh:
        first = fh.readline(300).decode(errors="replace").strip()
    with err.open("rb") as fh:
        fh.seek(max(0, err.stat().st_size - 300))
        last = (fh.read().decode(errors="replace").strip().splitlines() or [""])[-1]
    return {
        "peak_mb": usage.ru_maxrss / 1024,
        "seconds": time.perf_counter() - started,
        "exit": proc.returncode,
        "killed": killed,
        "stdout": first,
        "stderr": last,
    }


def run_outcome(out: Path) -> str:
    """What a run wrote: counts, reject reasons, skipped inputs."""
    manifest = json.loads((out / "manifest.json").read_text())
    reasons: dict[str, int] = {}
    with (out / "rejects.jsonl").open() as fh:
        for line in fh:
            for reason in json.loads(line)["reasons"]:
                reasons[reason] = reasons.get(reason, 0) + 1
    c = manifest["counts"]
    shown = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "none"
    skipped = ", ".join(s["why"] for s in manifest["inputs_skipped"])
    return f"read {c['read']}, kept {c['kept']}, rejects: {shown}" + (f"; skipped: {skipped}" if skipped else "")


def _hwm_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next((int(line.split()[1]) / 1024 for line in fh if line.startswith("VmHWM:")), 0.0)
    except OSError:
        return 0.0


def gzip_bomb(path: Path, gib: float) -> None:
    """A good line, one line of `gib` GiB without a newline until its end, a good line."""
    block = b"a" * MIB
    with gzip.open(path, "wb", compresslevel=9) as fh:
        fh.write(json.dumps(GOOD).encode() + b"\n" + b'{"messages": "')
        for _ in range(int(gib * 1024)):
            fh.write(block)
        fh.write(b'"}\n' + json.dumps(OTHER).encode() + b"\n")


def json_big_element(path: Path, mb: int) -> None:
    with path.open("w") as fh:
        fh.write("[" + json.dumps(GOOD) + ",\n" + '{"messages": [{"role": "user", "content": "')
        for _ in range(mb):
            fh.write("a" * MIB)
        fh.write('"}, {"role": "assistant", "content": "b"}]},\n' + json.dumps(OTHER) + "]\n")


def json_array(path: Path, mb: int) -> int:
    """A .json array of distinct ordinary records, `mb` MB in all; returns how many."""
    n = 0
    with path.open("w") as fh:
        fh.write("[")
        while fh.tell() < mb * MIB:
            record = {"messages": [{"role": "user", "content": f"Question {n}: what is {n} plus {n}?"},
                                   {"role": "assistant", "content": f"{n} plus {n} is {2 * n}. " * 20}]}
            fh.write(("," if n else "") + "\n" + json.dumps(record))
            n += 1
        fh.write("\n]\n")
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bomb-gib", type=float, default=3.0, help="decompressed size of the gzip bomb line")
    parser.add_argument("--cap-mb", type=int, default=2048, help="kill a child whose RSS passes this")
    parser.add_argument("--timeout", type=float, default=120.0, help="kill a child still running after this")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose curator is measured")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bounded-") as tmp:
        tmp = Path(tmp)
        cases = []

        def case(name: str, argv: list[str]) -> None:
            cases.append((name, argv))

        good = tmp / "good"
        good.mkdir()
        (good / "a.jsonl").write_text(json.dumps(GOOD) + "\n")
        case("run, one good line (baseline)", ["run", str(good), str(tmp / "o0"), "-q", "--no-gate", "-s", FOUNDATION])
        case("validate, one good line (baseline)", ["validate", str(good / "a.jsonl")])

        bomb = tmp / "bomb"
        bomb.mkdir()
        gzip_bomb(bomb / "bomb.jsonl.gz", args.bomb_gib)
        size = (bomb / "bomb.jsonl.gz").stat().st_size
        label = f"{args.bomb_gib:g} GiB line in a {size / 1e6:.1f} MB .jsonl.gz"
        case(f"run, {label}", ["run", str(bomb), str(tmp / "o1"), "-q", "--no-gate", "-s", FOUNDATION])
        case(f"validate, {label}", ["validate", str(bomb / "bomb.jsonl.gz")])

        big = tmp / "big"
        big.mkdir()
        json_big_element(big / "big.json", 46)
        case("run, .json with a 46 MB element", ["run", str(big), str(tmp / "o2"), "-q", "--no-gate", "-s", FOUNDATION])
        case("validate, .json with a 46 MB element", ["validate", str(big / "big.json")])

        array = tmp / "array.json"
        n = json_array(array, 100)
        case(f"validate, 100 MB .json array ({n:,} records)", ["validate", str(array)])

        odd = tmp / "odd"
        odd.mkdir()
        (odd / "a.jsonl").write_text(json.dumps(GOOD) + "\n")
        (odd / "zero.jsonl").symlink_to("/dev/zero")
        case("run, RAW with x.jsonl -> /dev/zero", ["run", str(odd), str(tmp / "o3"), "-q", "--no-gate", "-s", FOUNDATION])
        fifo = tmp / "fifo"
        fifo.mkdir()
        (fifo / "a.jsonl").write_text(json.dumps(GOOD) + "\n")
        os.mkfifo(fifo / "pipe.jsonl")
        case("run, RAW with a FIFO x.jsonl", ["run", str(fifo), str(tmp / "o4"), "-q", "--no-gate", "-s", FOUNDATION])
        case("validate, a FIFO named as argument", ["validate", str(fifo / "pipe.jsonl")])

        laughs = tmp / "laughs.yaml"
        laughs.write_text(BILLION_LAUGHS)
        yaml_label = f"{len(BILLION_LAUGHS.encode())}-byte YAML alias bomb"
        case(f"run --config {yaml_label}", ["run", str(good), str(tmp / "o5"), "-q", "--config", str(laughs)])
        case(f"run --rules {yaml_label}", ["run", str(good), str(tmp / "o6"), "-q", "--rules", str(laughs),
                                           "-s", "skip_stages=[secrets,language,code_language,tokens,dedup_minhash,select]"])

        blank = tmp / "blank.jsonl"
        blank.write_bytes(b"\n" * 1_000_000)
        case("validate --format json, 1 MB of blank lines", ["validate", "--format", "json", str(blank)])

        print(f"# {platform.node()} ({os.cpu_count()} cores, {_mem_gib():.0f} GiB), Python {platform.python_version()}, "
              f"code: {args.root}")
        print(f"| case | peak RSS MB | seconds | exit | outcome |\n|---|---:|---:|---:|---|")
        logs = tmp / "logs"
        logs.mkdir()
        for name, argv in cases:
            r = measure(argv, args.root, args.cap_mb, args.timeout, logs)
            if r["killed"]:
                outcome = r["killed"]
            elif argv[0] == "run" and r["exit"] == 0:
                outcome = run_outcome(Path(argv[2]))
            else:
                outcome = r["stdout"] or r["stderr"]
                outcome = outcome.replace(str(tmp) + "/", "")
            outcome = outcome[:160] + ("..." if len(outcome) > 160 else "")
            print(f"| {name} | {r['peak_mb']:,.0f} | {r['seconds']:.1f} | {r['exit']} | {outcome.replace('|', '/')} |", flush=True)


def _mem_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)


if __name__ == "__main__":
    main()
