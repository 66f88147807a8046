"""Odd input and output paths: nothing lost, nothing deleted, a clear error before any work."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from curator import pipeline
from curator.config import load_config
from curator.errors import CurateError
from curator.io.readers import discover, display_name
from curator.pipeline import run
from curator.validation import validate_file
from tests.conftest import chat, write_lines
from tests.test_pipeline import GOOD, foundation_config, kept, rejects

OTHER = chat(("user", "Name a prime number."), ("assistant", "Seven is a prime number."))


def accounted(out: Path) -> set[str]:
    """Every input ref found in train, val and rejects (ids of kept rows are mapped back through annotations)."""
    import polars as pl

    ann = pl.read_parquet(out / "annotations.parquet")
    refs = ann.get_column("ref").to_list()
    assert len(refs) == len(set(refs))
    assert ann.height == len(kept(out)) + len(rejects(out))
    return set(refs)


# --- OUT and RAW ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["same", "parent"])
def test_out_holding_raw_is_refused_even_with_force(tmp_path, where):
    raw = tmp_path / "data" / "raw"
    write_lines(raw / "a.jsonl", [GOOD])
    out = raw if where == "same" else tmp_path / "data"
    with pytest.raises(CurateError, match="holds the input .*replacing it would delete the input"):
        run(raw, out, foundation_config(), force=True)
    assert (raw / "a.jsonl").is_file()


def test_out_inside_raw_is_not_read_back(tmp_path):
    raw = tmp_path / "raw"
    write_lines(raw / "a.jsonl", [GOOD, OTHER])
    first = run(raw, raw / "out", foundation_config())
    again = run(raw, raw / "out", foundation_config(), force=True)
    assert first.counts == again.counts and again.counts["read"] == 2
    assert ((raw / "out").as_posix(), "the output folder of this run") in again.skipped


def test_out_as_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path):
    write_lines(tmp_path / "raw" / "a.jsonl", [GOOD])
    target = tmp_path / "target"
    run(tmp_path / "raw", target, foundation_config())
    (target / "old.txt").write_text("old")
    link = tmp_path / "link"
    link.symlink_to(target)
    run(tmp_path / "raw", link, foundation_config(), force=True)
    assert link.is_symlink() and (target / "train.jsonl").exists() and not (target / "old.txt").exists()


def test_out_as_a_mount_point_is_filled_in_place(tmp_path, monkeypatch):
    # a mount point cannot be renamed: outputs are staged inside it and moved in
    write_lines(tmp_path / "raw" / "a.jsonl", [GOOD])
    out = tmp_path / "mnt"
    out.mkdir()
    real_ismount = os.path.ismount
    monkeypatch.setattr(pipeline.os.path, "ismount", lambda p: Path(p) == out or real_ismount(p))
    run(tmp_path / "raw", out, foundation_config())
    (out / "stale.jsonl").write_text("x")
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(pipeline.os, "replace", lambda a, b: (renamed.append(Path(a)), real_replace(a, b)))
    run(tmp_path / "raw", out, foundation_config(), force=True)
    assert out not in renamed  # OUT itself never moved
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["train.jsonl", "val.jsonl", "rejects.jsonl", "annotations.parquet", "dataset_info.json", "manifest.json",
         "report.json", "report.md", "report.html"]
    )


def test_unwritable_out_fails_before_any_work(tmp_path):
    write_lines(tmp_path / "raw" / "a.jsonl", [GOOD])
    (tmp_path / "file").write_text("x")
    with pytest.raises(CurateError, match="cannot be created: .*file is not a folder"):
        run(tmp_path / "raw", tmp_path / "file" / "out", foundation_config())


# --- what is under RAW ---------------------------------------------------------------------------


def test_other_files_are_listed_as_skipped_and_suffixes_ignore_case(tmp_path):
    raw = tmp_path / "raw"
    write_lines(raw / "UPPER.JSONL", [GOOD])
    write_lines(raw / "notes.txt", ["not data"])
    write_lines(raw / ".hidden.jsonl", [OTHER])
    (raw / "elsewhere").mkdir()
    write_lines(raw / "elsewhere" / "b.jsonl", [OTHER])
    (raw / "linked").symlink_to(raw / "elsewhere")
    found = discover(raw)
    assert [p.name for p in found.files] == ["UPPER.JSONL", "b.jsonl"]
    assert found.skipped == [
        ((raw / "linked").as_posix(), "symbolic link to a folder (not followed)"),
        ((raw / "notes.txt").as_posix(), "not .jsonl, .jsonl.gz, .json or .json.gz"),
    ]
    result = run(raw, tmp_path / "out", foundation_config())
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [s["path"] for s in manifest["inputs_skipped"]] == [p for p, _ in found.skipped]
    assert result.counts["read"] == 2


def test_an_unreadable_folder_is_an_error_not_a_gap(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    write_lines(raw / "a.jsonl", [GOOD])
    (raw / "locked").mkdir()
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(CurateError, match=r"locked: cannot read folder: Permission denied"):
        discover(raw)


def test_a_json_file_that_is_not_an_array_is_one_reject_and_the_run_goes_on(tmp_path):
    raw = tmp_path / "raw"
    write_lines(raw / "a.jsonl", [GOOD])
    (raw / "dataset_info.json").write_text('{"alpaca": {"file_name": "a.json"}}')
    result = run(raw, tmp_path / "out", foundation_config())
    assert result.counts["read"] == 2 and result.counts["kept"] == 1
    [record] = [json.loads(l) for l in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert record["reasons"] == ["io.not_array"] and record["raw"] == '{"alpaca": {"file_name": "a.json"}}'


def test_gzip_data_in_a_file_named_jsonl_is_read(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.jsonl").write_bytes(gzip.compress((json.dumps(GOOD) + "\n").encode(), mtime=0))
    assert run(raw, tmp_path / "out", foundation_config()).counts["kept"] == 1


def test_a_file_name_that_is_not_utf8_is_written_escaped(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    name = os.fsdecode(b"caf\xe9.jsonl")
    write_lines(raw / name, [GOOD, b"{broken"])
    run(raw, tmp_path / "out", foundation_config())
    assert list(rejects(tmp_path / "out")) == [f"{(raw / 'caf').as_posix()}\\xe9.jsonl:2"]


# --- values JSON allows but text or JSON output cannot hold ---------------------------------------


def test_lone_surrogates_and_non_finite_numbers_are_rejects_naming_the_field(tmp_path):
    raw = tmp_path / "raw"
    src = write_lines(
        raw / "a.jsonl",
        [
            GOOD,
            b'{"messages": [{"role": "user", "content": "hi \\ud800 there"}, {"role": "assistant", "content": "ok"}]}',
            b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "meta": {"\\udfffk": 1}}',
            b'{"messages": [{"role": "user", "content": "emoji \\ud83d\\ude00 pair"}, {"role": "assistant", "content": "fine"}]}',
            b'{"messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}], "meta": {"n": 1e999}}',
            b'{"messages": [{"role": "user", "content": "q3"}, {"role": "assistant", "content": "a3"}], "meta": {"n": NaN}}',
        ],
    )
    out = tmp_path / "out"
    run(raw, out, foundation_config())
    name = src.as_posix()
    assert rejects(out) == {
        f"{name}:2": ["io.lone_surrogate"],
        f"{name}:3": ["io.lone_surrogate"],
        f"{name}:5": ["io.bad_json"],
        f"{name}:6": ["io.bad_json"],
    }
    details = {json.loads(l)["ref"]: json.loads(l)["details"][0] for l in (out / "rejects.jsonl").read_text().splitlines()}
    assert details[f"{name}:2"].startswith("messages[0].content: a string holds a lone UTF-16 surrogate")
    assert details[f"{name}:3"].startswith("meta.\\udfffk: ")
    assert "number 1e999 is out of range" in details[f"{name}:5"]
    assert "NaN is not a JSON number" in details[f"{name}:6"]
    assert {r["messages"][0]["content"] for r in kept(out)} == {"What is two plus two?", "emoji 😀 pair"}
    assert len(accounted(out)) == 6
    # curate validate gives the same verdicts
    verdicts = {n: [f.problem.code for f in found] for n, (_, found) in enumerate(validate_file(src), 1)}
    assert {n: codes for n, codes in verdicts.items() if codes} == {
        2: ["io.lone_surrogate"], 3: ["io.lone_surrogate"], 5: ["io.bad_json"], 6: ["io.bad_json"]
    }


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_json_nested_past_the_depth_limit_is_a_reject_not_a_crash(tmp_path, suffix):
    # a few hundred levels decode in the reader; at about 976 a later stage's json.loads overflowed its stack
    chat_part = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]'
    deep = chat_part + ', "meta": ' + '{"a": ' * 300 + '"x\\\\y"' + "}" * 300 + "}"
    good = json.dumps(chat(("user", "hello"), ("assistant", "fine")))
    path = tmp_path / "raw" / f"a{suffix}"
    path.parent.mkdir()
    path.write_text(f"[{deep}, {good}]" if suffix == ".json" else f"{deep}\n{good}\n", encoding="utf-8")
    result = run(tmp_path / "raw", tmp_path / "out", load_config(None, ["gates.min_examples=null"]))
    assert result.counts["read"] == 2 and result.counts["kept"] == 1
    [reject] = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert reject["reasons"] == ["io.bad_json"] and reject["details"] == ["JSON nested deeper than 100 levels"]


def test_the_manifest_hashes_the_bytes_the_run_read(tmp_path, monkeypatch):
    import hashlib

    path = write_lines(tmp_path / "raw" / "a.jsonl", [GOOD, OTHER])
    as_read = hashlib.sha256(path.read_bytes()).hexdigest()
    real = pipeline.iter_file

    def then_appended(p, *args):
        yield from real(p, *args)
        with open(p, "ab") as fh:  # a writer appends once the reader is done: that line was not read
            fh.write(json.dumps(chat(("user", "late"), ("assistant", "line"))).encode() + b"\n")

    monkeypatch.setattr(pipeline, "iter_file", then_appended)
    result = run(tmp_path / "raw", tmp_path / "out", foundation_config())
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))
    assert result.counts["read"] == 2
    assert manifest["inputs"] == {display_name(path): as_read}
