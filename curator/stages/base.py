"""What every stage receives: the run's config and a place to leave side outputs."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    from curator.config import CurateConfig


class Progress:
    """Progress reporting for long work; silent when `enabled` is false (`--quiet`)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        """Yield an `advance(n)` callable; shows a rich progress bar when enabled.

        Callers advance by records (rows), in batches, so a bar moves within one large file. With
        `total` None (records not counted before reading) the bar shows the count so far, and its
        total becomes that count when the task ends."""
        if not self.enabled:
            yield lambda n=1: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

        with RichProgress(
            TextColumn("{task.description:<22}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=False,
        ) as bar:
            tid = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(tid, n)
            if total is None:
                bar.update(tid, total=next(t.completed for t in bar.tasks if t.id == tid))


@dataclass
class StageContext:
    """Shared by the stages of one run.

    - `config`: the resolved CurateConfig; a stage reads its own sub-config.
    - `artifacts`: extra output files, name -> bytes (e.g. "duplicates.jsonl"); the
      pipeline writes them atomically into OUT with the split.
    - `manifest`: per-stage metadata for manifest.json (e.g. the MinHash scheme and seed),
      stored under manifest["stages"][stage name].
    - `summaries`: per-stage figures for report.json, stored under report["stages"][stage name].
    - `streamed`: for a global stage that reads its text shard by shard (`Stage.streams`), under an engine
      that keeps shards: the live rows' streamed columns, shard by shard; None otherwise (the columns are
      in the frame the stage is given).
    """

    config: "CurateConfig"
    progress: Progress = field(default_factory=lambda: Progress(False))
    artifacts: dict[str, bytes] = field(default_factory=dict)
    manifest: dict[str, dict[str, Any]] = field(default_factory=dict)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    streamed: "StreamedColumns | None" = None


class StreamedColumns:
    """The columns a global stage streams: the live rows of shard k, in the order of the frame it was given;
    and a folder of its own for what it keeps of them (removed with the run's staging folder)."""

    def __init__(
        self, n_chunks: int, read: Callable[[int, list[str]], Any], scratch: Path,
        map: Callable[[Callable[[int], Any], int], Any] | None = None,
    ) -> None:
        self.n_chunks = n_chunks
        self.read = read  # (k, columns) -> polars DataFrame
        self.scratch = scratch
        # map(fn, n): fn(0) .. fn(n - 1) in order, where the engine runs work on chunks (None: here, in turn)
        self.map = map
