"""`curate report` (with --compare) and `curate sample` on the small run folder of report_fixture."""

from __future__ import annotations

import csv
import io
import json
import re

import jsonschema
from click.testing import CliRunner

from curator.cli import cli
from curator.report import build_report
from curator.report.sample import allocate, draw_sample
from tests.conftest import ROOT
from tests.report_fixture import make_run


def test_compare_counts_records_and_distributions(tmp_path):
    prev = make_run(tmp_path / "prev", drop_rows=(8,))  # the previous run lacked b.jsonl:5 (fr, rust+go)
    cur = make_run(tmp_path / "cur")
    rep = build_report(cur, compare=prev)
    c = rep["compare"]
    assert {x["name"]: x["delta"] for x in c["counts"]} == {"read": 1, "kept": 1, "rejected": 0, "train": 1, "val": 0}
    assert c["records"] == {"measured": True, "added": 1, "removed": 0, "unchanged": 2, "moved_split": 0,
                            "added_samples": [{"ref": "b.jsonl:5", "content_hash": "h8"}], "removed_samples": []}
    assert [x for x in c["natural_languages"] if x["delta"]] == [{"key": "fr", "previous": 0, "current": 1, "delta": 1}]
    assert [(x["key"], x["delta"]) for x in c["code_languages"] if x["delta"]] == [("go", 1), ("rust", 1)]
    figures = {x["name"]: x for x in c["figures"]}
    assert figures["tokens.kept.total"]["delta"] == 300
    assert figures["quality.kept_high_quality_rate"] == {"name": "quality.kept_high_quality_rate", "previous": 0.5,
                                                         "current": 0.6667, "delta": 0.1667}
    assert c["config_changes"] == [] and c["version_changes"] == []
    jsonschema.validate(rep, json.loads((ROOT / "schemas" / "report.schema.json").read_text()))
    # and the other way round: the record is removed
    back = build_report(prev, compare=cur)["compare"]["records"]
    assert (back["added"], back["removed"], back["removed_samples"]) == (0, 1, [{"ref": "b.jsonl:5",
                                                                                "content_hash": "h8"}])


def test_compare_reports_config_changes_and_split_moves(tmp_path):
    prev = make_run(tmp_path / "prev")
    manifest = json.loads((prev / "manifest.json").read_text())
    manifest["config"]["tokens"]["context_length"] = 4096
    (prev / "manifest.json").write_text(json.dumps(manifest))
    import polars as pl

    ann = pl.read_parquet(prev / "annotations.parquet")
    ann.with_columns(pl.when(pl.col("ref") == "b.jsonl:1").then(pl.lit("train")).otherwise(pl.col("split"))
                     .alias("split")).write_parquet(prev / "annotations.parquet")
    c = build_report(make_run(tmp_path / "cur"), compare=prev)["compare"]
    assert c["config_changes"] == [{"key": "tokens.context_length", "previous": 4096, "current": 8192}]
    assert c["records"]["moved_split"] == 1


def test_cli_report_writes_formats_and_compare(tmp_path):
    prev = make_run(tmp_path / "prev", drop_rows=(8,))
    cur = make_run(tmp_path / "cur")
    runner = CliRunner()
    res = runner.invoke(cli, ["report", str(cur)])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == [str(cur / f"report.{f}") for f in ("json", "md", "html")]
    res = runner.invoke(cli, ["report", str(cur), "--compare", str(prev), "--output", "-", "--format", "md"])
    assert res.exit_code == 0, res.output
    assert "## Changes since previous run" in res.output and "**1 added**, **0 removed**" in res.output
    res = runner.invoke(cli, ["report", str(cur), "--output", str(tmp_path / "r" / "x.json")])
    assert res.exit_code == 0 and json.loads((tmp_path / "r" / "x.json").read_text())["schema_version"] == 1
    res = runner.invoke(cli, ["report", str(tmp_path / "missing")])
    assert res.exit_code == 1 and res.output.strip().endswith("not a run folder (no such directory)")


def test_allocate_is_proportional_with_one_each():
    assert allocate({"a": 100, "b": 10, "c": 1}, 10) == {"a": 8, "b": 1, "c": 1}
    assert allocate({"a": 5, "b": 1}, 10) == {"a": 5, "b": 1}
    assert allocate({"a": 3, "b": 3, "c": 3}, 2) == {"a": 1, "b": 1, "c": 0}
    assert sum(allocate({"a": 7, "b": 2, "c": 50}, 20).values()) == 20


def test_sample_is_stratified_and_has_empty_ratings(tmp_path):
    run = make_run(tmp_path / "run")
    rows = draw_sample(run, n=2, seed=0)
    # threshold 0.7 (manifest): 0.75 is borderline; the other two kept rows are de/low and en/high
    assert len(rows) == 2
    # the borderline stratum gets at least one; the one left goes to the first of two equal strata by name
    assert [r["stratum"] for r in rows] == ["borderline", "de / low <0.7"]
    everything = draw_sample(run, n=200)
    assert sorted((r["ref"], r["stratum"]) for r in everything) == [
        ("a.jsonl:1", "en / high >=0.9"), ("b.jsonl:1", "de / low <0.7"), ("b.jsonl:5", "borderline")]
    assert draw_sample(run, n=200, seed=0) == everything
    first = next(r for r in everything if r["ref"] == "a.jsonl:1")
    assert first["conversation"] == "[user] Write hello world in Python.\n\n[assistant] ```python\nprint('hello')\n```"
    assert first["code_langs"] == "python" and first["rating_1_to_5"] == "" and first["notes"] == ""


SHEET_COLUMNS = ["conversation", "stratum", "quality_score", "quality_flags", "rating_1_to_5", "correct_yes_no",
                 "helpful_yes_no", "safe_yes_no", "reviewer", "notes", "lang", "code_langs", "split", "ref", "sample_id"]


def test_cli_sample_writes_csv_and_html_with_the_same_columns(tmp_path):
    run = make_run(tmp_path / "run")
    res = CliRunner().invoke(cli, ["sample", str(run), "--n", "3", "--output", str(tmp_path / "review")])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO((tmp_path / "review" / "review_sample.csv").read_text())))
    assert len(rows) == 3 and list(rows[0]) == SHEET_COLUMNS
    # the score and the rule that put b.jsonl:1 in the low band sit beside its conversation
    low = next(r for r in rows if r["ref"] == "b.jsonl:1")
    assert (low["stratum"], low["quality_score"], low["quality_flags"]) == ("de / low <0.7", "0.5",
                                                                          "short_answer=2 (score)")
    html = (tmp_path / "review" / "review_sample.html").read_text()
    assert re.findall(r'<th class="c-[^"]*" data-col="([^"]+)"', html) == SHEET_COLUMNS
    assert html.count('<tr id="s') == 3 and "Write hello world in Python." in html
    # the strata as a small table: sampled of kept
    assert re.findall(r"<tr><td>([^<]+)</td><td class=\"n\">(\d+)</td><td class=\"n\">(\d+)</td></tr>", html) == [
        ("borderline", "1", "1"), ("de / low &lt;0.7", "1", "1"), ("en / high &gt;=0.9", "1", "1")]


def test_cli_sample_format_csv_writes_the_csv_alone_with_the_same_columns(tmp_path):
    run = make_run(tmp_path / "run")
    res = CliRunner().invoke(cli, ["sample", str(run), "--n", "2", "--format", "csv", "--output", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["review_sample.csv"]
    header = (tmp_path / "r" / "review_sample.csv").read_text().splitlines()[0]
    assert header.split(",") == SHEET_COLUMNS


def _set_scores(run, scores: dict[str, float], threshold: float | None = None):
    import polars as pl

    ann = pl.read_parquet(run / "annotations.parquet")
    ann = ann.with_columns(pl.Series("quality_score", [scores.get(r, s) for r, s in
                                                       zip(ann["ref"], ann["quality_score"])], pl.Float64))
    ann.write_parquet(run / "annotations.parquet")
    if threshold is not None:
        manifest = json.loads((run / "manifest.json").read_text())
        manifest["config"]["quality"]["high_quality_threshold"] = threshold
        (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_sample_gives_spare_room_to_the_borderline_stratum(tmp_path):
    # two borderline rows (0.72, 0.75) and one other: n=3 asks for all three, though the borderline
    # stratum's share of n=3 is one row
    run = _set_scores(make_run(tmp_path / "run"), {"a.jsonl:1": 0.72})
    rows = draw_sample(run, n=3)
    assert sorted((r["ref"], r["stratum"]) for r in rows) == [
        ("a.jsonl:1", "borderline"), ("b.jsonl:1", "de / low <0.7"), ("b.jsonl:5", "borderline")]
    assert [r["stratum"] for r in draw_sample(run, n=2)] == ["borderline", "de / low <0.7"]


def test_sample_honours_a_quality_threshold_of_zero(tmp_path):
    run = _set_scores(make_run(tmp_path / "run"), {}, threshold=0.0)
    rows = draw_sample(run, n=200)
    assert sorted((r["ref"], r["stratum"]) for r in rows) == [
        ("a.jsonl:1", "en / high >=0.9"), ("b.jsonl:1", "de / mid 0-0.9"), ("b.jsonl:5", "fr / mid 0-0.9")]
