"""Interop check: does another `datasets` release load the split as it is?

    python -m venv bench/.venv-datasets3 && bench/.venv-datasets3/bin/pip install "datasets==3.6.0"
    python bench/interop_datasets.py [--python bench/.venv-datasets3/bin/python] [--raw data_samples/raw]
                                     [--chunk-all] [-s key=value ...]

Runs `curate run RAW` into a temporary OUT with this interpreter (the golden run by default, every
stage unless `-s skip_stages=[...]` says otherwise, gates not enforced), then loads OUT/train.jsonl and OUT/val.jsonl with
`datasets.load_dataset("json", data_files=...)` in the other interpreter, which holds only
`datasets` (the releases users have pinned, 3.6 in the venv above). Prints the `datasets` and
`pyarrow` versions and, per file, the rows loaded or the first line of the error. `--chunk-all`
loads each file as one chunk (`chunksize` larger than the file): `datasets` takes the columns
from the first chunk (10 MB), so a split whose first tool call comes later needs it.
Exit status 1 when a file does not load.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PYTHON = ROOT / "bench" / ".venv-datasets3" / "bin" / "python"

# Runs in the other interpreter: only the standard library and datasets.
LOADER = """
import json, sys, tempfile
import datasets, pyarrow
datasets.disable_progress_bars()
out = {"datasets": datasets.__version__, "pyarrow": pyarrow.__version__, "files": {}}
chunk_all = sys.argv[1] == "1"
for path in sys.argv[2:]:
    options = {"chunksize": max(10 << 20, len(open(path, "rb").read()) + 1)} if chunk_all else {}
    try:
        table = datasets.load_dataset("json", data_files=path, split="train", cache_dir=tempfile.mkdtemp(), **options)
        out["files"][path] = {"rows": table.num_rows}
    except Exception as exc:
        cause = exc.__cause__ or exc
        out["files"][path] = {"error": f"{type(exc).__name__}: {' '.join(str(cause).split())[:400]}"}
print(json.dumps(out))
"""


def curate_run(raw: Path, out: Path, overrides: list[str]) -> None:
    """`curate run RAW OUT --no-gate -s ...` with this interpreter and this checkout."""
    cmd = [sys.executable, "-m", "curator.cli", "run", str(raw), str(out), "--no-gate"]
    for item in overrides:
        cmd += ["-s", item]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def load_with(python: Path, files: list[Path], chunk_all: bool) -> dict:
    """What the other interpreter's `datasets` makes of `files`."""
    done = subprocess.run(
        [str(python), "-c", LOADER, "1" if chunk_all else "0", *map(str, files)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", type=Path, default=DEFAULT_PYTHON, help="an interpreter with datasets installed")
    parser.add_argument("--raw", type=Path, default=ROOT / "data_samples" / "raw", help="what to curate")
    parser.add_argument("--chunk-all", action="store_true", help="load each file as one chunk")
    parser.add_argument("-s", dest="overrides", action="append", default=[], help="a config override for curate run")
    args = parser.parse_args()
    if not args.python.is_file():
        parser.error(f"{args.python}: not found; create it as the module docstring says")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        curate_run(args.raw.resolve(), out, args.overrides)
        result = load_with(args.python, [out / "train.jsonl", out / "val.jsonl"], args.chunk_all)
    how = "".join(f" -s {o}" for o in args.overrides) + (", one chunk per file" if args.chunk_all else "")
    print(f"datasets {result['datasets']}, pyarrow {result['pyarrow']}, RAW {args.raw}{how}")
    failed = False
    for path, found in result["files"].items():
        name = Path(path).name
        if "rows" in found:
            print(f"  {name}: loads, {found['rows']:,} rows")
        else:
            failed = True
            print(f"  {name}: fails: {found['error']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
