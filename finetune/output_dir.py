"""The output folder of `curate train`: one run per folder, unless `--resume` continues it.

A fresh run in a folder that holds an earlier one would mix the two: checkpoints are pruned by step number,
so the new run's low steps would be removed in favour of the old run's high ones, and a later `--resume` would
continue the old run. So a folder with checkpoints or a non-empty metrics.jsonl is refused, as `curate run`
refuses a non-empty OUT, unless `--resume` (continue it) or `--overwrite` (start over: checkpoints/ and
tensorboard/ are cleared first). `--overwrite` is its own flag, not `--force` (which accepts a curated folder
whose gates failed), so that skipping one check never deletes an earlier run. No torch here: `curate train` checks before the heavy imports.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from curator.errors import CurateError

CLEARED_ON_FORCE = ("checkpoints", "tensorboard")


def earlier_run_marks(output_dir: str | Path) -> list[str]:
    """What in `output_dir` shows an earlier training run: checkpoints/ with entries, a non-empty metrics.jsonl."""
    output_dir = Path(output_dir)
    marks = []
    checkpoints = output_dir / "checkpoints"
    if checkpoints.is_dir() and any(checkpoints.iterdir()):
        marks.append("checkpoints/")
    metrics = output_dir / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size > 0:
        marks.append("metrics.jsonl")
    return marks


def prepare_output_dir(output_dir: str | Path, resume: bool, overwrite: bool, clear: bool = True) -> None:
    """Refuse a folder holding an earlier run unless resuming or overwriting; when overwriting (and `clear`), clear it.

    `clear=False` only checks (the CLI's early call, before tokenization and model loading).
    """
    output_dir = Path(output_dir)
    if resume:
        return
    marks = earlier_run_marks(output_dir)
    if not marks:
        return
    if not overwrite:
        raise CurateError(
            f"{output_dir}: holds an earlier training run ({', '.join(marks)}); use --resume to continue it, "
            "--overwrite to start over (clears checkpoints/ and tensorboard/), or another --output"
        )
    if clear:
        for name in CLEARED_ON_FORCE:
            shutil.rmtree(output_dir / name, ignore_errors=True)
        (output_dir / "metrics.jsonl").unlink(missing_ok=True)
