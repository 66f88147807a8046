"""The engines of `curate run`: how the stages run over the records, not what they compute.

The records are cut into shards: batches of rows in row order, each built by `validate.build_frame`
from its batch of input lines. Stages run in order, each as one segment:

- a `row` stage runs shard by shard, on the shard's live rows, exactly as it would on all of them;
- a `global` stage runs once, on the live rows of every shard narrowed to the columns it reads
  (and the bookkeeping columns), and its columns are merged back into each shard by row.

`local` keeps one shard, in memory, holding every record: today's single frame. `stream` keeps
shards of `engine.batch_rows` records as Parquet files in OUT's staging folder, so only one shard's
text is in memory at a time (and the text a global stage reads: docs/scaling.md). Since a row stage
gives the same result under any batching (tests/test_stage_contract.py), both engines write the same
bytes. A row stage's summary is merged from what every shard returned (`merge_summary` in its module).
`ray` keeps stream's shards and runs each row stage on them in parallel, as Ray tasks
(curator/ray_engine.py, imported only by that engine); global stages run here, as under stream.
Under local and stream, consecutive row stages (a segment) may run in several processes of this
machine instead (`engine.workers`, curator/row_pool.py), on slices of local's shard or on stream's shards.
"""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import polars as pl

from curator import columns as C
from curator.chunked import ChunkMap
from curator.memory import give_back_freed_memory
from curator.stages import registry, validate
from curator.stages.base import Progress, StageContext, StreamedColumns

ENGINES = ("local", "stream", "ray")
SHARDED = ("stream", "ray")  # the engines that keep Parquet shards of engine.batch_rows records
SHARD_FOLDER = ".shards"  # inside OUT's staging folder; hidden, so discover() never reads it as input
NEXT_LIVE = "live-next"  # where a Ray task writes a shard's new live rows; the driver then takes them
# Columns that carry the record's text; annotations.parquet and the narrow frames leave them out.
TEXT_COLUMNS = (C.RAW, C.RAW_B64, C.MESSAGES, C.TOOLS)
# Columns every stage may read and update: the verdict, and where a row came from.
BOOKKEEPING = (C.ROW, C.REF, C.SOURCE_FILE, C.SOURCE_LINE, C.REJECT_REASONS, C.REJECT_DETAILS, C.WARNINGS)
# A gzip'd JSONL file holds several times its size in text: it counts this many times its size.
GZIP_FACTOR = 4


def input_bytes(files: Iterable[Path]) -> int:
    """The size of the input as `engine.auto_stream_bytes` measures it: bytes on disk, .gz counted
    GZIP_FACTOR times."""
    total = 0
    for path in files:
        try:
            size = path.stat().st_size
        except OSError:  # unreadable files become rejects later; they hold no records to keep in memory
            continue
        total += size * GZIP_FACTOR if path.name.lower().endswith(".gz") else size
    return total


def choose_engine(files: list[Path], cfg: Any) -> tuple[str, str]:
    """(engine, why): `engine.name` when it names one, else stream from `auto_stream_bytes` of input on."""
    name = cfg.engine.name
    if name != "auto":
        return name, "engine.name"
    size, limit = input_bytes(files), cfg.engine.auto_stream_bytes
    if size >= limit:
        return "stream", f"auto: {size:,} input bytes >= engine.auto_stream_bytes {limit:,}"
    return "local", f"auto: {size:,} input bytes < engine.auto_stream_bytes {limit:,}"


def check_available(engine: str) -> None:
    """Raise CurateError, before any input is read, when `engine` needs a package not installed."""
    import importlib.util

    from curator.errors import CurateError

    if engine == "ray" and importlib.util.find_spec("ray") is None:
        raise CurateError("the ray engine needs Ray: pip install 'curator[ray]' (or --engine stream on one machine)")


def _alive(df: pl.DataFrame) -> pl.Series:
    return df.select(C.alive()).to_series()


# --- where the shards live --------------------------------------------------------------------------


class Shards:
    """The shards of a run, in row order: each holds its live rows, and the rows that left it, one
    frame per stage that rejected some (the first, those validate rejected, always)."""

    def __len__(self) -> int:
        raise NotImplementedError

    def add(self, frame: pl.DataFrame) -> None:
        """A new shard from the frame validate built: its live rows, and those it rejected."""
        mask = _alive(frame)
        self._append(frame.filter(mask), frame.filter(~mask))

    def live(self, i: int, columns: list[str] | None = None) -> pl.DataFrame:
        raise NotImplementedError

    def replace_live(self, i: int, live: pl.DataFrame) -> None:
        raise NotImplementedError

    def add_dead(self, i: int, dead: pl.DataFrame) -> None:
        raise NotImplementedError

    def dead(self, i: int) -> list[pl.DataFrame]:
        raise NotImplementedError

    def finished(self, i: int) -> pl.DataFrame:
        """Every row of shard `i` sorted by row, rows that left early with nulls in later columns."""
        return pl.concat([self.live(i), *self.dead(i)], how="diagonal_relaxed").sort(C.ROW)

    def close(self) -> None:
        """Forget the shards (remove their files)."""

    def _append(self, live: pl.DataFrame, dead: pl.DataFrame) -> None:
        raise NotImplementedError


class MemoryShards(Shards):
    """Shards held as frames in memory (the local engine: one shard)."""

    def __init__(self) -> None:
        self._live: list[pl.DataFrame] = []
        self._dead: list[list[pl.DataFrame]] = []

    @classmethod
    def holding(cls, live: pl.DataFrame) -> "MemoryShards":
        """One shard of the live rows `live`, none of them rejected yet."""
        shards = cls()
        shards._live, shards._dead = [live], [[]]
        return shards

    def __len__(self) -> int:
        return len(self._live)

    def _append(self, live: pl.DataFrame, dead: pl.DataFrame) -> None:
        self._live.append(live)
        self._dead.append([dead])

    def live(self, i: int, columns: list[str] | None = None) -> pl.DataFrame:
        return self._live[i] if columns is None else self._live[i].select(columns)

    def replace_live(self, i: int, live: pl.DataFrame) -> None:
        self._live[i] = live

    def add_dead(self, i: int, dead: pl.DataFrame) -> None:
        self._dead[i].append(dead)

    def dead(self, i: int) -> list[pl.DataFrame]:
        return self._dead[i]

    def close(self) -> None:
        self._live, self._dead = [], []


class ParquetShards(Shards):
    """Shards as Parquet files in `folder` (the stream engine): `NNNNNN.live.parquet` and one
    `NNNNNN.dead-K.parquet` per frame of rows that left. Only the shard being worked on is in memory."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir()
        self._n_dead: list[int] = []
        self._live_out = "live"

    @classmethod
    def attach(cls, folder: Path, n_dead: list[int], live_out: str = "live") -> "ParquetShards":
        """The shards another process created in `folder` (a Ray task works on one of them), their
        new live rows written as `live_out`."""
        shards = cls.__new__(cls)
        shards.folder, shards._n_dead, shards._live_out = folder, list(n_dead), live_out
        return shards

    def commit_live(self, i: int) -> None:
        """Make the live rows a task wrote for shard `i` (as NEXT_LIVE) its live rows."""
        self._path(i, NEXT_LIVE).replace(self._path(i, "live"))

    def n_dead(self, i: int) -> int:
        return self._n_dead[i]

    def set_n_dead(self, i: int, n: int) -> None:
        """Take note of the frames of rows that left shard `i` that another process wrote."""
        self._n_dead[i] = n

    def __len__(self) -> int:
        return len(self._n_dead)

    def _path(self, i: int, part: str) -> Path:
        return self.folder / f"{i:06d}.{part}.parquet"

    def _write(self, frame: pl.DataFrame, path: Path) -> None:
        from curator.pipeline import _naming

        with _naming(path):
            # lz4 and no statistics: these files are read once or twice, by this run, whole
            frame.write_parquet(path, compression="lz4", statistics=False)

    def _append(self, live: pl.DataFrame, dead: pl.DataFrame) -> None:
        i = len(self._n_dead)
        self._n_dead.append(0)
        self._write(live, self._path(i, "live"))
        self.add_dead(i, dead)

    def live(self, i: int, columns: list[str] | None = None) -> pl.DataFrame:
        return pl.read_parquet(self._path(i, "live"), columns=columns, glob=False)  # OUT may hold [ ] * ?

    def live_columns(self, i: int) -> list[str]:
        with self._path(i, "live").open("rb") as fh:  # a handle: a path is read as a glob pattern
            return list(pl.read_parquet_schema(fh))

    def replace_live(self, i: int, live: pl.DataFrame) -> None:
        self._write(live, self._path(i, self._live_out))

    def add_dead(self, i: int, dead: pl.DataFrame) -> None:
        self._write(dead, self._path(i, f"dead-{self._n_dead[i]:03d}"))
        self._n_dead[i] += 1

    def dead(self, i: int) -> list[pl.DataFrame]:
        return [pl.read_parquet(self._path(i, f"dead-{k:03d}"), glob=False) for k in range(self._n_dead[i])]

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def open_shards(engine: str, staging: Path) -> Shards:
    """Where the shards of a run under `engine` live: memory (local), or Parquet files in a hidden
    folder of OUT's staging folder (stream, ray), removed with it."""
    if engine == "local":
        return MemoryShards()
    if engine in SHARDED:
        return ParquetShards(staging / SHARD_FOLDER)
    raise ValueError(f"unknown engine {engine!r}; engines: {', '.join(ENGINES)}")


def read_into(shards: Shards, lines: Iterator, ctx: StageContext, batch_rows: int | None) -> int:
    """Validate `lines` into `shards`, `batch_rows` lines per shard (None: all in one); return the
    number of lines read. There is always at least one shard, so every stage runs (and summarizes)
    even on no input."""
    if batch_rows is None:
        frame = validate.build_frame(lines, ctx)
        shards.add(frame)
        return frame.height
    n_read = 0
    while True:
        batch = list(islice(lines, batch_rows))
        if not batch and len(shards):
            return n_read
        shards.add(validate.build_frame(batch, ctx, first_row=n_read))
        n_read += len(batch)


# --- the segments -----------------------------------------------------------------------------------


def _quiet(ctx: StageContext) -> StageContext:
    """`ctx` without progress bars: under stream, a row stage's own bars would restart on every shard."""
    return StageContext(config=ctx.config, progress=Progress(False), artifacts=ctx.artifacts, manifest=ctx.manifest,
                        summaries=ctx.summaries)


def _keep_live(shards: Shards, i: int, out: pl.DataFrame) -> int:
    """Store what a stage returned for shard `i`: rows it rejected leave the live rows; return how
    many stay alive."""
    mask = _alive(out)
    if not mask.all():
        shards.add_dead(i, out.filter(~mask))
        out = out.filter(mask)
    shards.replace_live(i, out)
    return out.height


def _summary_columns(stage: registry.Stage) -> list[str]:
    """What a row stage's summary is merged from: the columns its `merge_summary` reads, and no more,
    since they are kept for every row until the last shard is done; and the row, to put them in row order."""
    return [C.ROW, *stage.summary_reads]


@dataclass
class ShardResult:
    """What a row stage did to one shard: rows in and alive after, and what its summary is merged
    from (the summary the shard left, the columns `_summary_columns` of the rows it returned; None
    without a summary)."""

    rows: int
    alive: int
    partial: dict | None
    returned: pl.DataFrame | None


def run_row_shard(stage: registry.Stage, shards: Shards, i: int, ctx: StageContext) -> ShardResult:
    """Run a row stage on shard `i`'s live rows and store what it returned."""
    live = shards.live(i)
    out = stage.run(live, ctx)
    if out.height != live.height:
        raise RuntimeError(f"stage {stage.name} changed the number of rows ({live.height} -> {out.height})")
    merge = stage.summary is not None
    partial = (ctx.summaries.get(stage.name) or {}) if merge else None
    returned = out.select(_summary_columns(stage)) if merge else None
    return ShardResult(live.height, _keep_live(shards, i, out), partial, returned)


def apply_side_outputs(ctx: StageContext, manifest: dict, artifacts: dict, summaries: dict) -> None:
    """What a row stage left in another process's context (a Ray task, a pool worker), into `ctx`; applied
    shard by shard in order, the last shard's value wins, as under stream."""
    ctx.manifest.update(manifest)
    ctx.artifacts.update(artifacts)
    ctx.summaries.update(summaries)


def merge_row_summary(stage: registry.Stage, results: list[ShardResult], ctx: StageContext) -> None:
    """Leave the stage's summary of the whole run, merged from every shard's, in ctx.summaries."""
    if stage.summary is None:
        return
    returned = pl.concat([r.returned for r in results], how="vertical_relaxed")
    if not returned.get_column(C.ROW).is_sorted():  # row_pool's slices are not in row order: sums in row order
        returned = returned.sort(C.ROW)
    summary = stage.merge_summary(returned.drop(C.ROW), [r.partial for r in results], ctx)
    if summary is not None:
        ctx.summaries[stage.name] = summary


def row_bar(stage: registry.Stage, shards: Shards, ctx: StageContext, alive_in: int):
    """The progress of a row stage: over several shards one bar counting the `alive_in` rows it is
    given (the stage's own bars hidden); on one shard the stage's own bars."""
    if len(shards) > 1:
        return ctx.progress.task(f"{stage.name} ({len(shards):,} shards)", total=alive_in)
    return _no_bar()


def run_row_stage(stage: registry.Stage, shards: Shards, ctx: StageContext, alive_in: int) -> int:
    """Run a row stage on every shard's live rows, one after another (an empty shard too: its
    columns must exist); return how many rows are alive after it."""
    many = len(shards) > 1
    results = []
    with row_bar(stage, shards, ctx, alive_in) as advance:
        for i in range(len(shards)):
            results.append(run_row_shard(stage, shards, i, _quiet(ctx) if many else ctx))
            advance(results[-1].rows)
    merge_row_summary(stage, results, ctx)
    if isinstance(shards, ParquetShards):  # what the stage's libraries freed (the tokenizer's batches)
        give_back_freed_memory()
    return sum(r.alive for r in results)


RowRunner = Callable[[registry.Stage, Shards, StageContext, int], int]


@dataclass
class StageRun:
    """What a stage did: the rows alive after it, and its seconds."""

    name: str
    alive: int
    seconds: float


# Runs consecutive row stages (a segment) over the shards; what each did, in order.
SegmentRunner = Callable[[list[registry.Stage], Shards, StageContext, int], list[StageRun]]


def stage_by_stage(run_row: RowRunner) -> SegmentRunner:
    """A segment run as each of its stages over every shard in turn, by `run_row`."""

    def run(stages: list[registry.Stage], shards: Shards, ctx: StageContext, alive: int) -> list[StageRun]:
        runs = []
        for stage in stages:
            started = time.perf_counter()
            alive = run_row(stage, shards, ctx, alive)
            runs.append(StageRun(stage.name, alive, time.perf_counter() - started))
        return runs

    return run


def chunk_map(engine: str) -> ChunkMap | None:
    """Where a global stage runs its work on each shard (near-dup's shingles and signatures) and its questions
    about pairs group pair by group pair: as Ray tasks under ray (while `row_runner` is open), else in this
    process (None)."""
    if engine != "ray":
        return None
    from curator import ray_engine

    return ray_engine.map_chunks


def row_workers(engine: str, config: Any, files: list[Path]) -> int:
    """How many processes run the row stages on this machine: under local and stream, `row_pool.pool_size`
    of the input; under ray, one (ray's tasks run where Ray puts them)."""
    if engine == "ray":
        return 1
    from curator import row_pool

    return row_pool.pool_size(config, input_bytes(files))


@contextmanager
def row_runner(engine: str, config: Any, workers: int = 1) -> Iterator[SegmentRunner]:
    """How `engine` runs the row stages over the shards, for the time the context is open: one stage after
    another here; with `workers` above 1, each segment in that many processes, on slices of local's frame or
    on stream's shards (curator/row_pool.py); under ray, each stage as Ray tasks."""
    if engine == "ray":
        from curator import ray_engine  # ray is an optional extra: imported by this engine alone

        with ray_engine.connected(config.engine.ray_address) as run:
            yield stage_by_stage(run)
        return
    if workers <= 1:
        yield stage_by_stage(run_row_stage)
        return
    from curator import row_pool

    pool = row_pool.RowPool(config, workers)
    try:
        yield pool
    finally:
        pool.close()


def _in_row_order(out: pl.DataFrame, given: pl.DataFrame, stage: registry.Stage) -> pl.DataFrame:
    """`out` in the row order of `given` (a stage may reorder rows; each shard gets its own back)."""
    if out.get_column(C.ROW).equals(given.get_column(C.ROW)):
        return out
    out = out.sort(C.ROW)
    if not out.get_column(C.ROW).equals(given.get_column(C.ROW)):
        raise RuntimeError(f"stage {stage.name} returned other rows than it was given")
    return out


def run_global_stage(
    stage: registry.Stage, shards: Shards, ctx: StageContext, alive_in: int = 0, map_chunks: ChunkMap | None = None
) -> int:
    """Run a global stage once, on the live rows of every shard narrowed to what it reads, and merge
    the verdict and the columns it writes back into each shard by row; return how many rows are alive.

    The columns a stage streams (`Stage.streams`: near-dup's text) are left out of that frame when the
    shards are files: the stage reads them shard by shard (ctx.streamed), and `map_chunks` is where it
    may run work on each (ray: tasks on the cluster)."""
    wanted = set(stage.reads) | set(BOOKKEEPING)
    if isinstance(shards, ParquetShards) and stage.streams:
        wanted -= set(stage.streams)
        scratch = shards.folder / f"{stage.name}.scratch"
        ctx = replace(ctx, streamed=StreamedColumns(len(shards), shards.live, scratch, map_chunks))
    parts = []
    for i in range(len(shards)):
        columns = shards.live_columns(i) if isinstance(shards, ParquetShards) else shards.live(i).columns
        parts.append(shards.live(i, [c for c in columns if c in wanted]))
    given = parts[0] if len(parts) == 1 else pl.concat(parts, how="vertical_relaxed")
    sizes = [p.height for p in parts]
    del parts
    out = stage.run(given, ctx)
    if out.height != given.height:
        raise RuntimeError(f"stage {stage.name} changed the number of rows ({given.height} -> {out.height})")
    out = _in_row_order(out, given, stage)
    del given
    merged = [c for c in out.columns if c in (C.REJECT_REASONS, C.REJECT_DETAILS, C.WARNINGS) or c in stage.writes]
    out = out.select(merged)
    alive, offset = 0, 0
    for i, size in enumerate(sizes):
        live = shards.live(i)
        live = live.with_columns(out.slice(offset, size).get_columns())
        offset += size
        alive += _keep_live(shards, i, live)
    if isinstance(shards, ParquetShards):  # the stage's arrays are gone: so are the pages they took
        give_back_freed_memory()
    return alive


class _no_bar:
    """A progress task that shows nothing (a stage on one shard shows its own bars)."""

    def __enter__(self):
        return lambda n=1: None

    def __exit__(self, *exc_info) -> None:
        return None


def _declared(stage: Any) -> registry.Stage:
    """The registry's entry of `stage`, given as that entry or as the stage's module."""
    if isinstance(stage, registry.Stage):
        return stage
    return registry.BY_NAME[stage.__name__.rsplit(".", 1)[-1]]


def segments(stages: Iterable[registry.Stage]) -> Iterator[list[registry.Stage]]:
    """The stages in order, consecutive row stages together, each global stage alone."""
    run: list[registry.Stage] = []
    for stage in stages:
        if stage.kind == "row":
            run.append(stage)
            continue
        if run:
            yield run
            run = []
        yield [stage]
    if run:
        yield run


def run_segments(
    shards: Shards, ctx: StageContext, stages: Iterable[registry.Stage] | None = None,
    run_rows: SegmentRunner | None = None, map_chunks: ChunkMap | None = None,
) -> tuple[list[dict], list[tuple[str, float]]]:
    """Run each stage (default: those the config keeps) over the shards, row stages by `run_rows`
    (default: one stage after another, here); return (the funnel from validate on, the time per stage,
    over all shards)."""
    stages = registry.active(ctx.config.skip_stages) if stages is None else stages
    run_rows = run_rows or stage_by_stage(run_row_stage)
    alive = sum(shards.live(i, [C.ROW]).height for i in range(len(shards)))
    funnel = [{"stage": "validate", "alive_after": alive}]
    timings = []
    planned = list(segments(map(_declared, stages)))
    for at, segment in enumerate(planned):
        if segment[0].kind == "row":
            runs = run_rows(segment, shards, ctx, alive)
            if not any(later[0].kind == "row" for later in planned[at + 1:]) and hasattr(run_rows, "finish"):
                run_rows.finish()  # a pool's workers: none is needed again, so none holds memory from here on
        else:
            started = time.perf_counter()
            alive = run_global_stage(segment[0], shards, ctx, alive, map_chunks)
            runs = [StageRun(segment[0].name, alive, time.perf_counter() - started)]
        for run in runs:
            timings.append((run.name, run.seconds))
            funnel.append({"stage": run.name, "alive_after": run.alive})
        alive = runs[-1].alive
    return funnel, timings
