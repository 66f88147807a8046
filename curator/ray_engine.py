"""The ray engine: stream's shards, each row stage run on them in parallel as Ray tasks.

A task gets a stage, the run's config (as plain data, rebuilt in the task) and one shard's path in
OUT's staging folder; it runs the stage on the shard's live rows exactly as stream does
(`engine.run_row_shard`), writes the shard's rejected rows and its new live rows beside its live
file (the driver puts them in its place once every task is done), and returns what the driver
merges the stage's summary from. The driver applies each shard's side outputs in shard order and merges the summary
as stream does, so the outputs are the same bytes. Global stages run on the driver (curator/engine.py).

Tasks over shard files rather than Ray Data's `map_batches`: the shard files stay the one copy of
the records (nothing in the object store but a shard's narrow result), shard boundaries and the
frames of rejected rows are the ones stream writes, and a task that dies is simply run again on its
shard: it changed no file the rerun reads. This module is imported only by the ray engine.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import ray

from curator import engine as E
from curator.stages import registry
from curator.stages.base import StageContext

# A worker that dies (killed, out of memory, its node lost) is run again on the same shard: a task
# writes only files the driver has not yet taken, so a rerun sees the shard as it was and writes them anew.
MAX_RETRIES = 3


@contextmanager
def connected(address: str | None) -> Iterator[E.RowRunner]:
    """Yield the ray engine's row runner, connected to the Ray cluster at `address` (else
    RAY_ADDRESS; else a local Ray with this machine's CPUs, stopped at the end). A Ray this
    process already started is used as it is."""
    if ray.is_initialized():
        yield run_row_stage
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    ray.init(address=address, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        yield run_row_stage
    finally:
        ray.shutdown()


def _shard_task(stage: registry.Stage, config: dict[str, Any], where: tuple[str, str], n_dead: list[int], i: int) -> tuple:
    """In a Ray worker: run `stage` on shard `i` of the shards in `where` (the driver's working
    folder, the shard folder); return (what it did, the frames of rejected rows shard `i` now has,
    its side outputs: manifest, artifacts, summaries)."""
    from curator.config import CurateConfig

    cwd, folder = where
    with _working_folder(cwd):
        ctx = StageContext(config=CurateConfig.model_validate(config))
        shards = E.ParquetShards.attach(Path(folder), n_dead, live_out=E.NEXT_LIVE)
        result = E.run_row_shard(stage, shards, i, ctx)
    return result, shards.n_dead(i), (ctx.manifest, ctx.artifacts, ctx.summaries)


@contextmanager
def _working_folder(path: str) -> Iterator[None]:
    """Work in the driver's working folder: relative paths of the config (a rule file, a tokenizer
    folder) and of OUT are found, and recorded, as under the driver."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def run_row_stage(stage: registry.Stage, shards: E.Shards, ctx: StageContext, alive_in: int) -> int:
    """Run a row stage on every shard as one Ray task each; return how many rows are alive after it."""
    if not isinstance(shards, E.ParquetShards):
        raise TypeError("the ray engine works on Parquet shards")
    task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False, num_cpus=1)(_shard_task)
    config = ray.put(ctx.config.model_dump(mode="json", by_alias=True))
    n_dead = [shards.n_dead(i) for i in range(len(shards))]
    where = (os.getcwd(), str(shards.folder))
    refs = [task.remote(stage, config, where, n_dead, i) for i in range(len(shards))]
    done = _gather(refs, E.row_bar(stage, shards, ctx, alive_in))
    results = []
    for i, (result, dead, side) in enumerate(done):
        shards.commit_live(i)
        shards.set_n_dead(i, dead)
        E.apply_side_outputs(ctx, *side)  # in shard order: what stream leaves, the last shard's
        results.append(result)
    E.merge_row_summary(stage, results, ctx)
    return sum(r.alive for r in results)


def _chunk_task(fn: Callable[[int], Any], cwd: str, k: int) -> Any:
    """In a Ray worker: fn(k), in the driver's working folder."""
    with _working_folder(cwd):
        return fn(k)


def map_chunks(fn: Callable[[int], Any], n: int) -> list[Any]:
    """fn(0) .. fn(n - 1) as one Ray task each (a global stage's work on each shard: near-dup's shingles and
    signatures, which the task writes into the stage's scratch folder on the shared filesystem); their results
    in order. A task whose worker dies is run again; `fn` writes files under fresh names, so a rerun never
    reads what a dead attempt left."""
    task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False, num_cpus=1)(_chunk_task)
    fn_ref, cwd = ray.put(fn), os.getcwd()
    refs = [task.remote(fn_ref, cwd, k) for k in range(n)]
    return _gather(refs, E._no_bar(), rows=lambda result: 0)


def _gather(refs: list, bar, rows: Callable[[Any], int] = lambda result: result[0].rows) -> list:
    """The results of `refs` in their order, the bar advanced as each task ends. When one fails,
    the others are cancelled and waited for (none may write into a staging folder being removed)
    and its own exception is raised."""
    by_ref = {ref: k for k, ref in enumerate(refs)}
    results: list = [None] * len(refs)
    pending = list(refs)
    try:
        with bar as advance:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                k = by_ref[ready[0]]
                results[k] = ray.get(ready[0])
                advance(rows(results[k]))
    except BaseException as exc:
        _cancel(pending)
        if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, Exception):
            raise exc.cause from exc  # the stage's own error, as under stream
        raise
    return results


def _cancel(refs: list) -> None:
    """Stop the tasks of `refs` and wait until none runs."""
    for ref in refs:
        ray.cancel(ref, force=True)
    for ref in refs:
        try:
            ray.get(ref)
        except Exception:  # cancelled, or failed on its own: either way it no longer runs
            pass
