"""`curate run`: every line accounted for, bad input becomes rejects, atomic and deterministic outputs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from curator.config import load_config
from curator.errors import CurateError
from curator.pipeline import run
from tests.conftest import HEAVY_STAGES, chat, write_lines


def foundation_config(*overrides: str):
    return load_config(None, [f"skip_stages={HEAVY_STAGES}", "gates.min_examples=null", *overrides])


def rejects(out: Path) -> dict[str, list[str]]:
    found = {}
    for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        found[record["ref"]] = record["reasons"]
    return found


def kept(out: Path) -> list[dict]:
    return [json.loads(l) for side in ("train", "val") for l in (out / f"{side}.jsonl").read_text(encoding="utf-8").splitlines()]


GOOD = chat(("user", "What is two plus two?"), ("assistant", "Two plus two is four."))


def test_every_bad_input_class_becomes_a_reject(tmp_path):
    raw = tmp_path / "raw"
    src = write_lines(
        raw / "bad.jsonl",
        [
            GOOD,
            b'{"messages": [',  # malformed JSON
            b"[1, 2]",  # array
            b"3.5",  # scalar
            b'{"messages": [{"role": "user", "content": "caf\xe9"}]}',  # invalid UTF-8
            b"",  # blank line
            b"[" * 100_000,  # deeply nested junk
            b'{"messages": {"role": "user"}}',  # wrong type
            b'{"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]}',
            b'{"messages": [{"role": "user", "content": null}, {"role": "assistant", "content": "y"}]}',
            b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "' + b"a" * 10_000_000 + b'"}]}',
        ],
    )
    # a UTF-8 BOM on the first line of a second file is removed, the record kept
    write_lines(raw / "bom.jsonl", [b"\xef\xbb\xbf" + json.dumps(chat(("user", "hi"), ("assistant", "hello"))).encode()])
    out = tmp_path / "out"
    result = run(raw, out, foundation_config("input.max_line_bytes=5000000"))
    assert result.counts["read"] == 12
    assert result.counts["kept"] + result.counts["rejected"] == 12
    name = src.as_posix()
    assert rejects(out) == {
        f"{name}:2": ["io.bad_json"],
        f"{name}:3": ["schema.not_object"],
        f"{name}:4": ["schema.not_object"],
        f"{name}:5": ["io.bad_utf8"],
        f"{name}:6": ["io.blank_line"],
        f"{name}:7": ["io.bad_json"],
        f"{name}:8": ["schema.bad_messages"],
        f"{name}:9": ["schema.bad_role"],
        f"{name}:10": ["schema.null_content"],
        f"{name}:11": ["io.line_too_long"],
    }
    assert sorted(r["messages"][0]["content"] for r in kept(out)) == ["What is two plus two?", "hi"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["with_warnings"] == 1


def test_invalid_utf8_line_is_kept_byte_exact_in_rejects(tmp_path):
    bad = b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}'
    write_lines(tmp_path / "raw" / "a.jsonl", [GOOD, bad])
    run(tmp_path / "raw", tmp_path / "out", foundation_config())
    record = json.loads((tmp_path / "out" / "rejects.jsonl").read_text().splitlines()[0])
    import base64

    assert base64.b64decode(record["raw_b64"]) == bad
    assert record["reasons"] == ["io.bad_utf8"]


def test_truncated_gzip_keeps_what_was_read_and_rejects_the_rest(tmp_path):
    records = [chat(("user", f"question {i} " * 30), ("assistant", f"answer {i} " * 30)) for i in range(200)]
    body = ("\n".join(json.dumps(r) for r in records) + "\n").encode()
    data = gzip.compress(body, mtime=0)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    result = run(raw, tmp_path / "out", foundation_config())
    found = rejects(tmp_path / "out")
    assert list(found.values()) == [["io.truncated_gzip"]]
    assert result.counts["kept"] == result.counts["read"] - 1
    assert 0 < result.counts["kept"] < 200


def test_gzip_jsonl_reads_like_plain(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.jsonl.gz").write_bytes(gzip.compress((json.dumps(GOOD) + "\n").encode()))
    result = run(raw, tmp_path / "out", foundation_config())
    assert result.counts == {"read": 1, "kept": 1, "rejected": 0, "train": result.counts["train"], "val": result.counts["val"], "with_warnings": 0}


def test_not_a_gzip_file_is_one_reject_and_the_run_goes_on(tmp_path):
    raw = tmp_path / "raw"
    write_lines(raw / "a.jsonl", [GOOD])
    (raw / "fake.jsonl.gz").write_bytes(b"this is not gzip\n")
    result = run(raw, tmp_path / "out", foundation_config())
    assert (result.counts["read"], result.counts["kept"]) == (2, 1)
    assert rejects(tmp_path / "out") == {f"{(raw / 'fake.jsonl.gz').as_posix()}:1": ["io.bad_gzip"]}


def test_exact_duplicates_point_at_the_first_copy(tmp_path):
    write_lines(tmp_path / "raw" / "a.jsonl", [GOOD, chat(("user", "other"), ("assistant", "thing"))])
    # same conversation after normalisation: CRLF and trailing spaces
    twin = chat(("user", "What is two plus two?  "), ("assistant", "Two plus two is four.\r\n"))
    write_lines(tmp_path / "raw" / "b.jsonl", [twin])
    run(tmp_path / "raw", tmp_path / "out", foundation_config())
    record = json.loads((tmp_path / "out" / "rejects.jsonl").read_text().splitlines()[0])
    assert record["reasons"] == ["dup.exact"]
    assert record["details"] == [f"duplicate of {(tmp_path / 'raw' / 'a.jsonl').as_posix()}:1"]


def test_normalisation(tmp_path):
    # one trailing space (two before a line of the same paragraph are a Markdown hard line break, kept)
    write_lines(tmp_path / "raw" / "a.jsonl", [chat(("user", "Cafe\u0301 \r\nline two\t\n"), ("assistant", "ok"))])
    run(tmp_path / "raw", tmp_path / "out", foundation_config())
    assert kept(tmp_path / "out")[0]["messages"][0]["content"] == "Caf\u00e9\nline two"


def test_out_holding_other_files_is_refused_even_with_force(tmp_path):
    write_lines(tmp_path / "raw" / "a.jsonl", [GOOD])
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    for force in (False, True):
        with pytest.raises(CurateError) as caught:
            run(tmp_path / "raw", out, foundation_config(), force=force)
        assert str(caught.value) == (
            f"{out}: folder is not empty and is not an earlier curate output (no manifest.json); "
            "--force replaces only an earlier run, choose another OUT"
        )
    assert [p.name for p in out.iterdir()] == ["precious.txt"]


def test_an_earlier_run_is_replaced_only_with_force(tmp_path):
    write_lines(tmp_path / "raw" / "a.jsonl", [GOOD])
    out = tmp_path / "out"
    run(tmp_path / "raw", out, foundation_config())
    (out / "notes.txt").write_text("inside an earlier run: replaced with it")
    with pytest.raises(CurateError) as caught:
        run(tmp_path / "raw", out, foundation_config())
    assert str(caught.value) == f"{out}: holds an earlier curate run; use --force to replace it"
    run(tmp_path / "raw", out, foundation_config(), force=True)
    assert not (out / "notes.txt").exists() and (out / "manifest.json").exists()


def test_a_failed_run_leaves_no_partial_output(tmp_path, monkeypatch):
    write_lines(tmp_path / "raw" / "a.jsonl", [GOOD])
    import curator.pipeline as pipeline

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pipeline, "_write_rejects", boom)
    with pytest.raises(OSError):
        run(tmp_path / "raw", tmp_path / "out", foundation_config())
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]


def test_same_input_gives_byte_identical_outputs(tmp_path):
    records = [chat(("user", f"q{i}"), ("assistant", f"a{i}")) for i in range(300)]
    write_lines(tmp_path / "raw" / "a.jsonl", records + [b"junk"])
    run(tmp_path / "raw", tmp_path / "o1", foundation_config())
    run(tmp_path / "raw", tmp_path / "o2", foundation_config())
    names = sorted(p.name for p in (tmp_path / "o1").iterdir())
    assert "manifest.json" in names and "annotations.parquet" in names
    for name in names:
        assert (tmp_path / "o1" / name).read_bytes() == (tmp_path / "o2" / name).read_bytes(), name


def test_split_is_stable_when_data_is_added(tmp_path):
    first = [chat(("user", f"q{i}"), ("assistant", f"a{i}")) for i in range(500)]
    more = [chat(("user", f"new{i}"), ("assistant", f"b{i}")) for i in range(500)]
    write_lines(tmp_path / "r1" / "a.jsonl", first)
    write_lines(tmp_path / "r2" / "a.jsonl", first)
    write_lines(tmp_path / "r2" / "b.jsonl", more)
    run(tmp_path / "r1", tmp_path / "o1", foundation_config())
    run(tmp_path / "r2", tmp_path / "o2", foundation_config())

    def sides(out):
        return {r["id"]: side for side in ("train", "val") for r in map(json.loads, (out / f"{side}.jsonl").read_text().splitlines())}

    before, after = sides(tmp_path / "o1"), sides(tmp_path / "o2")
    assert all(after[k] == v for k, v in before.items())
    assert 30 <= sum(v == "val" for v in before.values()) <= 70  # about 10% of 500


def test_manifest_records_inputs_outputs_and_config(tmp_path):
    src = write_lines(tmp_path / "raw" / "a.jsonl", [GOOD])
    run(tmp_path / "raw", tmp_path / "out", foundation_config("split.val_fraction=0.2"))
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    import hashlib

    assert manifest["inputs"] == {src.as_posix(): hashlib.sha256(src.read_bytes()).hexdigest()}
    for name, digest in manifest["outputs"].items():
        assert hashlib.sha256((tmp_path / "out" / name).read_bytes()).hexdigest() == digest
    assert manifest["config"]["split"]["val_fraction"] == 0.2
    assert manifest["counts"]["read"] == 1
    assert [f["stage"] for f in manifest["funnel"]] == ["read", "validate", "normalize", "dedup_exact", "split"]


def test_other_shapes_are_converted(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "alpaca.json").write_text(json.dumps([{"instruction": "Say hi.", "input": "", "output": "Hi!"}]))
    write_lines(raw / "sharegpt.jsonl", [{"conversations": [{"from": "human", "value": "Yo"}, {"from": "gpt", "value": "Hey"}]}])
    run(raw, tmp_path / "out", foundation_config())
    assert sorted(r["messages"][0]["content"] for r in kept(tmp_path / "out")) == ["Say hi.", "Yo"]


def test_config_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "curate.yaml"
    path.write_text("split:\n  val_fraction: 2\n")
    with pytest.raises(CurateError, match=r"curate.yaml: split.val_fraction: Input should be less than or equal to 1"):
        load_config(path)
    path.write_text("splitt: {}\n")
    with pytest.raises(CurateError, match=r"curate.yaml: splitt: Extra inputs are not permitted"):
        load_config(path)


def test_real_data_is_accounted_for(real_data, tmp_path):
    result = run(real_data, tmp_path / "out", foundation_config())
    assert result.counts["read"] == 20404
    assert result.counts["kept"] + result.counts["rejected"] == 20404
    found = rejects(tmp_path / "out")
    alpaca = [ref for ref, reasons in found.items() if "llamafactory_alpaca_en_demo" in ref]
    assert len(alpaca) == 14 and all(found[ref] == ["dup.exact"] for ref in alpaca)
    empty = sorted(ref.rsplit("/", 1)[1] for ref, reasons in found.items() if reasons == ["structure.empty_content"])
    assert empty == ["codealpaca_2k.jsonl:1860", "codealpaca_2k.jsonl:238"]
