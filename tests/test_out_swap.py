"""OUT under `kill -9`, a second run, --force and a machine that refuses: always a whole run, one line."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from curator import out_dir, pipeline
from curator.cli import cli
from curator.errors import CurateError
from curator.pipeline import run
from tests.conftest import HEAVY_STAGES, chat, write_lines
from tests.test_pipeline import GOOD, foundation_config

ROOT = Path(__file__).resolve().parents[1]
QUICK = f"skip_stages={HEAVY_STAGES}"
OLD_RECORDS = [GOOD]
NEW_RECORDS = [GOOD, chat(("user", "Name a prime."), ("assistant", "Seven.")), chat(("user", "And another?"), ("assistant", "Eleven."))]
OLD, NEW = len(OLD_RECORDS), len(NEW_RECORDS)  # a run is told apart by how many lines it read


def complete_run(out: Path) -> int:
    """Assert OUT holds a whole run (every output its manifest lists, with that sha256); return lines read."""
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert {"train.jsonl", "val.jsonl", "rejects.jsonl", "annotations.parquet"} <= set(manifest["outputs"])
    for name, sha in manifest["outputs"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == sha, name
    return manifest["counts"]["read"]


def an_earlier_run(tmp_path: Path, out: Path) -> tuple[Path, Path]:
    """RAW of an old run (already in OUT) and RAW of a new one."""
    old = write_lines(tmp_path / "raw_old" / "a.jsonl", OLD_RECORDS).parent
    new = write_lines(tmp_path / "raw_new" / "a.jsonl", NEW_RECORDS).parent
    run(old, out, foundation_config())
    return old, new


def curate_killed_at(step: str, raw: Path, out: Path, *args: str, mount: bool = False, no_exchange: bool = False) -> int:
    """Run `curate run` in a child that kills itself with SIGKILL at `step`; return the child's pid."""
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "if MOUNT:  # OUT is taken for a mount point\n"
        "    real = os.path.ismount\n"
        "    os.path.ismount = lambda p: Path(p) == Path(OUT) or real(p)\n"
        "if NO_EXCHANGE:  # as on a system without renameat2\n"
        "    import curator.out_dir\n"
        "    curator.out_dir.exchange = lambda a, b: False\n"
        "from curator.cli import main\n"
        "sys.argv = ARGV\n"
        "main()\n"
    )
    argv = ["curate", "run", str(raw), str(out), "--quiet", "--no-gate", "-s", QUICK, *args]
    header = f"MOUNT = {mount!r}\nNO_EXCHANGE = {no_exchange!r}\nOUT = {str(out)!r}\nARGV = {argv!r}\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT), out_dir.KILL_AT: step}
    child = subprocess.Popen([sys.executable, "-c", header + script], env=env, stderr=subprocess.PIPE)
    _, stderr = child.communicate(timeout=300)
    assert child.returncode == -signal.SIGKILL, stderr.decode()
    return child.pid


def names(folder: Path, prefix: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(prefix))


def mount_point(monkeypatch, out: Path) -> None:
    real = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == out or real(p))


# --- kill -9 at each step ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step, holds, left",
    [
        ("staged", OLD, "tmp"),  # the new run is written beside OUT, not yet swapped in
        ("exchanged", NEW, "tmp"),  # names exchanged: the old run is under the staging name
        ("removing-old", NEW, "tmp"),  # the old run half deleted (its manifest.json first)
    ],
)
def test_a_run_killed_at_any_step_of_the_swap_leaves_a_whole_run(tmp_path, step, holds, left):
    out = tmp_path / "out"
    _, new = an_earlier_run(tmp_path, out)
    pid = curate_killed_at(step, new, out, "--force")
    assert complete_run(out) == holds
    assert names(tmp_path, ".out") == [".out.lock", f".out.{left}-{pid}"]
    run(new, out, foundation_config(), force=True)
    assert complete_run(out) == NEW
    assert names(tmp_path, ".out") == []


def test_killed_between_the_two_renames_the_next_run_puts_the_old_run_back(tmp_path):
    # where names cannot be exchanged: OUT is missing for a moment, its old run set aside
    out = tmp_path / "out"
    _, new = an_earlier_run(tmp_path, out)
    pid = curate_killed_at("renamed-old", new, out, "--force", no_exchange=True)
    assert not out.exists()
    assert names(tmp_path, ".out") == [".out.lock", f".out.old-{pid}", f".out.tmp-{pid}"]
    with pytest.raises(CurateError, match="holds an earlier curate run; use --force"):
        run(new, out, foundation_config())
    assert complete_run(out) == OLD
    assert names(tmp_path, ".out") == []


def test_without_renameat2_the_two_renames_still_replace_the_run(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _, new = an_earlier_run(tmp_path, out)
    monkeypatch.setattr(out_dir, "exchange", lambda a, b: False)
    run(new, out, foundation_config(), force=True)
    assert complete_run(out) == NEW
    assert names(tmp_path, ".out") == []


@pytest.mark.parametrize(
    "step, left",
    [
        ("staged", "tmp"),  # written inside OUT, nothing moved: OUT still holds the old run
        ("mount-clearing", "ready"),  # the old run half deleted, the new one complete beside it
        ("mount-moving", "moving"),  # the new run half moved in, manifest.json not yet
    ],
)
def test_a_mount_point_killed_mid_move_is_finished_by_the_next_run(tmp_path, monkeypatch, step, left):
    out = tmp_path / "mnt"
    out.mkdir()
    mount_point(monkeypatch, out)
    _, new = an_earlier_run(tmp_path, out)
    pid = curate_killed_at(step, new, out, "--force", mount=True)
    assert names(out, ".curate") == [".curate.lock", f".curate.{left}-{pid}"]
    if left == "tmp":
        assert complete_run(out) == OLD
    else:  # half moved: not a run (no manifest.json) until the next run finishes the move
        assert not (out / "manifest.json").exists()
    with pytest.raises(CurateError, match="holds an earlier curate run; use --force"):
        run(new, out, foundation_config())
    assert complete_run(out) == (OLD if left == "tmp" else NEW)
    assert names(out, ".curate") == []


# --- one run at a time ---------------------------------------------------------------------------


def test_a_second_run_into_the_same_out_fails_fast_and_a_killed_holder_blocks_nothing(tmp_path, monkeypatch):
    raw = write_lines(tmp_path / "raw" / "a.jsonl", [GOOD]).parent
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom pathlib import Path\nfrom curator.out_dir import OutLock\n"
         "lock = OutLock(Path(sys.argv[1])).__enter__()\nprint('held', flush=True)\ntime.sleep(300)\n", str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline() == b"held\n"

        def no_work(*args, **kwargs):
            raise AssertionError("RAW was read")

        with monkeypatch.context() as m:
            m.setattr(pipeline, "discover", no_work)
            result = CliRunner().invoke(cli, ["run", str(raw), str(out), "--quiet", "--no-gate", "-s", QUICK])
        assert (result.exit_code, result.stderr) == (1, f"error: {out}: another curate run (pid {holder.pid}) is writing it\n")
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    result = CliRunner().invoke(cli, ["run", str(raw), str(out), "--quiet", "--no-gate", "-s", QUICK])
    assert (result.exit_code, result.stderr) == (0, "")
    assert complete_run(out) == 1
    assert names(tmp_path, ".out") == []  # the lock file goes with the run


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_leftovers_of_dead_runs_are_removed_at_the_start(tmp_path):
    out = tmp_path / "out"
    _, new = an_earlier_run(tmp_path, out)
    for kind in ("tmp", "old"):
        write_lines(tmp_path / f".out.{kind}-{dead_pid()}" / "train.jsonl", [GOOD])
    (tmp_path / ".other.tmp-1").mkdir()  # another OUT's: not touched
    run(new, out, foundation_config(), force=True)
    assert names(tmp_path, ".") == [".other.tmp-1"]


def test_without_file_locks_only_leftovers_of_dead_pids_are_removed(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(out_dir.fcntl, "flock", no_locks)
    out = tmp_path / "out"
    _, new = an_earlier_run(tmp_path, out)
    dead = dead_pid()
    for pid in (dead, os.getppid()):
        (tmp_path / f".out.tmp-{pid}").mkdir()
    run(new, out, foundation_config(), force=True)
    assert names(tmp_path, ".out") == [f".out.tmp-{os.getppid()}"]


# --- what --force may replace --------------------------------------------------------------------


def test_force_refuses_a_folder_that_is_not_an_earlier_run(tmp_path):
    raw = write_lines(tmp_path / "raw" / "a.jsonl", [GOOD]).parent
    home = tmp_path / "home"
    write_lines(home / ".ssh" / "id_ed25519", ["secret key"])
    write_lines(home / "notes.txt", ["mine"])
    result = CliRunner().invoke(cli, ["run", str(raw), str(home), "--force", "--quiet", "--no-gate", "-s", QUICK])
    assert (result.exit_code, result.stderr) == (
        1,
        f"error: {home}: folder is not empty and is not an earlier curate output (no manifest.json); "
        "--force replaces only an earlier run, choose another OUT\n",
    )
    assert (home / ".ssh" / "id_ed25519").read_text() == "secret key\n"
    (home / "manifest.json").write_text('{"name": "another tool"}')
    with pytest.raises(CurateError, match=r"\(its manifest.json has no curate manifest_version\)"):
        run(raw, home, foundation_config(), force=True)
    (home / "manifest.json").write_text("{not json")
    with pytest.raises(CurateError, match=r"\(its manifest.json is not readable JSON\)"):
        run(raw, home, foundation_config(), force=True)
    assert (home / ".ssh" / "id_ed25519").exists()


@pytest.mark.parametrize("force", [False, True])
def test_an_empty_folder_is_filled_with_or_without_force(tmp_path, force):
    raw = write_lines(tmp_path / "raw" / "a.jsonl", [GOOD]).parent
    (tmp_path / "out").mkdir()
    run(raw, tmp_path / "out", foundation_config(), force=force)
    assert complete_run(tmp_path / "out") == 1


def test_an_earlier_run_that_cannot_be_deleted_is_refused_before_any_work(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _, new = an_earlier_run(tmp_path, out)
    real_access = os.access
    # tests run as root, where modes do not refuse: the folder answers as a read-only one would
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == out else real_access(p, mode, **kw))

    def no_work(*args, **kwargs):
        raise AssertionError("RAW was read")

    monkeypatch.setattr(pipeline, "discover", no_work)
    with pytest.raises(CurateError) as caught:
        run(new, out, foundation_config(), force=True)
    assert str(caught.value) == f"{out}: cannot replace the earlier run: no write permission in {out}"
    assert complete_run(out) == OLD


@pytest.mark.skipif(os.geteuid() == 0, reason="root deletes from read-only folders")
def test_a_read_only_earlier_run_is_refused_before_any_work(tmp_path):
    out = tmp_path / "out"
    _, new = an_earlier_run(tmp_path, out)
    out.chmod(0o555)
    try:
        with pytest.raises(CurateError, match="cannot replace the earlier run: no write permission in"):
            run(new, out, foundation_config(), force=True)
    finally:
        out.chmod(0o755)
    assert complete_run(out) == OLD and names(tmp_path, ".out") == []


# --- errors of the machine -----------------------------------------------------------------------


def test_a_full_disk_is_one_line_naming_out_and_the_file(tmp_path, monkeypatch):
    raw = write_lines(tmp_path / "raw" / "a.jsonl", [GOOD]).parent
    out = tmp_path / "out"

    def to_a_full_disk(*args):
        with open("/dev/full", "w") as fh:  # fails at the write or the close, with no file name
            fh.write("x" * 100_000)

    args = ["run", str(raw), str(out), "--quiet", "--no-gate", "-s", QUICK]
    with monkeypatch.context() as m:
        m.setattr(pipeline, "_write_rejects", to_a_full_disk)
        result = CliRunner().invoke(cli, args)
    assert (result.exit_code, result.stderr) == (1, f"error: {out}: disk full while writing rejects.jsonl\n")
    import polars as pl

    real_write_parquet = pl.DataFrame.write_parquet
    monkeypatch.setattr(pl.DataFrame, "write_parquet", lambda self, path, **kw: real_write_parquet(self, "/dev/full", **kw))
    result = CliRunner().invoke(cli, args)
    assert (result.exit_code, result.stderr) == (1, f"error: {out}: disk full while writing annotations.parquet\n")
    assert not out.exists() and names(tmp_path, ".out") == []


@pytest.mark.parametrize(
    "code, words",
    [(errno.EACCES, "permission denied"), (errno.EPERM, "permission denied"), (errno.ENOSPC, "disk full"), (errno.EROFS, "read-only file system")],
)
def test_errors_of_the_machine_are_one_line_in_every_command(tmp_path, monkeypatch, code, words):
    import curator.validation

    def refused(path, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(curator.validation, "validate_file", refused)
    path = write_lines(tmp_path / "a.jsonl", [GOOD])
    result = CliRunner().invoke(cli, ["validate", str(path)], env={"CURATE_DEBUG": None})
    assert (result.exit_code, result.stderr) == (1, f"error: {path}: {words}\n")


def test_a_closed_pipe_on_stdout_ends_quietly_with_141():
    # `curate schema | head -0`: the reader is gone before anything is written
    child = subprocess.Popen(
        [sys.executable, "-m", "curator.cli", "schema"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    child.stdout.close()
    stderr = child.stderr.read()
    assert (child.wait(timeout=120), stderr) == (141, b"")


# --- old outputs are not input -------------------------------------------------------------------


def test_an_earlier_out_inside_raw_is_not_read(tmp_path):
    raw = write_lines(tmp_path / "raw" / "a.jsonl", NEW_RECORDS).parent
    run(raw, raw / "old_out", foundation_config())
    write_lines(raw / "other_tool" / "manifest.json", ['{"name": "not curate"}'])
    write_lines(raw / "other_tool" / "b.jsonl", [GOOD])
    result = run(raw, tmp_path / "out", foundation_config())
    # another tool's folder is input like any other, its manifest.json included (one rejected record)
    assert result.counts["read"] == NEW + 2
    assert ((raw / "old_out").as_posix(), "an earlier curate output") in result.skipped
