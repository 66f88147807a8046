"""The engines (curator/engine.py): local and stream write the same bytes, stream leaves no shard behind.

The stream runs use small batches, so that there are several shards, shards where every row is
rejected early, and rows a global stage rejects in another shard than the copy it keeps.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from curator import columns as C
from curator import engine as E
from curator.cli import cli
from curator.config import load_config
from curator.io.readers import discover
from curator.pipeline import run
from curator.stages import registry
from tests.conftest import CHAT_DATA, HEAVY_STAGES, NATIVE_DATA, ROOT, chat, write_lines

COMPARED = ("train.jsonl", "val.jsonl", "rejects.jsonl", "duplicates.jsonl", "annotations.parquet")
# The language detector's cache lives for one shard: its count of distinct samples is per shard
# (docs/scaling.md). Every other figure of the manifest is the same under both engines.
PER_SHARD = ("summaries", "language", "distinct_samples_by_decision")


def run_both(raw: Path | str, tmp: Path, batch_rows: int, *overrides: str, engines=("local", "stream")) -> dict[str, Path]:
    outs = {}
    for engine in engines:
        outs[engine] = tmp / engine
        cfg = load_config(None, [f"engine.name={engine}", f"engine.batch_rows={batch_rows}", *overrides])
        run(raw, outs[engine], cfg)
    return outs


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def comparable(m: dict) -> dict:
    """The manifest without what may differ between engines: the engine, per-shard work counts, and
    the sha256s (compared through the files themselves)."""
    m = json.loads(json.dumps(m))
    m.pop("engine")
    m.pop("outputs")
    *path, key = PER_SHARD
    node = m
    for part in path:
        node = node.get(part) or {}
    node.pop(key, None)
    return m


def assert_same_outputs(outs: dict[str, Path]) -> None:
    """Every engine's run in `outs` wrote what the local one did."""
    local = outs["local"]
    for engine, other in outs.items():
        for name in COMPARED:
            assert (local / name).exists() == (other / name).exists(), name
            if (local / name).exists():
                assert (local / name).read_bytes() == (other / name).read_bytes(), f"{name} differs under {engine}"
        assert comparable(manifest(local)) == comparable(manifest(other))
        assert manifest(local)["outputs"] == manifest(other)["outputs"]


def lines_in(out: Path) -> int:
    return sum(1 for side in ("train", "val", "rejects") for _ in (out / f"{side}.jsonl").open(encoding="utf-8"))


@pytest.fixture(scope="module")
def golden_runs(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("engines")
    cwd = os.getcwd()
    os.chdir(ROOT)  # source_file paths are relative, as in the golden run
    try:
        return run_both("data_samples/raw", tmp, 37)
    finally:
        os.chdir(cwd)


def test_the_golden_sample_gives_the_same_bytes_under_both_engines(golden_runs):
    assert_same_outputs(golden_runs)
    engines = {name: manifest(out)["engine"] for name, out in golden_runs.items()}
    assert engines == {
        "local": {"name": "local", "chosen_by": "engine.name", "batch_rows": None, "shards": 1, "workers": 1},
        "stream": {"name": "stream", "chosen_by": "engine.name", "batch_rows": 37, "shards": 9, "workers": 1},
    }


def test_the_stream_run_of_the_golden_sample_is_the_golden_output(golden_runs):
    for name in ("train.jsonl", "val.jsonl", "rejects.jsonl", "duplicates.jsonl"):
        expected = (ROOT / "data_samples" / "expected" / name).read_text(encoding="utf-8")
        assert (golden_runs["stream"] / name).read_text(encoding="utf-8") == expected, name


def test_a_per_shard_count_is_the_sum_of_the_shards(golden_runs):
    local, stream = (manifest(golden_runs[e])["summaries"]["language"]["distinct_samples_by_decision"]
                     for e in ("local", "stream"))
    assert set(local) == set(stream)
    assert all(stream[k] >= local[k] for k in local)  # a sample in two shards is counted in each


@pytest.mark.parametrize(
    "path, batch_rows",
    [
        (NATIVE_DATA / "fastchat" / "dummy_conversation.json", 150),  # ShareGPT, a .json array
        (NATIVE_DATA / "alpaca_zh_sample.json", 400),  # Alpaca, Chinese
        (CHAT_DATA / "llamafactory_glaive_toolcall_en_demo.jsonl", 120),  # tool calls
        (CHAT_DATA / "exercism_rust.chat.jsonl", 40),  # chat, code
    ],
    ids=lambda p: p.name if isinstance(p, Path) else str(p),
)
def test_shared_files_give_the_same_bytes_under_both_engines(tmp_path, path, batch_rows):
    if not path.exists():
        pytest.skip(f"{path} is not available")
    outs = run_both(path, tmp_path, batch_rows, "gates.min_examples=null")
    assert_same_outputs(outs)
    assert manifest(outs["stream"])["engine"]["shards"] >= 2


BAD_LINES = [
    b'{"messages": [',  # malformed JSON
    b"[1, 2]",
    b"3.5",
    b'{"messages": [{"role": "user", "content": "caf\xe9"}]}',  # invalid UTF-8
    b"",
    b'{"messages": {"role": "user"}}',
    b'{"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]}',
]


def test_bad_input_is_accounted_for_alike_under_both_engines(tmp_path):
    good = [chat(("user", f"What is {i} plus {i}?"), ("assistant", f"{i} plus {i} is {2 * i}.")) for i in range(9)]
    # batches of 3: the bad lines fill whole shards, and the copies of row 0 sit in later shards
    lines = [*good[:3], *BAD_LINES, good[0], *good[3:], good[0], b"junk"]
    write_lines(tmp_path / "raw" / "a.jsonl", lines)
    write_lines(tmp_path / "raw" / "b.jsonl", [b"not json"] * 4)
    outs = run_both(tmp_path / "raw", tmp_path, 3, f"skip_stages={HEAVY_STAGES}", "gates.min_examples=null")
    assert_same_outputs(outs)
    for out in outs.values():
        assert lines_in(out) == len(lines) + 4 == manifest(out)["counts"]["read"]
        assert manifest(out)["counts"]["kept"] == 9
    assert manifest(outs["stream"])["engine"]["shards"] == 8  # 23 lines; the 2nd and 3rd shards all rejects


def test_an_input_of_rejects_only_or_of_nothing_is_alike_under_both_engines(tmp_path):
    write_lines(tmp_path / "bad" / "a.jsonl", [b"junk"] * 5)
    outs = run_both(tmp_path / "bad", tmp_path / "bad_out", 2, "gates.min_examples=null")
    assert_same_outputs(outs)
    assert manifest(outs["stream"])["counts"] == manifest(outs["local"])["counts"]
    assert manifest(outs["stream"])["counts"]["rejected"] == 5
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.jsonl").write_bytes(b"")
    outs = run_both(tmp_path / "empty", tmp_path / "empty_out", 2, "gates.min_examples=null")
    assert_same_outputs(outs)
    assert manifest(outs["stream"])["engine"]["shards"] == 1  # one empty shard: every stage still runs


def _names_beside(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}"))


@pytest.mark.parametrize("stage", ["tokens", "dedup_minhash"])
def test_a_stream_run_that_fails_leaves_no_shard_and_out_as_it_was(tmp_path, monkeypatch, stage):
    raw = write_lines(tmp_path / "raw" / "a.jsonl", [chat(("user", f"q{i} of the set"), ("assistant", f"a{i}")) for i in range(12)]).parent
    out = tmp_path / "out"
    overrides = ["engine.name=stream", "engine.batch_rows=4", "gates.min_examples=null"]
    run(raw, out, load_config(None, overrides))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    module = registry.BY_NAME[stage].implementation()
    real = module.run
    calls = []

    def fails_on_the_second_shard(df, ctx):
        calls.append(df.height)
        shard_files = list(out.parent.glob(f".{out.name}.tmp-*/{E.SHARD_FOLDER}/*.parquet"))
        assert shard_files  # the shards exist while the stages run
        if len(calls) == 2 or stage == "dedup_minhash":
            raise RuntimeError("stage failed")
        return real(df, ctx)

    monkeypatch.setattr(module, "run", fails_on_the_second_shard)
    with pytest.raises(RuntimeError, match="^stage failed$"):
        run(raw, out, load_config(None, overrides), force=True)
    assert calls == ([4, 4] if stage == "tokens" else [12])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _names_beside(out) == []  # no staging folder, no shard, no lock


def test_discover_never_reads_the_shards_of_a_run_writing_into_raw(tmp_path, monkeypatch):
    raw = write_lines(tmp_path / "raw" / "a.jsonl", [chat(("user", f"q{i}"), ("assistant", f"a{i}")) for i in range(6)]).parent
    out = raw / "out"  # OUT inside RAW: its staging folder, shards and all, lies under RAW too
    module = registry.BY_NAME["tokens"].implementation()
    real, seen = module.run, []

    def looks_at_raw(df, ctx):
        assert list(raw.glob(f".out.tmp-*/{E.SHARD_FOLDER}/*.parquet"))
        seen.append([p.name for p in discover(raw, exclude=out).files])
        return real(df, ctx)

    monkeypatch.setattr(module, "run", looks_at_raw)
    run(raw, out, load_config(None, ["engine.name=stream", "engine.batch_rows=2", "gates.min_examples=null"]))
    assert seen == [["a.jsonl"]] * 3


def test_the_engine_is_chosen_by_input_size_unless_named(tmp_path):
    files = [write_lines(tmp_path / "a.jsonl", [b"x" * 99]), tmp_path / "b.jsonl.gz"]
    files[1].write_bytes(b"y" * 25)
    assert E.input_bytes(files) == 100 + 4 * 25
    small = load_config(None, ["engine.auto_stream_bytes=201"])
    assert E.choose_engine(files, small) == ("local", "auto: 200 input bytes < engine.auto_stream_bytes 201")
    large = load_config(None, ["engine.auto_stream_bytes=200"])
    assert E.choose_engine(files, large) == ("stream", "auto: 200 input bytes >= engine.auto_stream_bytes 200")
    named = load_config(None, ["engine.name=local", "engine.auto_stream_bytes=0"])
    assert E.choose_engine(files, named) == ("local", "engine.name")
    defaults = load_config().engine
    assert (defaults.name, defaults.batch_rows, defaults.auto_stream_bytes) == ("auto", 50_000, 1_000_000_000)


def test_the_engine_stays_out_of_the_config_the_manifest_records(tmp_path):
    assert "engine" not in load_config(None, ["engine.name=stream"]).resolved()
    result = CliRunner().invoke(cli, ["config", "-s", "engine.batch_rows=7"])
    assert "\nengine:\n" in result.stdout and "  batch_rows: 7\n" in result.stdout
    result = CliRunner().invoke(cli, ["run", "x", "y", "-s", "engine.name=spark"])
    assert result.exit_code != 0 and "engine.name" in result.stderr and "'stream'" in result.stderr


def test_curate_run_takes_the_engine_as_an_option(tmp_path):
    raw = write_lines(tmp_path / "raw" / "a.jsonl", [chat(("user", f"q{i}"), ("assistant", f"a{i}")) for i in range(5)]).parent
    quick = [f"skip_stages={HEAVY_STAGES}", "gates.min_examples=null"]
    args = ["run", str(raw), str(tmp_path / "o1"), "--quiet", "--engine", "stream", "-s", "engine.batch_rows=2"]
    result = CliRunner().invoke(cli, [*args, *(x for o in quick for x in ("-s", o))])
    assert result.exit_code == 0, result.output
    assert manifest(tmp_path / "o1")["engine"] == {"name": "stream", "chosen_by": "engine.name", "batch_rows": 2, "shards": 3, "workers": 1}
    args = ["run", str(raw), str(tmp_path / "o2"), "--quiet", "-s", "engine.auto_stream_bytes=1"]
    result = CliRunner().invoke(cli, [*args, *(x for o in quick for x in ("-s", o))])
    assert result.exit_code == 0, result.output
    assert manifest(tmp_path / "o2")["engine"]["name"] == "stream"
    assert manifest(tmp_path / "o2")["engine"]["chosen_by"].startswith("auto: ")
    args = ["run", str(raw), str(tmp_path / "o3"), "--quiet"]
    result = CliRunner().invoke(cli, [*args, *(x for o in quick for x in ("-s", o))])
    assert manifest(tmp_path / "o3")["engine"]["name"] == "local"


def test_a_stream_run_shows_one_bar_per_row_stage(tmp_path, monkeypatch):
    from tests.test_progress import FakeProgress

    progress = FakeProgress()
    monkeypatch.setattr("curator.pipeline.Progress", lambda enabled: progress)
    raw = write_lines(tmp_path / "raw" / "a.jsonl", [chat(("user", f"q{i}"), ("assistant", f"a{i}")) for i in range(5)] + [b"junk"]).parent
    run(raw, tmp_path / "out", load_config(None, ["engine.name=stream", "engine.batch_rows=2", "gates.min_examples=null",
                                                  "skip_stages=[secrets,code_language,tokens,quality,dedup_minhash,select]"]))
    assert progress.tasks == [
        ("read + validate", None, [6]),
        ("normalize (3 shards)", 5, [2, 2, 1]),
        ("language (3 shards)", 5, [2, 2, 1]),
    ]


def test_every_row_stage_with_a_summary_can_merge_it_from_shards():
    for stage in registry.STAGES:
        if stage.kind == "row" and not stage.on_read and stage.summary is not None:
            assert hasattr(stage.implementation(), "merge_summary"), stage.name


def test_the_annotations_are_freed_before_the_reports_read_them_back(tmp_path, monkeypatch):
    """The reports load annotations.parquet themselves: the pipeline's frame of every record must be
    gone by then, or the run holds two."""
    import weakref

    from curator import pipeline, report

    held, seen = [], []
    write_records, write_reports = pipeline.write_records, report.write_reports

    def remembered(*args, **kwargs):
        annotations = write_records(*args, **kwargs)
        held.append(weakref.ref(annotations))
        return annotations

    def checked(out_dir, *args, **kwargs):
        seen.append([ref() is None for ref in held])
        return write_reports(out_dir, *args, **kwargs)

    monkeypatch.setattr(pipeline, "write_records", remembered)
    monkeypatch.setattr(report, "write_reports", checked)
    raw = write_lines(tmp_path / "raw" / "a.jsonl", [chat(("user", f"q{i}"), ("assistant", f"a{i}")) for i in range(5)])
    run(raw.parent, tmp_path / "out", load_config(None, ["engine.name=stream", "engine.batch_rows=2",
                                                         "gates.min_examples=null", f"skip_stages={HEAVY_STAGES}"]))
    assert seen == [[True]]


def test_batches_are_put_in_one_chunk_per_column_as_one_frame_built_whole():
    import polars as pl

    from curator import columns as C

    whole = pl.DataFrame({"row": [0, 1, 2, 3, 4], "lang": ["en", None, "de", "fr", None], "score": [0.5, 1.0, None, 0.25, 0.0]})
    batches = [whole.slice(0, 2), whole.slice(2, 1).drop("lang"), whole.slice(3, 2)]
    got = C.concat_in_one_chunk(batches)
    assert batches == []  # emptied: the batches' chunks are not held beside the copy
    assert got.n_chunks("all") == [1, 1, 1]
    assert got.select(whole.columns).to_dict(as_series=False) == {
        "row": [0, 1, 2, 3, 4], "lang": ["en", None, None, "fr", None], "score": [0.5, 1.0, None, 0.25, 0.0]}


def test_near_dup_reads_the_text_shard_by_shard_under_stream_and_keeps_it_on_files(tmp_path, monkeypatch):
    from curator.stages import dedup_minhash

    answer = " ".join(f"word{i}" for i in range(80))
    lines = [chat(("user", f"q{i} of the set"), ("assistant", answer.replace(f" word{i} ", " changed ") if i % 3 == 0
                                                    else f"a{i} of the set")) for i in range(12)]
    raw = write_lines(tmp_path / "raw" / "a.jsonl", lines).parent
    seen = {}
    real = dedup_minhash.find_near_duplicates

    def watched(df, cfg, advance=lambda n: None, source=None, store=None):
        seen["columns"] = df.columns
        read = source.read if source is not None else None
        seen["chunks"] = [read(k).len() for k in range(source.n_chunks)] if read else None
        result = real(df, cfg, advance, source, store)
        seen["files"] = sorted({p.name.split(".", 1)[1] for p in store.folder.glob("*.npy")}) if store else None
        seen["scratch"] = store.folder if store else None
        return result

    monkeypatch.setattr(dedup_minhash, "find_near_duplicates", watched)
    outs = run_both(raw, tmp_path, 4, "gates.min_examples=null")
    assert_same_outputs(outs)
    # the last run was stream's: 3 shards of 4 records, no text in the frame, the kept arrays on files
    assert C.MESSAGES not in seen["columns"]
    assert seen["chunks"] == [4, 4, 4]
    assert seen["files"] == ["bands.npy", "matrix.npy", "offsets.npy", "values.npy"]
    assert not seen["scratch"].exists()  # removed when the stage ends
    assert manifest(outs["stream"])["summaries"]["dedup_minhash"]["near_duplicates_rejected"] == 3
