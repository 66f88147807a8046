"""The ray engine (curator/ray_engine.py): the bytes local writes, a dead worker's shard run again,
no shard left behind, and Ray imported by that engine alone.

One local Ray of 2 CPUs serves the module. Its workers import curator (and this module, for the
stages below) from this checkout, through PYTHONPATH.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from curator import engine as E
from curator.cli import cli
from curator.config import load_config
from curator.errors import CurateError
from curator.pipeline import run
from curator.stages import registry
from tests.conftest import CHAT_DATA, NATIVE_DATA, ROOT, chat, write_lines
from tests.test_engine import _names_beside, assert_same_outputs, manifest, run_both

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'curator[ray]')")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def golden_runs(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("engines")
    cwd = os.getcwd()
    os.chdir(ROOT)  # source_file paths are relative, as in the golden run
    try:
        return run_both("data_samples/raw", tmp, 37, engines=("local", "stream", "ray"))
    finally:
        os.chdir(cwd)


def test_the_golden_sample_gives_the_same_bytes_under_ray(golden_runs):
    assert_same_outputs(golden_runs)
    assert manifest(golden_runs["ray"])["engine"] == {"name": "ray", "chosen_by": "engine.name", "batch_rows": 37, "shards": 9, "workers": 1}


def test_the_ray_manifest_is_the_stream_manifest(golden_runs):
    ray_run, stream = manifest(golden_runs["ray"]), manifest(golden_runs["stream"])
    for m in (ray_run, stream):
        m.pop("engine")
    assert ray_run == stream  # per-shard counts too: the shards are stream's


@pytest.mark.parametrize(
    "path, batch_rows",
    [
        (NATIVE_DATA / "alpaca_zh_sample.json", 400),  # Alpaca, Chinese
        (CHAT_DATA / "llamafactory_glaive_toolcall_en_demo.jsonl", 120),  # tool calls
    ],
    ids=lambda p: p.name if isinstance(p, Path) else str(p),
)
def test_shared_files_give_the_same_bytes_under_ray(tmp_path, path, batch_rows):
    if not path.exists():
        pytest.skip(f"{path} is not available")
    outs = run_both(path, tmp_path, batch_rows, "gates.min_examples=null", engines=("local", "ray"))
    assert_same_outputs(outs)
    assert manifest(outs["ray"])["engine"]["shards"] >= 2


def test_relative_paths_are_found_by_the_workers_as_by_the_driver(tmp_path, monkeypatch):
    """OUT, and the default rule file (found from the source tree, not the working folder: the
    manifest records where), are taken from the driver's working folder, not the workers'."""
    _twelve(tmp_path)
    monkeypatch.chdir(tmp_path)  # source_file is relative under both engines
    run(Path("raw"), Path("local"), load_config(None, ["engine.name=local", *QUICK]))
    run(Path("raw"), Path("ray"), load_config(None, ["engine.name=ray", *QUICK]))
    assert_same_outputs({"local": tmp_path / "local", "ray": tmp_path / "ray"})
    assert manifest(tmp_path / "ray")["stages"]["quality"]["rules_file"] == str(ROOT / "rules" / "default.yaml")


# --- stages that misbehave in a Ray worker ----------------------------------------------------------------
# A monkeypatch reaches only this process; these stages travel to the workers with the task, and
# leave in `log` the first row of each shard they are called on.


@dataclass(frozen=True)
class DiesOnce(registry.Stage):
    """A row stage whose worker process dies the first time it is called on the shard starting at
    `row`; the retry finds `marker` and runs the stage."""

    log: str = ""
    marker: str = ""
    row: int = 0

    def run(self, df, ctx):
        first = _note(self.log, df)
        if first == self.row and not os.path.exists(self.marker):
            Path(self.marker).write_text("died once")
            os._exit(1)
        return super().run(df, ctx)


@dataclass(frozen=True)
class Raises(registry.Stage):
    """A row stage that raises on the shard starting at `row`."""

    log: str = ""
    row: int = 0

    def run(self, df, ctx):
        if _note(self.log, df) == self.row:
            raise RuntimeError("stage failed")
        return super().run(df, ctx)


def _note(log: str, df) -> int | None:
    first = df.get_column("row")[0] if df.height else None
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"{first}\n")
    return first


def _replacing(monkeypatch, name: str, stage: registry.Stage) -> None:
    """Run `stage` in place of the stage `name`."""
    real = registry.active
    monkeypatch.setattr(registry, "active", lambda skip: [stage if s.name == name else s for s in real(skip)])


def _calls(log: Path) -> list[int]:
    return sorted(int(x) for x in log.read_text().split())


def _twelve(tmp_path: Path) -> Path:
    lines = [chat(("user", f"q{i} of the set"), ("assistant", f"a{i} of the set")) for i in range(12)]
    return write_lines(tmp_path / "raw" / "a.jsonl", lines).parent


QUICK = ["engine.batch_rows=4", "gates.min_examples=null"]


def test_a_worker_that_dies_is_run_again_and_the_output_is_unchanged(tmp_path, monkeypatch):
    raw = _twelve(tmp_path)
    run(raw, tmp_path / "local", load_config(None, ["engine.name=local", *QUICK]))
    log, marker = tmp_path / "calls.log", tmp_path / "died"
    tokens = registry.BY_NAME["tokens"]
    _replacing(monkeypatch, "tokens", DiesOnce(**vars(tokens), log=str(log), marker=str(marker), row=4))
    run(raw, tmp_path / "ray", load_config(None, ["engine.name=ray", *QUICK]))
    assert marker.read_text() == "died once"
    assert _calls(log) == [0, 4, 4, 8]  # the second shard twice: once dying, once again
    assert_same_outputs({"local": tmp_path / "local", "ray": tmp_path / "ray"})


@dataclass(frozen=True)
class ChunkWorkDiesOnce:
    """Near-dup's work on chunk k (`fn`), noting in `log` which work ran on which chunk in which process; the
    worker running the shingles of chunk `chunk` dies the first time."""

    fn: object
    log: str
    marker: str
    chunk: int

    def __call__(self, k: int):
        work = self.fn.func.__name__
        with open(self.log, "a", encoding="utf-8") as f:
            f.write(f"{work} {k} {os.getpid()}\n")
        if work == "shingle_and_sign" and k == self.chunk and not os.path.exists(self.marker):
            Path(self.marker).write_text("died once")
            os._exit(1)
        return self.fn(k)


def test_near_dup_shingles_each_shard_in_a_ray_task_and_a_dead_one_is_run_again(tmp_path, monkeypatch):
    from curator import ray_engine

    raw = _near_dups(tmp_path)
    run(raw, tmp_path / "local", load_config(None, ["engine.name=local", *QUICK]))
    log, marker = tmp_path / "chunks.log", tmp_path / "died"

    def dying_map(engine):
        return lambda fn, n: ray_engine.map_chunks(ChunkWorkDiesOnce(fn, str(log), str(marker), 1), n)

    monkeypatch.setattr(E, "chunk_map", dying_map)
    run(raw, tmp_path / "ray", load_config(None, ["engine.name=ray", *QUICK]))
    calls = [line.split() for line in log.read_text().splitlines()]
    assert sorted((work, int(k)) for work, k, _ in calls) == sorted(
        [("_prompt_counts", k) for k in range(4)] + [("shingle_and_sign", k) for k in (0, 1, 1, 2, 3)])
    assert str(os.getpid()) not in {pid for _, _, pid in calls}  # in Ray's workers, not in the driver
    assert marker.read_text() == "died once"
    assert_same_outputs({"local": tmp_path / "local", "ray": tmp_path / "ray"})
    dups = [line for line in (tmp_path / "ray" / "rejects.jsonl").read_text().splitlines() if "dup.near" in line]
    assert len(dups) == 3  # the copies in shards 1-3 of the record in shard 0


def test_near_dup_answers_pairs_group_pair_by_group_pair_in_ray_tasks(tmp_path, monkeypatch):
    """With groups of one record (BLOCK_BYTES 1, set in the driver, which cuts the groups), every pair question
    on files becomes tasks, one per group pair; the decisions are local's."""
    from curator import chunked, ray_engine

    raw = _near_dups(tmp_path)
    run(raw, tmp_path / "local", load_config(None, ["engine.name=local", *QUICK]))
    log = tmp_path / "chunks.log"

    def logging_map(engine):
        return lambda fn, n: ray_engine.map_chunks(ChunkWorkDiesOnce(fn, str(log), str(tmp_path / "none"), -1), n)

    monkeypatch.setattr(E, "chunk_map", logging_map)
    monkeypatch.setattr(chunked, "BLOCK_BYTES", 1)
    run(raw, tmp_path / "ray", load_config(None, ["engine.name=ray", *QUICK]))
    calls = [line.split() for line in log.read_text().splitlines()]
    pair_tasks = [pid for work, _, pid in calls if work == "_answer_group_pair"]
    # the copies' pairs, asked about in turn (agreements, Jaccard, answers, the kept copy, the estimate): one
    # task per group pair of each question that spans more than one
    assert len(pair_tasks) == 39
    assert str(os.getpid()) not in pair_tasks  # in Ray's workers, not in the driver
    assert_same_outputs({"local": tmp_path / "local", "ray": tmp_path / "ray"})


def _near_dups(tmp_path: Path) -> Path:
    """16 records in 4 shards of 4: one long answer in shard 0, and an edited copy of it in each later shard."""
    answer = " ".join(f"word{i}" for i in range(80))
    lines = []
    for i in range(16):
        if i % 4 == 1:
            text = answer if i == 1 else answer.replace(f" word{i} ", " changed ")
            lines.append(chat(("user", "explain the list"), ("assistant", text)))
        else:
            lines.append(chat(("user", f"q{i} of the set"), ("assistant", f"a{i} of the set")))
    return write_lines(tmp_path / "raw" / "a.jsonl", lines).parent


@dataclass(frozen=True)
class WaitsToBeKilled(registry.Stage):
    """A row stage that, the first time it is called on the shard starting at `row`, leaves its worker's pid
    in `pid_file` and waits (to be killed from outside); called again, it runs."""

    log: str = ""
    pid_file: str = ""
    row: int = 0

    def run(self, df, ctx):
        first = _note(self.log, df)
        if first == self.row and not os.path.exists(self.pid_file):
            Path(self.pid_file).write_text(str(os.getpid()))
            time.sleep(120)
        return super().run(df, ctx)


def test_a_worker_killed_by_its_pid_mid_run_is_run_again_and_the_output_is_unchanged(tmp_path, monkeypatch):
    raw = _twelve(tmp_path)
    run(raw, tmp_path / "local", load_config(None, ["engine.name=local", *QUICK]))
    log, pid_file = tmp_path / "calls.log", tmp_path / "worker.pid"
    tokens = registry.BY_NAME["tokens"]
    _replacing(monkeypatch, "tokens", WaitsToBeKilled(**vars(tokens), log=str(log), pid_file=str(pid_file), row=4))
    killed = []

    def kill_the_worker() -> None:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the worker never started the stage"
            time.sleep(0.05)
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_the_worker)
    killer.start()
    run(raw, tmp_path / "ray", load_config(None, ["engine.name=ray", *QUICK]))
    killer.join()
    assert killed and killed[0] != os.getpid()
    assert _calls(log) == [0, 4, 4, 8]  # the killed worker's shard, run again
    assert_same_outputs({"local": tmp_path / "local", "ray": tmp_path / "ray"})


def test_a_stage_that_raises_fails_the_run_and_leaves_no_shard(tmp_path, monkeypatch):
    raw, out = _twelve(tmp_path), tmp_path / "out"
    run(raw, out, load_config(None, ["engine.name=ray", *QUICK]))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    log = tmp_path / "calls.log"
    tokens = registry.BY_NAME["tokens"]
    _replacing(monkeypatch, "tokens", Raises(**vars(tokens), log=str(log), row=4))
    with pytest.raises(RuntimeError, match="^stage failed$"):
        run(raw, out, load_config(None, ["engine.name=ray", *QUICK]), force=True)
    assert _calls(log).count(4) == 1  # an error of the stage is not retried
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _names_beside(out) == []  # no staging folder, no shard, no lock


def test_a_global_stage_that_fails_under_ray_leaves_no_shard(tmp_path, monkeypatch):
    raw, out = _twelve(tmp_path), tmp_path / "out"
    module = registry.BY_NAME["dedup_minhash"].implementation()

    def fails(df, ctx):
        assert list(out.parent.glob(f".{out.name}.tmp-*/{E.SHARD_FOLDER}/*.live.parquet"))
        raise RuntimeError("stage failed")

    monkeypatch.setattr(module, "run", fails)  # global stages run in this process
    with pytest.raises(RuntimeError, match="^stage failed$"):
        run(raw, out, load_config(None, ["engine.name=ray", *QUICK]))
    assert not out.exists()
    assert _names_beside(out) == []


def test_a_ray_run_shows_one_bar_per_row_stage(tmp_path, monkeypatch):
    from tests.test_progress import FakeProgress

    progress = FakeProgress()
    monkeypatch.setattr("curator.pipeline.Progress", lambda enabled: progress)
    raw = write_lines(tmp_path / "raw" / "a.jsonl", [chat(("user", f"q{i}"), ("assistant", f"a{i}")) for i in range(5)] + [b"junk"]).parent
    run(raw, tmp_path / "out", load_config(None, ["engine.name=ray", "engine.batch_rows=2", "gates.min_examples=null",
                                                  "skip_stages=[secrets,code_language,tokens,quality,dedup_minhash,select]"]))
    seen = [(name, total, sorted(advances)) for name, total, advances in progress.tasks]
    assert seen == [
        ("read + validate", None, [6]),
        ("normalize (3 shards)", 5, [1, 2, 2]),  # advanced as each shard's task ends, in any order
        ("language (3 shards)", 5, [1, 2, 2]),
    ]


# --- connecting, and not importing Ray -------------------------------------------------------------------


@pytest.mark.parametrize(
    "option, env, expected",
    [("head:6379", "other:6379", "head:6379"), (None, "ray://head:10001", "ray://head:10001"), (None, None, None)],
)
def test_the_ray_address_is_the_option_then_ray_address_then_a_local_ray(monkeypatch, option, env, expected):
    from curator import ray_engine

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda address=None, **kw: calls.append(("init", address)))
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append(("shutdown",)))
    if env is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", env)
    with ray_engine.connected(option) as run_row:
        assert run_row is ray_engine.run_row_stage
        assert calls == [("init", expected)]
    assert calls == [("init", expected), ("shutdown",)]


def test_curate_run_takes_the_ray_address_as_an_option(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr("curator.pipeline.run", lambda raw, out, config, **kw: seen.append(config.engine) or None)
    CliRunner().invoke(cli, ["run", "raw", str(tmp_path / "o"), "--quiet", "--engine", "ray", "--ray-address", "head:6379"])
    assert [(e.name, e.ray_address) for e in seen] == [("ray", "head:6379")]


def test_the_ray_engine_without_ray_fails_before_reading(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(CurateError, match=r"pip install 'curator\[ray\]'"):
        run(_twelve(tmp_path), tmp_path / "out", load_config(None, ["engine.name=ray"]))
    assert not (tmp_path / "out").exists() and _names_beside(tmp_path / "out") == []


def test_only_the_ray_engine_imports_ray(tmp_path):
    raw = _twelve(tmp_path)
    code = (
        "import sys\n"
        "from curator.cli import main\n"
        "for args in sys.argv[1:]:\n"
        "    sys.argv = ['curate', *args.split()]\n"
        "    try:\n        main()\n    except SystemExit as exc:\n        assert not exc.code, exc.code\n"
        "print('ray' in sys.modules)\n"
    )
    quick = "-s skip_stages=[secrets,language,code_language,tokens,quality,dedup_minhash,select] -s gates.min_examples=null"
    local = f"run {raw} {tmp_path / 'o'} --quiet --engine local {quick}"
    validate = f"validate {raw / 'a.jsonl'}"
    for args in ([validate], [local], [f"run {raw} {tmp_path / 'r'} --quiet --engine ray -s engine.batch_rows=6 {quick}"]):
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip().splitlines()[-1] == ("True" if "--engine ray" in args[0] else "False"), args
