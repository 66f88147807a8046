"""The local engine's row stages over several processes (curator/row_pool.py): the same bytes as one.

The pool's slices are drawn by a hash of the last message, so each holds rows of every input file;
rejects land in every slice, and near-dup (after the pool) sees rows whose columns came from different
processes and the raw columns the driver kept.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import polars as pl
import pytest

from curator import columns as C
from curator import engine as E
from curator import row_pool
from curator.config import load_config
from curator.errors import CurateError
from curator.pipeline import run
from curator.stages import registry
from curator.stages.base import StageContext
from tests.conftest import CHAT_DATA, NATIVE_DATA, ROOT
from tests.test_engine import COMPARED, comparable, manifest

SHARED_INPUTS = (
    CHAT_DATA / "llamafactory_glaive_toolcall_en_demo.jsonl",  # tool calls
    CHAT_DATA / "exercism_rust.chat.jsonl",  # code
    NATIVE_DATA / "alpaca_zh_sample.json",  # Alpaca, Chinese
)


@pytest.fixture(scope="module")
def mixed_input(tmp_path_factory) -> Path:
    """The golden sample (rejects of every kind, duplicates) and shared files of other shapes, in one folder."""
    raw = tmp_path_factory.mktemp("pool") / "raw"
    shutil.copytree(ROOT / "data_samples" / "raw", raw)
    for path in SHARED_INPUTS:
        if path.exists():
            shutil.copy(path, raw / path.name)
    return raw


@pytest.fixture(scope="module")
def pool_runs(mixed_input, tmp_path_factory) -> dict[int, Path]:
    tmp = tmp_path_factory.mktemp("pool-out")
    outs = {}
    for workers in (1, 2, 3):
        outs[workers] = tmp / f"w{workers}"
        cfg = load_config(None, ["engine.name=local", f"engine.workers={workers}", "engine.pool_min_bytes=0",
                                 "gates.min_examples=null"])
        run(mixed_input, outs[workers], cfg)
    return outs


@pytest.fixture(scope="module")
def stream_pool_runs(mixed_input, tmp_path_factory) -> dict[int, Path]:
    """Stream with small shards (19 of them) over 1 and 2 processes."""
    tmp = tmp_path_factory.mktemp("stream-pool-out")
    outs = {}
    for workers in (1, 2):
        outs[workers] = tmp / f"w{workers}"
        cfg = load_config(None, ["engine.name=stream", "engine.batch_rows=150", f"engine.workers={workers}",
                                 "engine.pool_min_bytes=0", "gates.min_examples=null"])
        run(mixed_input, outs[workers], cfg)
    return outs


@pytest.mark.parametrize("workers", [1, 2])
def test_stream_over_processes_writes_the_bytes_local_writes(pool_runs, stream_pool_runs, workers):
    local, streamed = pool_runs[1], stream_pool_runs[workers]
    for name in COMPARED:
        assert (local / name).read_bytes() == (streamed / name).read_bytes(), name
    assert comparable(manifest(stream_pool_runs[1])) == comparable(manifest(stream_pool_runs[2]))
    engine = manifest(streamed)["engine"]
    assert (engine["name"], engine["workers"], engine["shards"]) == ("stream", workers, 19)


@pytest.mark.parametrize("workers", [2, 3])
def test_the_pool_writes_the_bytes_one_process_writes(pool_runs, workers):
    one, pooled = pool_runs[1], pool_runs[workers]
    for name in COMPARED:
        assert (one / name).read_bytes() == (pooled / name).read_bytes(), name
    assert comparable(manifest(one)) == comparable(manifest(pooled))
    assert manifest(pooled)["engine"]["workers"] == workers
    assert manifest(one)["engine"]["workers"] == 1


def test_the_pooled_runs_reject_and_keep_rows_of_every_kind(pool_runs):
    """The input is one that exercises the merge: rows rejected by several row stages, kept rows of every file."""
    rejects = [json.loads(line) for line in (pool_runs[2] / "rejects.jsonl").open(encoding="utf-8")]
    stages = {reason.split(".")[0] for r in rejects for reason in r["reasons"]}
    assert {"tokens", "quality", "dup"} <= stages, stages
    annotations = pl.read_parquet(pool_runs[2] / "annotations.parquet")
    assert annotations.get_column(C.SECRET_FINDINGS).list.len().sum() > 0  # redacted, kept
    kept = annotations.filter(pl.col(C.SPLIT).is_not_null())
    assert kept.get_column(C.SOURCE_FILE).n_unique() >= 5


def _frame(n: int) -> pl.DataFrame:
    """`n` valid conversations, as validate builds them."""
    from curator.io.readers import RawLine
    from curator.stages import validate

    lines = []
    for i in range(n):
        record = {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]}
        lines.append(RawLine("x.jsonl", i + 1, json.dumps(record), obj=record, parsed=True))
    return validate.build_frame(lines, StageContext(config=load_config(None, [])))


def test_a_stage_error_in_a_worker_is_raised_in_the_driver():
    pool = row_pool.RowPool(load_config(None, []), 2)
    try:
        process, conn = pool.workers[0]
        conn.send((["no_such_stage"], pl.DataFrame({C.ROW: [0]})))
        with pytest.raises(KeyError, match="no_such_stage"):
            row_pool._receive(process, conn)
        conn.send((["normalize"], _frame(3)))  # the worker stays for the next job
        assert row_pool._receive(process, conn).live.height == 3
    finally:
        pool.close()


def test_a_worker_that_dies_fails_the_run_with_a_clear_error():
    cfg = load_config(None, [])
    pool = row_pool.RowPool(cfg, 2)
    try:
        process = pool.workers[0][0]
        os.kill(process.pid, 9)
        process.join(timeout=30)
        shards = E.MemoryShards()
        shards.add(_frame(10))
        with pytest.raises(CurateError, match=r"worker process died \(exit code -9\)"):
            pool([registry.BY_NAME["language"]], shards, StageContext(config=cfg), 10)
    finally:
        pool.close()


@pytest.mark.parametrize("engine", ["local", "stream"])
def test_a_killed_worker_leaves_out_as_it_was(mixed_input, tmp_path, monkeypatch, engine):
    """The whole run fails, OUT keeps the previous run's files, and no shard or staging folder is left."""
    out = tmp_path / "out"
    cfg = load_config(None, ["engine.name=local", "engine.workers=1", "skip_stages=[dedup_minhash]", "gates.min_examples=null"])
    run(mixed_input, out, cfg)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    real_segment = row_pool.RowPool.__call__

    def kill_then_run(self, *args):
        worker = self.workers[0][0]
        if worker.is_alive():
            os.kill(worker.pid, 9)
            worker.join(timeout=30)
        return real_segment(self, *args)

    monkeypatch.setattr(row_pool.RowPool, "__call__", kill_then_run)
    pooled = load_config(None, [f"engine.name={engine}", "engine.batch_rows=300", "engine.workers=2",
                                "engine.pool_min_bytes=0", "skip_stages=[dedup_minhash]", "gates.min_examples=null"])
    with pytest.raises(CurateError, match="worker process died"):
        run(mixed_input, out, pooled, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # no staging folder left beside it


@pytest.mark.parametrize(
    "workers, min_bytes, size, expected",
    [(None, 100, 100, len(os.sched_getaffinity(0))), (3, 100, 100, 3), (3, 100, 99, 1), (1, 0, 10**9, 1)],
)
def test_the_pool_size_follows_workers_and_the_input_size(workers, min_bytes, size, expected):
    over = [f"engine.pool_min_bytes={min_bytes}"] + ([f"engine.workers={workers}"] if workers else [])
    assert row_pool.pool_size(load_config(None, over), size) == expected


def test_a_segment_without_a_python_bound_stage_runs_in_the_driver():
    """normalize alone (before dedup_exact) uses Polars' threads: sending its rows away would cost more."""
    cfg = load_config(None, [])
    pool = row_pool.RowPool(cfg, 2)
    try:
        os.kill(pool.workers[0][0].pid, 9)  # a segment that went to the worker would fail
        pool.workers[0][0].join(timeout=30)
        shards = E.MemoryShards()
        shards.add(_frame(10))
        runs = pool([registry.BY_NAME["normalize"]], shards, StageContext(config=cfg), 10)
        assert [(r.name, r.alive) for r in runs] == [("normalize", 10)]
        assert C.CONTENT_HASH in shards.live(0).columns
    finally:
        pool.close()


def test_the_rows_go_to_slices_by_their_last_message():
    """Copies of a conversation that differ before the last message meet in one slice."""
    frame = pl.DataFrame({C.MESSAGES: [
        [{"role": "user", "content": f"lead-in {i}: sort a list"}, {"role": "assistant", "content": f"answer {i % 7}"}]
        for i in range(70)
    ]})
    slices = row_pool.slice_numbers(frame, 3)
    by_answer = {}
    for i, s in enumerate(slices.to_list()):
        by_answer.setdefault(i % 7, set()).add(s)
    assert all(len(v) == 1 for v in by_answer.values())
    assert set(slices.to_list()) <= {0, 1, 2}


def test_the_cpus_are_counted_without_an_affinity_call_where_the_system_has_none(monkeypatch):
    """macOS has no os.sched_getaffinity."""
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert row_pool.usable_cpus() == 7


def test_ray_starts_no_pool(tmp_path):
    cfg = load_config(None, ["engine.workers=2", "engine.pool_min_bytes=0"])
    path = tmp_path / "a.jsonl"
    path.write_text("{}\n")
    assert [E.row_workers(e, cfg, [path]) for e in ("local", "stream", "ray")] == [2, 2, 1]


def test_the_workers_end_before_the_global_stages_that_follow_the_last_row_stage(mixed_input, tmp_path, monkeypatch):
    """So that near-dup, which holds the run's largest arrays, has the memory the workers held."""
    events = []
    real_finish = row_pool.RowPool.finish

    def finish(self):
        events.append(("finish", len(self.workers)))
        real_finish(self)

    from curator.stages import dedup_minhash

    real_near_dup = dedup_minhash.run
    monkeypatch.setattr(row_pool.RowPool, "finish", finish)
    monkeypatch.setattr(dedup_minhash, "run", lambda df, ctx: events.append(("dedup_minhash",)) or real_near_dup(df, ctx))
    cfg = load_config(None, ["engine.name=local", "engine.workers=2", "engine.pool_min_bytes=0", "gates.min_examples=null"])
    run(mixed_input, tmp_path / "out", cfg)
    assert events == [("finish", 1), ("dedup_minhash",)]


def test_closing_ends_a_busy_worker_within_close_wait(tmp_path):
    """When the run fails while a worker works (here: blocked reading a shard that never comes), closing
    does not wait for it: it is terminated after CLOSE_WAIT seconds."""
    import time

    os.mkfifo(tmp_path / "000000.live.parquet")  # opening it blocks until a writer comes: never
    pool = row_pool.RowPool(load_config(None, []), 2)
    process, conn = pool.workers[0]
    conn.send((["language"], row_pool.ShardFile(str(tmp_path), 0, 0)))
    time.sleep(1.0)
    started = time.monotonic()
    pool.close()
    assert time.monotonic() - started < row_pool.CLOSE_WAIT + 5
    assert not process.is_alive()


class _TwoArguments(Exception):
    def __init__(self, a, b):
        super().__init__(a)


def test_an_error_that_cannot_travel_is_sent_with_its_name_and_message_first():
    sent = row_pool._sendable(_TwoArguments("the tokenizer folder is empty", 2))
    assert isinstance(sent, RuntimeError)
    assert str(sent).splitlines()[0] == "_TwoArguments: the tokenizer folder is empty (in a row-stage worker)"
    assert "Traceback" in str(sent) or "_TwoArguments" in str(sent).splitlines()[-1]


def test_the_number_of_workers_is_bounded():
    with pytest.raises(Exception, match="256"):
        load_config(None, ["engine.workers=100000"])


def test_frames_cross_the_pipe_as_arrow_ipc_and_come_back_the_same(pool_runs):
    import pickle
    from multiprocessing.reduction import ForkingPickler

    annotations = pl.read_parquet(pool_runs[2] / "annotations.parquet")  # lists of structs, structs, nulls
    assert {"quality_flags", "code_blocks"} <= set(annotations.columns)
    for frame in (annotations, annotations.head(0), _frame(3)):
        data = bytes(ForkingPickler.dumps(frame))
        assert b"ARROW1" in data[:200]
        back = pickle.loads(data)
        assert back.schema == frame.schema and back.equals(frame)
