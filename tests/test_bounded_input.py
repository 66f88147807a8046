"""Hostile input stays bounded: memory by input.max_line_bytes, never by a file's size; no file that is
not a regular file is read; no single file stops a run; config and rule YAML cannot expand without end.

The memory tests run `curate` in a child process, watch its peak resident set (VmHWM) and kill it past
the limit, so a regression fails fast instead of taking the machine's memory.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from curator.config import load_config
from curator.errors import CurateError
from curator.io import readers
from curator.io.readers import discover
from curator.pipeline import run
from curator.validation import validate_file
from tests.conftest import HEAVY_STAGES, chat, write_lines
from tests.test_pipeline import GOOD, foundation_config, kept, rejects

ROOT = Path(__file__).resolve().parents[1]
OTHER = chat(("user", "Name a prime number."), ("assistant", "Seven is a prime number."))
LIMIT_MB = 300
SMALL_LINES = "input.max_line_bytes=100000"
FOUNDATION = f"skip_stages={HEAVY_STAGES}"
BOMB_BYTES = 256 << 20  # decompressed; the gzip file is about 250 KB


@dataclass
class Measured:
    exit_code: int
    stdout: str
    stderr: str
    peak_mb: float
    killed: str | None  # "memory" or "timeout" when the watchdog stopped it


# Runs a command, kills it past a peak RSS (VmHWM) or a timeout, and prints its exit status and peak RSS.
# A small process of its own: a child's ru_maxrss starts from the RSS of the process that spawned it,
# which for pytest itself would be hundreds of MB.
WATCHDOG = """
import json, os, subprocess, sys, time
limit_kb, timeout, out, err = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
with open(out, "wb") as fo, open(err, "wb") as fe:
    proc = subprocess.Popen(sys.argv[5:], stdout=fo, stderr=fe)
killed, deadline = None, time.monotonic() + timeout
while True:
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    if pid:
        break
    try:
        with open(f"/proc/{proc.pid}/status") as fh:
            hwm = next((int(l.split()[1]) for l in fh if l.startswith("VmHWM:")), 0)
    except OSError:
        hwm = 0
    killed = "memory" if hwm > limit_kb else "timeout" if time.monotonic() > deadline else None
    if killed:
        proc.kill()
        pid, status, usage = os.wait4(proc.pid, 0)
        break
    time.sleep(0.02)
proc.returncode = os.waitstatus_to_exitcode(status)
print(json.dumps({"exit": proc.returncode, "peak_kb": usage.ru_maxrss, "killed": killed}))
"""


def curate(tmp_path: Path, *args: str, limit_mb: int = LIMIT_MB, timeout: float = 60) -> Measured:
    """`curate ARGS` in a child process: its exit code, output and peak RSS; killed past `limit_mb` or `timeout`."""
    out, err = tmp_path / "child.stdout", tmp_path / "child.stderr"
    command = [sys.executable, "-m", "curator.cli", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    watch = [sys.executable, "-c", WATCHDOG, str(limit_mb * 1024), str(timeout), str(out), str(err), *command]
    report = json.loads(subprocess.run(watch, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout)
    stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
    return Measured(report["exit"], stdout, stderr, report["peak_kb"] / 1024, report["killed"])


def assert_bounded(m: Measured) -> None:
    assert m.killed is None, f"killed ({m.killed}) at {m.peak_mb:.0f} MB; stderr: {m.stderr[-500:]}"
    assert m.peak_mb < LIMIT_MB


def run_args(raw: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(raw), str(out), "--quiet", "--no-gate", "-s", FOUNDATION, *extra]


# --- one line, or one .json element, far over the limit -------------------------------------------


@pytest.fixture(scope="module")
def gzip_bomb(tmp_path_factory) -> Path:
    """A .jsonl.gz of 250 KB: a good line, a 256 MiB line without a newline until its end, a good line."""
    path = tmp_path_factory.mktemp("bomb") / "raw" / "bomb.jsonl.gz"
    path.parent.mkdir()
    block = b"a" * (1 << 20)
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(json.dumps(GOOD).encode() + b"\n" + b'{"messages": "')
        for _ in range(BOMB_BYTES >> 20):
            fh.write(block)
        fh.write(b'"}\n' + json.dumps(OTHER).encode() + b"\n")
    return path


BOMB_LINE = len(b'{"messages": "') + BOMB_BYTES + len(b'"}')
BOMB_DETAIL = f"line is {BOMB_LINE:,} bytes, over the limit of 100,000 (input.max_line_bytes); raw holds its first 200 bytes only"


def test_a_gzip_bomb_line_is_rejected_by_run_without_being_held(gzip_bomb, tmp_path):
    out = tmp_path / "out"
    m = curate(tmp_path, *run_args(gzip_bomb.parent, out, "-s", SMALL_LINES))
    assert_bounded(m)
    assert m.exit_code == 0
    [record] = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert (record["ref"], record["reasons"], record["details"]) == (f"{gzip_bomb.as_posix()}:2", ["io.line_too_long"], [BOMB_DETAIL])
    assert record["raw"] == '{"messages": "' + "a" * 186
    assert sorted(r["messages"][0]["content"] for r in kept(out)) == ["Name a prime number.", "What is two plus two?"]


def test_a_gzip_bomb_line_is_one_error_line_of_validate_without_being_held(gzip_bomb, tmp_path):
    m = curate(tmp_path, "validate", str(gzip_bomb), "-s", SMALL_LINES)
    assert_bounded(m)
    assert (m.exit_code, m.stdout) == (1, f"{gzip_bomb}:2: {BOMB_DETAIL} [io.line_too_long]\n")


@pytest.fixture(scope="module")
def json_bomb(tmp_path_factory) -> Path:
    """A .json array whose second element is 48 MB."""
    path = tmp_path_factory.mktemp("jbomb") / "raw" / "big.json"
    path.parent.mkdir()
    huge = {"messages": [{"role": "user", "content": "a" * (48 << 20)}, {"role": "assistant", "content": "b"}]}
    path.write_text("[\n" + json.dumps(GOOD) + ",\n" + json.dumps(huge) + ",\n" + json.dumps(OTHER) + "\n]\n")
    return path


def _element_detail(size: int) -> str:
    return f"array element 2 is {size:,} bytes, over the limit of 100,000 (input.max_line_bytes); raw holds its first 200 bytes only"


def test_a_json_element_over_the_limit_is_rejected_without_being_held(json_bomb, tmp_path):
    size = len(json_bomb.read_bytes().split(b"\n")[2]) - 1  # the element's line, without its comma
    out = tmp_path / "out"
    m = curate(tmp_path, *run_args(json_bomb.parent, out, "-s", SMALL_LINES))
    assert_bounded(m)
    assert m.exit_code == 0
    [record] = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert (record["ref"], record["reasons"], record["details"]) == (f"{json_bomb.as_posix()}:2", ["io.line_too_long"], [_element_detail(size)])
    assert record["raw"].startswith('{"messages": [{"role": "user", "content": "aaa') and len(record["raw"]) == 200
    assert len(kept(out)) == 2
    m = curate(tmp_path, "validate", str(json_bomb), "-s", SMALL_LINES)
    assert_bounded(m)
    # validate names the line the element starts on (element 2 is on line 3), run its number
    assert (m.exit_code, m.stdout) == (1, f"{json_bomb}:3: {_element_detail(size)} [io.line_too_long]\n")


def test_a_json_file_is_streamed_not_read_whole(tmp_path):
    path = tmp_path / "spaced.json.gz"
    with gzip.open(path, "wb", compresslevel=1) as fh:
        fh.write(b"[" + json.dumps(GOOD).encode() + b",")
        for _ in range(BOMB_BYTES >> 20):
            fh.write(b" " * (1 << 20))
        fh.write(json.dumps(OTHER).encode() + b"]")
    m = curate(tmp_path, "validate", str(path))
    assert_bounded(m)
    assert (m.exit_code, m.stdout, m.stderr) == (0, "", "")


def test_max_line_bytes_applies_to_json_elements_in_process(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    long = chat(("user", "x" * 2000), ("assistant", "y"))
    (raw / "a.json").write_text(json.dumps([GOOD, long, OTHER]))
    result = run(raw, tmp_path / "out", foundation_config("input.max_line_bytes=1024"))
    assert (result.counts["read"], result.counts["kept"]) == (3, 2)
    assert rejects(tmp_path / "out") == {f"{(raw / 'a.json').as_posix()}:2": ["io.line_too_long"]}


# --- paths that are not regular files -------------------------------------------------------------


def test_fifos_devices_sockets_and_dangling_links_are_skipped_by_discover(tmp_path):
    raw = tmp_path / "raw"
    write_lines(raw / "a.jsonl", [GOOD])
    os.mkfifo(raw / "pipe.jsonl")
    (raw / "zero.jsonl").symlink_to("/dev/zero")
    (raw / "gone.jsonl").symlink_to(raw / "missing.jsonl")
    (raw / "loop.json").symlink_to(raw / "loop.json")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(raw / "s.jsonl"))
        found = discover(raw)
    finally:
        sock.close()
    assert found.files == [raw / "a.jsonl"]
    assert found.skipped == [
        ((raw / "gone.jsonl").as_posix(), "symbolic link to a missing file"),
        ((raw / "loop.json").as_posix(), "cannot be examined: Too many levels of symbolic links"),
        ((raw / "pipe.jsonl").as_posix(), "a FIFO (named pipe), not a regular file"),
        ((raw / "s.jsonl").as_posix(), "a socket, not a regular file"),
        ((raw / "zero.jsonl").as_posix(), "symbolic link to a character device, not a regular file"),
    ]
    with pytest.raises(CurateError, match=r"pipe\.jsonl: a FIFO \(named pipe\), not a regular file; not read$"):
        discover(raw / "pipe.jsonl")


def test_a_fifo_and_a_link_to_dev_zero_in_raw_are_skipped_and_the_run_finishes(tmp_path):
    raw = tmp_path / "raw"
    write_lines(raw / "a.jsonl", [GOOD])
    os.mkfifo(raw / "pipe.jsonl")
    (raw / "zero.jsonl").symlink_to("/dev/zero")
    out = tmp_path / "out"
    m = curate(tmp_path, *run_args(raw, out), timeout=30)
    assert_bounded(m)
    assert m.exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs_skipped"] == [
        {"path": (raw / "pipe.jsonl").as_posix(), "why": "a FIFO (named pipe), not a regular file"},
        {"path": (raw / "zero.jsonl").as_posix(), "why": "symbolic link to a character device, not a regular file"},
    ]
    assert manifest["counts"]["read"] == 1 and manifest["counts"]["kept"] == 1
    assert "2 paths under" in m.stderr


def test_validate_names_a_fifo_argument_as_an_error_and_goes_on(tmp_path):
    os.mkfifo(tmp_path / "pipe.jsonl")
    good = write_lines(tmp_path / "good.jsonl", [GOOD])
    (tmp_path / "zero.jsonl").symlink_to("/dev/zero")
    m = curate(tmp_path, "validate", str(tmp_path / "pipe.jsonl"), str(tmp_path / "zero.jsonl"), str(good), timeout=30)
    assert_bounded(m)
    assert (m.exit_code, m.stdout.splitlines()) == (
        1,
        [
            f"{tmp_path / 'pipe.jsonl'}:1: a FIFO (named pipe), not a regular file; nothing of the file was read [io.not_regular_file]",
            f"{tmp_path / 'zero.jsonl'}:1: a character device, not a regular file; nothing of the file was read [io.not_regular_file]",
        ],
    )
    assert m.stderr == "3 records checked: 2 errors, 0 warnings\n"


def test_a_file_replaced_by_a_fifo_after_discovery_is_a_reject_not_a_hang(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    write_lines(raw / "a.jsonl", [GOOD])
    fifo = raw / "b.jsonl"
    os.mkfifo(fifo)
    real = readers.not_regular
    monkeypatch.setattr(readers, "not_regular", lambda path: None if path == fifo else real(path))
    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(run(raw, tmp_path / "out", foundation_config())), daemon=True)
    worker.start()
    worker.join(timeout=20)
    if worker.is_alive():  # blocked opening the FIFO: a writer that comes and goes releases it
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=20)
        pytest.fail("reading a FIFO blocked the run")
    [result] = outcome
    assert (result.counts["read"], result.counts["kept"]) == (2, 1)
    assert rejects(tmp_path / "out") == {f"{fifo.as_posix()}:1": ["io.not_regular_file"]}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["inputs"][fifo.as_posix()] is None


# --- one file failing never stops the run ---------------------------------------------------------


def test_bad_truncated_unreadable_and_dangling_files_do_not_stop_the_run(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    write_lines(raw / "a.jsonl", [GOOD])
    (raw / "fake.jsonl.gz").write_bytes(b"this is not gzip\n")
    records = [chat(("user", f"question {i} " * 30), ("assistant", f"answer {i} " * 30)) for i in range(200)]
    data = gzip.compress(json.dumps(records).encode(), mtime=0)
    (raw / "cut.json.gz").write_bytes(data[: len(data) // 2])
    write_lines(raw / "locked.jsonl", [OTHER])
    (raw / "gone.jsonl").symlink_to(raw / "missing.jsonl")
    real_open = os.open

    def refuse_locked(path, flags, *args, **kwargs):  # chmod 000 does not stop root: refuse as the OS would
        if Path(path).name == "locked.jsonl":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(readers.os, "open", refuse_locked)
    out = tmp_path / "out"
    result = run(raw, out, foundation_config())
    found = rejects(out)
    cut = (raw / "cut.json.gz").as_posix()
    [cut_ref] = [ref for ref in found if ref.startswith(cut)]
    n_cut = int(cut_ref.rsplit(":", 1)[1]) - 1  # the elements before the cut are read
    assert 0 < n_cut < 200
    assert found == {
        f"{(raw / 'fake.jsonl.gz').as_posix()}:1": ["io.bad_gzip"],
        f"{cut}:{n_cut + 1}": ["io.truncated_gzip"],
        f"{(raw / 'locked.jsonl').as_posix()}:1": ["io.unreadable"],
    }
    assert (result.counts["read"], result.counts["kept"], result.counts["rejected"]) == (n_cut + 4, n_cut + 1, 3)
    assert result.skipped == [((raw / "gone.jsonl").as_posix(), "symbolic link to a missing file")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"][(raw / "locked.jsonl").as_posix()] is None
    details = {json.loads(l)["ref"]: json.loads(l)["details"] for l in (out / "rejects.jsonl").read_text().splitlines()}
    assert details[f"{(raw / 'locked.jsonl').as_posix()}:1"] == ["cannot read: Permission denied; nothing of the file was read"]
    assert details[f"{(raw / 'fake.jsonl.gz').as_posix()}:1"][0].startswith("not a gzip file (Not a gzipped file (b'th')); nothing of the file")
    assert details[cut_ref][0].startswith("gzip stream is truncated or corrupt (") and details[cut_ref][0].endswith("; the rest of the file is lost")


@pytest.mark.skipif(os.geteuid() == 0, reason="chmod 000 does not stop root from reading")
def test_a_file_without_read_permission_is_one_reject(tmp_path):
    raw = tmp_path / "raw"
    write_lines(raw / "a.jsonl", [GOOD])
    locked = write_lines(raw / "locked.jsonl", [OTHER])
    locked.chmod(0)
    try:
        result = run(raw, tmp_path / "out", foundation_config())
    finally:
        locked.chmod(0o644)
    assert (result.counts["read"], result.counts["kept"]) == (2, 1)
    assert rejects(tmp_path / "out") == {f"{locked.as_posix()}:1": ["io.unreadable"]}


def test_validate_reports_an_unreadable_file_and_checks_the_next(tmp_path):
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_bytes(b"not gzip")
    good = write_lines(tmp_path / "good.jsonl", [GOOD])
    findings = [f.format() for _, found in validate_file(fake) for f in found]
    assert findings == [f"{fake}:1: not a gzip file (Not a gzipped file (b'no')); nothing of the file was read [io.bad_gzip]"]
    assert [found for _, found in validate_file(good)] == [[]]


# --- numbers that cannot be written back ----------------------------------------------------------


def _with_meta(meta: str) -> bytes:
    return b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "meta": ' + meta.encode() + b"}"


BIG_INT = "9" * 4301
NUMBERS = [_with_meta('{"n": 1e-400}'), _with_meta('{"ids": [1, ' + BIG_INT + "]}"), _with_meta('{"zero": 0.0e-400, "tiny": 5e-324}')]
NUMBER_DETAILS = [
    "meta.n: number 1e-400 is out of range (too small: it would be written back as 0.0)",
    "meta.ids[1]: integer of 4,301 digits is out of range (more than 4,300 digits cannot be written back)",
]


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_huge_integers_and_underflowing_floats_are_bad_json_naming_the_field(tmp_path, suffix):
    raw = tmp_path / "raw"
    raw.mkdir()
    path = raw / f"a{suffix}"
    path.write_bytes(b"\n".join(NUMBERS) + b"\n" if suffix == ".jsonl" else b"[" + b",\n".join(NUMBERS) + b"]")
    out = tmp_path / "out"
    result = run(raw, out, foundation_config())
    assert (result.counts["read"], result.counts["kept"]) == (3, 1)
    details = {json.loads(l)["ref"]: (json.loads(l)["reasons"], json.loads(l)["details"]) for l in (out / "rejects.jsonl").read_text().splitlines()}
    name = path.as_posix()
    assert details == {f"{name}:1": (["io.bad_json"], [NUMBER_DETAILS[0]]), f"{name}:2": (["io.bad_json"], [NUMBER_DETAILS[1]])}
    assert kept(out)[0]["meta"] == {"zero": 0.0, "tiny": 5e-324}
    findings = [f.format() for _, found in validate_file(path) for f in found]
    assert findings == [f"{path}:{n}: {d} [io.bad_json]" for n, d in enumerate(NUMBER_DETAILS, 1)]


def test_validate_cli_reports_a_huge_integer_in_a_json_file_not_an_internal_error(tmp_path):
    from click.testing import CliRunner

    from curator.cli import cli

    path = tmp_path / "a.json"
    path.write_bytes(b"[" + NUMBERS[1] + b"]")
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert (result.exit_code, result.stdout) == (1, f"{path}:1: {NUMBER_DETAILS[1]} [io.bad_json]\n")


# --- YAML that expands without end ----------------------------------------------------------------

BILLION_LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip(["", "a", "b", "c", "d", "e", "f", "g", "h"], "abcdefghi")
)


def test_an_alias_bomb_config_or_rule_file_is_refused_in_one_line(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 400
    raw = write_lines(tmp_path / "raw" / "a.jsonl", [GOOD])
    refused = f"error: {bomb}: aliases expand the document past 100,000 nodes; refused\n"
    m = curate(tmp_path, *run_args(raw, tmp_path / "out", "--config", str(bomb)))
    assert_bounded(m)
    assert (m.exit_code, m.stderr) == (1, refused)
    quality_only = "skip_stages=[secrets,language,code_language,tokens,dedup_minhash,select]"
    m = curate(tmp_path, "run", str(raw), str(tmp_path / "out"), "-q", "-s", quality_only, "--rules", str(bomb))
    assert_bounded(m)
    assert (m.exit_code, m.stderr) == (1, refused)


def test_an_alias_bomb_in_an_override_and_a_recursive_alias_are_refused(tmp_path):
    flow = "[" + ", ".join(line.split(": ", 1)[1] for line in BILLION_LAUGHS.splitlines()) + "]"
    with pytest.raises(CurateError, match=r"^-s seed=\[.*: aliases expand the document past 100,000 nodes; refused$"):
        load_config(None, ["seed=" + flow])
    looped = tmp_path / "loop.yaml"
    looped.write_text("seed: &x [1, *x]\n")
    with pytest.raises(CurateError, match=rf"^{looped}: an alias refers to a node that holds it; refused$"):
        load_config(looped)


def test_anchors_aliases_and_merge_keys_within_the_budget_still_load(tmp_path):
    path = tmp_path / "curate.yaml"
    path.write_text("tokens: &tok\n  policy: truncate\n  context_length: 100\nquality:\n  <<: {high_quality_threshold: 0.6}\n")
    config = load_config(path)
    assert (config.tokens.policy, config.tokens.context_length, config.quality.high_quality_threshold) == ("truncate", 100, 0.6)
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\n"
        "rules:\n"
        "  - &short {id: short, description: d, signal: words, max_words: 1, weight: 0.5}\n"
        "  - {<<: *short, id: long, max_words: 9000}\n"
    )
    from curator.rules import load_rules

    assert [(r.id, r.max) for r in load_rules(rules).rules] == [("short", 1), ("long", 9000)]
    assert len(load_rules().rules) == 25  # rules/default.yaml


# --- validate: the same limits as run, output streamed ---------------------------------------------


def test_validate_reads_input_limits_from_the_config_and_overrides(tmp_path):
    from click.testing import CliRunner

    from curator.cli import cli

    path = write_lines(tmp_path / "a.jsonl", [chat(("user", "x" * 2000), ("assistant", "y"))])
    config = tmp_path / "curate.yaml"
    config.write_text("input:\n  max_line_bytes: 1024\n")
    size = len(path.read_bytes()) - 1
    detail = f"line is {size:,} bytes, over the limit of 1,024 (input.max_line_bytes); raw holds its first 200 bytes only"
    assert CliRunner().invoke(cli, ["validate", str(path)]).exit_code == 0
    for args in (["--config", str(config)], ["-s", "input.max_line_bytes=1024"]):
        result = CliRunner().invoke(cli, ["validate", str(path), *args])
        assert (result.exit_code, result.stdout) == (1, f"{path}:1: {detail} [io.line_too_long]\n")
    result = CliRunner().invoke(cli, ["validate", str(path), "--config", str(config), "-s", "input.max_line_bytes=8000"])
    assert result.exit_code == 0
    result = CliRunner().invoke(cli, ["validate", str(path), "-s", "input.max_line_bytes=10"])
    assert (result.exit_code, result.stderr) == (1, "error: -s input.max_line_bytes=10: Input should be greater than or equal to 1024\n")


def test_validate_json_output_is_streamed(tmp_path):
    path = tmp_path / "blank.jsonl"
    n = 200_000
    path.write_bytes(b"\n" * n)
    # validate holds ~30 MB of its own; holding 200,000 findings took ~170 MB more
    m = curate(tmp_path, "validate", "--format", "json", str(path), limit_mb=100)
    assert m.killed is None, f"killed ({m.killed})"
    assert m.peak_mb < 100
    assert m.exit_code == 1
    lines = m.stdout.splitlines()
    assert len(lines) == n + 2 and lines[0] == '{"problems": ['
    assert json.loads(lines[1].rstrip(",")) == {
        "file": str(path), "line": 1, "field": "", "message": "blank line", "code": "io.blank_line", "severity": "error"
    }
    assert lines[-1] == f'], "files": 1, "records": {n}, "errors": {n}, "warnings": 0, "stopped_at_max_errors": false}}'
    report = json.loads(m.stdout)
    assert len(report["problems"]) == n and report["records"] == n


def test_validate_json_output_without_problems_is_one_line(tmp_path):
    from click.testing import CliRunner

    from curator.cli import cli

    path = write_lines(tmp_path / "ok.jsonl", [GOOD])
    result = CliRunner().invoke(cli, ["validate", "--format", "json", str(path)])
    assert (result.exit_code, result.stdout) == (
        0, '{"problems": [], "files": 1, "records": 1, "errors": 0, "warnings": 0, "stopped_at_max_errors": false}\n'
    )


def test_a_prices_file_with_an_alias_bomb_is_refused(tmp_path):
    from curator.cost import load_prices

    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi")
    ) + "gpus: [*i]\n"
    path = tmp_path / "prices.yaml"
    path.write_text(bomb, encoding="utf-8")
    with pytest.raises(CurateError, match="aliases expand the document past"):
        load_prices(path)
