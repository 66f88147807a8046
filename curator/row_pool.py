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

import io
import multiprocessing as mp
import os
import signal
import time
import traceback
from dataclasses import dataclass, replace
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

import polars as pl

from curator import columns as C
from curator import engine as E
from curator.errors import CurateError
from curator.memory import give_back_freed_memory
from curator.stages import registry
from curator.stages.base import Progress, StageContext


def _frame_from_ipc(data: bytes) -> pl.DataFrame:
    return pl.read_ipc(io.BytesIO(data))


def _frame_as_ipc(frame: pl.DataFrame) -> tuple:
    """How a frame crosses a pipe to or from a worker: as Arrow IPC bytes, which Polars writes and reads about
    4x faster than it pickles (a slice of the 50k bench corpus: 0.06 + 0.03 s against 0.22 + 0.10 s)."""
    buffer = io.BytesIO()
    frame.write_ipc(buffer, compression="uncompressed")
    return _frame_from_ipc, (buffer.getvalue(),)


# multiprocessing's own pickler only (what its connections send), in the driver and in every worker, which
# imports this module
ForkingPickler.register(pl.DataFrame, _frame_as_ipc)


# Seconds close() waits, for all workers together, before it terminates those still busy. An idle worker
# ends at once; a busy one is only busy when the run failed, and its work is lost anyway.
CLOSE_WAIT = 2.0


@dataclass
class SliceResult:
    """What a segment did to one slice or shard: each stage's ShardResult and seconds, the rows still alive
    and the frames of rows each stage rejected (None and [] for a shard on files, which holds them), and
    the side outputs the stages left."""

    results: list[E.ShardResult]
    seconds: list[float]
    live: pl.DataFrame | None
    dead: list[pl.DataFrame]
    side: tuple[dict, dict, dict]
    n_dead: int = 0  # a shard on files: its frames of rejected rows now


@dataclass(frozen=True)
class ShardFile:
    """Shard `i` of stream's shards in `folder`, holding `n_dead` frames of rejected rows."""

    folder: str
    i: int
    n_dead: int


def run_slice(stages: list[registry.Stage], frame: pl.DataFrame, ctx: StageContext) -> SliceResult:
    """Run `stages` in order on the live rows `frame`, as one shard."""
    shards = E.MemoryShards.holding(frame)
    results, seconds = [], []
    for stage in stages:
        started = time.perf_counter()
        results.append(E.run_row_shard(stage, shards, 0, ctx))
        seconds.append(time.perf_counter() - started)
    return SliceResult(results, seconds, shards.live(0), shards.dead(0), (ctx.manifest, ctx.artifacts, ctx.summaries))


def run_shard_file(stages: list[registry.Stage], shard: ShardFile, ctx: StageContext) -> SliceResult:
    """Run `stages` on a stream shard read once: its rejected rows go to new dead files and its live rows to
    NEXT_LIVE, which the driver makes the live file once every shard is done (a failed run changed no file a
    rerun reads)."""
    disk = E.ParquetShards.attach(Path(shard.folder), [0] * shard.i + [shard.n_dead], live_out=E.NEXT_LIVE)
    done = run_slice(stages, disk.live(shard.i), ctx)
    for dead in done.dead:
        disk.add_dead(shard.i, dead)
    disk.replace_live(shard.i, done.live)
    give_back_freed_memory()  # this process's share of the run's memory is one shard at a time
    return replace(done, live=None, dead=[], n_dead=disk.n_dead(shard.i))


def run_job(names: list[str], payload: pl.DataFrame | ShardFile, config: Any) -> SliceResult:
    """One job of the pool, here or in a worker: a slice of local's frame, or one of stream's shards."""
    ctx = StageContext(config=config, progress=Progress(False))
    stages = [registry.BY_NAME[n] for n in names]
    if isinstance(payload, ShardFile):
        return run_shard_file(stages, payload, ctx)
    return run_slice(stages, payload, ctx)


def _serve(conn, config: dict[str, Any], cwd: str) -> None:
    """A worker: run each (stage names, slice or shard) it is sent, until it is sent None."""
    from curator.config import CurateConfig

    # Ctrl-C reaches the whole process group: the driver stops the run, and ends its workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.chdir(cwd)  # relative paths of the config (a rule file, a tokenizer folder) as the driver sees them
    config_model = CurateConfig.model_validate(config)
    while True:
        try:
            job = conn.recv()
        except EOFError:  # the driver is gone (killed): nothing more will come
            return
        if job is None:
            return
        try:
            try:
                answer = ("ok", run_job(*job, config_model))
            except BaseException as exc:  # the driver raises it; the worker stays for the next job
                answer = ("error", _sendable(exc))
            conn.send(answer)
        except (BrokenPipeError, EOFError, ConnectionResetError):  # the driver is gone: no one to answer
            return


def _sendable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling (a CurateError does), else a RuntimeError that says what it was first
    (the CLI shows an error's first line) and carries its traceback after."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc} (in a row-stage worker)\n" + "".join(traceback.format_exception(exc)))


class RowPool:
    """`workers - 1` worker processes; with this process, a segment runs in `workers` places at once.

    Called as a SegmentRunner (`engine.run_segments`); `finish()` ends the workers once no row stage is
    left, so they hold no memory while the global stages run."""

    def __init__(self, config: Any, workers: int) -> None:
        spawn = mp.get_context("spawn")
        # The workers' own stages run in one process each: a pool inside a pool only adds processes.
        self.config = config.model_copy(deep=True)
        self.config.language.workers = 1
        self.config.code_language.workers = 1
        sent = self.config.model_dump(mode="json", by_alias=True)
        self.workers: list[tuple[Any, Any]] = []
        for _ in range(workers - 1):
            ours, theirs = spawn.Pipe()
            process = spawn.Process(target=_serve, args=(theirs, sent, os.getcwd()), daemon=True)
            process.start()
            theirs.close()  # so a worker that dies reads as EOF here, not as a wait forever
            self.workers.append((process, ours))

    def finish(self) -> None:
        """End the workers (they are not needed again); later segments run here."""
        self.close()

    def close(self) -> None:
        """Ask every worker to end; one still busy after CLOSE_WAIT seconds (the run failed while it worked,
        and it may be blocked sending an answer no one reads) is terminated."""
        for process, conn in self.workers:
            try:
                conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + CLOSE_WAIT
        for process, conn in self.workers:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
            conn.close()
        self.workers = []

    def __call__(self, stages: list[registry.Stage], shards: E.Shards, ctx: StageContext, alive_in: int) -> list[E.StageRun]:
        """Run a segment: under local on slices of the one shard, under stream shard by shard, over the
        processes; return what each stage did (rows alive after it; seconds: the segment's wall time shared
        among its stages as their time in the processes). A segment with no Python-bound stage (normalize
        alone) runs here stage by stage: its stages use every core themselves, and the round trip of its rows
        would cost more than it saves."""
        if not self.workers or not any(stage.python_bound for stage in stages):
            return E.stage_by_stage(E.run_row_stage)(stages, shards, ctx, alive_in)
        started = time.perf_counter()
        names = [stage.name for stage in stages]
        label = f"{names[0]} … {names[-1]} ({len(self.workers) + 1} processes)"
        with ctx.progress.task(label, total=alive_in) as advance:
            if isinstance(shards, E.ParquetShards):
                parts = self._run_shards(names, shards, advance)
            else:
                parts = self._run_slices(names, stages, shards, advance)
        for part in parts:  # in order: what stream leaves, the last shard's
            E.apply_side_outputs(ctx, *part.side)
        wall = time.perf_counter() - started
        spent = [sum(p.seconds[n] for p in parts) for n in range(len(stages))]
        runs = []
        for n, stage in enumerate(stages):
            results = [p.results[n] for p in parts]
            E.merge_row_summary(stage, results, ctx)
            share = spent[n] / sum(spent) if sum(spent) else 1 / len(stages)
            runs.append(E.StageRun(stage.name, sum(r.alive for r in results), wall * share))
        return runs

    def _run_slices(self, names: list[str], stages: list[registry.Stage], shards: E.Shards, advance) -> list[SliceResult]:
        """The local engine's one shard, cut into one slice per process, narrowed, and put back together."""
        if not isinstance(shards, E.MemoryShards) or len(shards) != 1:
            raise TypeError("the row pool works on the local engine's one shard or on stream's shards")
        live = shards.live(0)
        narrow = Narrowed(live, stages)
        slice_of = slice_numbers(live, len(self.workers) + 1)
        del live
        jobs = [(names, narrow.frame.filter(slice_of == k)) for k in range(len(self.workers) + 1)]
        parts = self._run_jobs(jobs, advance)
        # the slices are not contiguous: row order is restored (rows are numbered uniquely)
        shards.replace_live(0, narrow.widen(pl.concat([p.live for p in parts], how="vertical_relaxed").sort(C.ROW)))
        for part in parts:
            for dead in part.dead:
                shards.add_dead(0, narrow.widen(dead))
        return parts

    def _run_shards(self, names: list[str], shards: E.ParquetShards, advance) -> list[SliceResult]:
        """Stream's shards, each read once for the whole segment by one process, then committed in order."""
        jobs = [(names, ShardFile(str(shards.folder), i, shards.n_dead(i))) for i in range(len(shards))]
        parts = self._run_jobs(jobs, advance)
        for i, part in enumerate(parts):
            shards.commit_live(i)
            shards.set_n_dead(i, part.n_dead)
        return parts

    def _run_jobs(self, jobs: list[tuple], advance) -> list[SliceResult]:
        """Every job's result, in order: a job to each idle worker, the next to this process, until none is left."""
        from multiprocessing.connection import wait

        results: list[SliceResult | None] = [None] * len(jobs)
        todo, busy = list(range(len(jobs)))[::-1], {}  # busy: worker -> its job

        def take(w: int) -> None:
            process, conn = self.workers[w]
            k = busy.pop(w)
            results[k] = _receive(process, conn)
            advance(results[k].results[0].rows)

        def dispatch() -> None:
            for w, (process, conn) in enumerate(self.workers):
                if w not in busy and todo:
                    busy[w] = todo.pop()
                    _send(process, conn, jobs[busy[w]])

        dispatch()
        while todo:
            k = todo.pop()
            results[k] = run_job(*jobs[k], self.config)
            advance(results[k].results[0].rows)
            for w in [w for w in busy if self.workers[w][1].poll()]:
                take(w)
            dispatch()
        while busy:
            ready = wait([self.workers[w][1] for w in busy] + [self.workers[w][0].sentinel for w in busy])
            for w in [w for w in busy if self.workers[w][1] in ready or self.workers[w][0].sentinel in ready]:
                take(w)
        return results  # type: ignore[return-value]


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


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the system has one, as on Linux)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def pool_size(config: Any, input_size: int) -> int:
    """How many processes run the row stages under local and stream: `engine.workers` (unset: the CPUs
    this process may use) when the input is at least `engine.pool_min_bytes`, else 1."""
    wanted = config.engine.workers or usable_cpus()
    return wanted if wanted > 1 and input_size >= config.engine.pool_min_bytes else 1
