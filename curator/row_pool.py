"""Row stages on every core under the local engine: a run of row stages over slices of the frame, in processes.

The local engine holds every record in one frame. When `engine.workers` is above 1 and the input is at
least `engine.pool_min_bytes`, each run of consecutive row stages (a segment) that holds a Python-bound
stage (`Stage.python_bound`: language, code_language; the segment secrets .. quality) runs on `workers`
slices of the live rows at once: one slice here, the others in worker processes started when the run
starts (so their imports overlap the reading). A row goes to the slice a hash of its last message picks,
so copies of one conversation meet in one process, where the stages' caches of distinct texts serve
them once. Only the columns the segment reads and writes travel (not the raw line). Each slice runs the
segment's stages in order exactly as one shard does under stream (`engine.run_row_shard`); the driver
puts the rows back in row order with the columns it kept, and merges each stage's summary from the
slices' parts as stream does, so the outputs are the same bytes (tests/test_row_pool.py).

A slice runs the whole segment before it reports back: a row stage reads no other stage's summary, so a
stage need not wait for the previous one's merged summary. Processes are spawned, not forked: the parent
holds Polars' and the tokenizer's thread pools, which fork can leave locked.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import traceback
from dataclasses import dataclass
from typing import Any

import polars as pl

from curator import columns as C
from curator import engine as E
from curator.errors import CurateError
from curator.stages import registry
from curator.stages.base import StageContext


@dataclass
class SliceResult:
    """What a segment did to one slice: each stage's ShardResult and seconds, the rows still alive,
    the frames of rows each stage rejected, and the side outputs the stages left."""

    results: list[E.ShardResult]
    seconds: list[float]
    live: pl.DataFrame
    dead: list[pl.DataFrame]
    side: tuple[dict, dict, dict]


def run_slice(stages: list[registry.Stage], frame: pl.DataFrame, ctx: StageContext) -> SliceResult:
    """Run `stages` in order on the live rows `frame`, as one shard."""
    shards = E.MemoryShards.holding(frame)
    results, seconds = [], []
    for stage in stages:
        started = time.perf_counter()
        results.append(E.run_row_shard(stage, shards, 0, ctx))
        seconds.append(time.perf_counter() - started)
    return SliceResult(results, seconds, shards.live(0), shards.dead(0), (ctx.manifest, ctx.artifacts, ctx.summaries))


def _serve(conn, config: dict[str, Any], cwd: str) -> None:
    """A worker: run each (stage names, frame) it is sent as a slice, until it is sent None."""
    from curator.config import CurateConfig

    os.chdir(cwd)  # relative paths of the config (a rule file, a tokenizer folder) as the driver sees them
    config_model = CurateConfig.model_validate(config)
    while True:
        job = conn.recv()
        if job is None:
            return
        names, frame = job
        ctx = StageContext(config=config_model)
        try:
            conn.send(("ok", run_slice([registry.BY_NAME[n] for n in names], frame, ctx)))
        except BaseException as exc:  # the driver raises it; the worker stays for the next job
            conn.send(("error", _sendable(exc)))


def _sendable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling (a CurateError does), else a RuntimeError carrying its traceback."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError("".join(traceback.format_exception(exc)))


class RowPool:
    """`workers - 1` worker processes; with this process, each segment runs on `workers` slices."""

    def __init__(self, config: Any, workers: int) -> None:
        spawn = mp.get_context("spawn")
        # The workers' own stages run in one process each: a pool inside a pool only adds processes.
        plain = config.model_copy(deep=True)
        plain.language.workers = 1
        plain.code_language.workers = 1
        sent = plain.model_dump(mode="json", by_alias=True)
        self.workers: list[tuple[Any, Any]] = []
        for _ in range(workers - 1):
            ours, theirs = spawn.Pipe()
            process = spawn.Process(target=_serve, args=(theirs, sent, os.getcwd()), daemon=True)
            process.start()
            theirs.close()  # so a worker that dies reads as EOF here, not as a wait forever
            self.workers.append((process, ours))

    def close(self) -> None:
        for process, conn in self.workers:
            try:
                conn.send(None)
            except OSError:
                pass
        for process, conn in self.workers:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
            conn.close()
        self.workers = []

    def run_segment(self, stages: list[registry.Stage], shards: E.Shards, ctx: StageContext, alive_in: int) -> list[E.StageRun]:
        """Run `stages` on the one shard of the local engine, slice by slice over the processes; return
        what each stage did (rows alive after it, seconds: the slowest slice's). A segment with no
        Python-bound stage (normalize alone) runs here: its stages use every core themselves, and the
        round trip of its rows would cost more than it saves."""
        if not any(stage.python_bound for stage in stages):
            return E.stage_by_stage(E.run_row_stage)(stages, shards, ctx, alive_in)
        if not isinstance(shards, E.MemoryShards) or len(shards) != 1:
            raise TypeError("the row pool works on the local engine's one shard")
        live = shards.live(0)
        narrow = Narrowed(live, stages)
        k = len(self.workers) + 1
        names = [stage.name for stage in stages]
        with ctx.progress.task(f"{names[0]} … {names[-1]} ({k} processes)", total=alive_in) as advance:
            slice_of = slice_numbers(live, k)
            for w, (process, conn) in enumerate(self.workers, start=1):
                _send(process, conn, (names, narrow.frame.filter(slice_of == w)))
            mine = run_slice(stages, narrow.frame.filter(slice_of == 0), E._quiet(ctx))
            advance(mine.results[0].rows)
            parts = [mine]
            for process, conn in self.workers:
                part = _receive(process, conn)
                _apply_side_outputs(ctx, *part.side)
                parts.append(part)
                advance(part.results[0].rows)
        del live
        # the slices are not contiguous: row order is restored (rows are numbered uniquely)
        shards.replace_live(0, narrow.widen(pl.concat([p.live for p in parts], how="vertical_relaxed").sort(C.ROW)))
        for part in parts:
            for dead in part.dead:
                shards.add_dead(0, narrow.widen(dead))
        runs = []
        for n, stage in enumerate(stages):
            results = [p.results[n] for p in parts]
            E.merge_row_summary(stage, results, ctx)
            runs.append(E.StageRun(stage.name, sum(r.alive for r in results), max(p.seconds[n] for p in parts)))
        return runs


class Narrowed:
    """The live rows narrowed to what a segment's stages read and write (and the bookkeeping columns): what
    goes to the processes. The other columns (the raw line, its base64) stay here and are put back."""

    def __init__(self, live: pl.DataFrame, stages: list[registry.Stage]) -> None:
        used = set(E.BOOKKEEPING).union(*(set(s.reads) | set(s.writes) for s in stages))
        self.columns = live.columns
        self.frame = live.select([c for c in live.columns if c in used])
        self.rest = live.select([C.ROW, *(c for c in live.columns if c not in used)])

    def widen(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame` (rows of the live rows, in row order) with the columns left here back, every column where
        one process would have put it: the live rows' columns in their order, then those the stages added."""
        if self.rest.width == 1:
            return frame
        rest = self.rest.filter(pl.col(C.ROW).is_in(frame.get_column(C.ROW).implode()))
        added = [c for c in frame.columns if c not in self.columns]
        return frame.hstack(rest.drop(C.ROW).get_columns()).select([*self.columns, *added])


def slice_numbers(live: pl.DataFrame, k: int) -> pl.Series:
    """Which of `k` slices each row goes to: by a hash of its last message, so the copies of a conversation
    collected twice, or edited, meet in one slice, where the stages' caches of distinct texts (samples,
    code blocks, token units) serve them once; and rows of every file and length spread over all slices."""
    return live.select((pl.col(C.MESSAGES).list.last().hash(seed=0) % k).alias("slice")).to_series()


def _died(process) -> CurateError:
    process.join(timeout=5)
    return CurateError(f"a row-stage worker process died (exit code {process.exitcode}); OUT is unchanged")


def _send(process, conn, job: tuple) -> None:
    try:
        conn.send(job)
    except OSError:  # its end of the pipe is closed: it is gone
        raise _died(process) from None


def _receive(process, conn) -> SliceResult:
    """A worker's answer; its error raised here; its death a CurateError."""
    try:
        status, payload = conn.recv()
    except (EOFError, OSError):
        raise _died(process) from None
    if status == "error":
        raise payload
    return payload


def _apply_side_outputs(ctx: StageContext, manifest: dict, artifacts: dict, summaries: dict) -> None:
    ctx.manifest.update(manifest)
    ctx.artifacts.update(artifacts)
    ctx.summaries.update(summaries)


def pool_size(config: Any, input_size: int) -> int:
    """How many processes run the local engine's row stages: `engine.workers` (unset: the CPUs this
    process may use) when the input is at least `engine.pool_min_bytes`, else 1."""
    wanted = config.engine.workers or len(os.sched_getaffinity(0))
    return wanted if wanted > 1 and input_size >= config.engine.pool_min_bytes else 1
