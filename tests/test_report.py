"""report.json / report.md / report.html of a small, exact run folder (tests/report_fixture.py)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import jsonschema
import pytest

from curator.errors import CurateError
from curator.report import build_report, dumps_json, render, write_reports
from curator.report.highlight import excerpt, locate
from curator.report.model import schema_text
from tests.conftest import ROOT
from tests.report_fixture import make_run

SCHEMA_PATH = ROOT / "schemas" / "report.schema.json"


@pytest.fixture
def run_dir(tmp_path):
    return make_run(tmp_path / "run")


@pytest.fixture
def rep(run_dir):
    return build_report(run_dir)


def test_counts_and_funnel(rep):
    assert rep["counts"] == {"read": 9, "kept": 3, "rejected": 6, "train": 2, "val": 1,
                             "consistent_with_manifest": True}
    assert [(s["step"], s["count"], s["removed"]) for s in rep["funnel"]] == [
        ("read", 9, None), ("validate", 7, 2), ("dedup_exact", 6, 1), ("tokens", 5, 1), ("quality", 4, 1),
        ("dedup_minhash", 3, 1), ("split", 3, 0), ("kept", 3, 0), ("train", 2, None), ("val", 1, None)]
    assert rep["funnel"][1]["share_of_read"] == 0.7778


def test_manifest_counts_that_disagree_with_the_columns_are_flagged(run_dir):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["counts"]["kept"] = 4
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    assert build_report(run_dir)["counts"]["consistent_with_manifest"] is False


def test_gates_carry_a_signed_margin_and_missing_families(rep):
    g = rep["gates"]
    assert g["all_passed"] is False and g["n_failed"] == 1
    assert [(x["name"], x["passed"], x["margin"]) for x in g["items"]] == [
        ("quality.high_quality_rate", True, 0.066667), ("size.min_examples", False, -9997.0)]
    assert [m["family"] for m in g["not_measured"]] == ["language", "tokens"]


def test_reject_reasons_count_rows_and_carry_samples(rep):
    items = {r["code"]: r for r in rep["rejects"]["items"]}
    assert sorted(items) == ["dup.exact", "dup.near", "json.invalid", "quality.refusal", "schema.bad_role",
                             "tokens.over_budget"]
    assert all(r["count"] == 1 and r["first_reason"] == 1 for r in items.values())
    bad_role = items["schema.bad_role"]["samples"][0]
    assert bad_role["ref"] == "a.jsonl:2" and bad_role["highlight"] == "messages[1].role"
    assert [(t["role"], t["highlight"], t["field"]) for t in bad_role["turns"]] == [
        ("user", False, None), ("bot", True, "role")]
    refusal = items["quality.refusal"]["samples"][0]
    assert refusal["highlight"] == "messages[1].content"
    assert refusal["turns"][1]["text"] == "As an AI language model, I cannot do that."
    invalid = items["json.invalid"]["samples"][0]
    assert invalid["turns"] == [{"role": None, "text": "{not json", "highlight": True, "field": None}]
    assert items["dup.exact"]["samples"][0]["highlight"] is None


def test_quality_section(rep):
    q = rep["quality"]
    assert q["scored_rows"] == 5 and q["kept_high_quality_rate"] == 0.6667 and q["high_quality_threshold"] == 0.7
    assert q["kept_mean_score"] == round((0.9 + 0.5 + 0.75) / 3, 4)
    # 0.9 -> bin 18, 0.5 -> bin 10, 0.75 -> bin 15 (kept); 0.1 -> bin 2, 0.8 -> bin 16 (rejected)
    assert [i for i, c in enumerate(q["histogram"]["kept"]) if c] == [10, 15, 18]
    assert [i for i, c in enumerate(q["histogram"]["rejected"]) if c] == [2, 16]
    assert q["rules"] == [
        {"rule": "short_answer", "action": "score", "hits": 2, "hit_rate": 0.4, "kept_hits": 1},
        {"rule": "refusal", "action": "reject", "hits": 1, "hit_rate": 0.2, "kept_hits": 0},
    ]


def test_pipeline_rule_figures_take_precedence(run_dir):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["summaries"]["quality"] = {"rules": [
        {"rule": "short_answer", "action": "score", "hits": 2, "rate": 0.4},
        {"rule": "lorem_ipsum", "action": "reject", "hits": 0, "rate": 0.0}]}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    rules = build_report(run_dir)["quality"]["rules"]
    assert [(r["rule"], r["hits"], r["kept_hits"]) for r in rules] == [("short_answer", 2, 1), ("lorem_ipsum", 0, 0)]


def test_languages_tokens_duplicates_split(rep):
    assert [(x["key"], x["count"]) for x in rep["languages"]["natural"]["items"]] == [("de", 1), ("en", 1), ("fr", 1)]
    code = rep["languages"]["code"]
    assert code["examples_with_code"] == 2
    assert [(x["key"], x["share"]) for x in code["items"]] == [("go", 0.5), ("python", 0.5), ("rust", 0.5)]
    t = rep["tokens"]
    assert t["budget"] == 8192 and t["over_budget_rows"] == 1
    assert t["kept"] == {"examples": 3, "total": 420, "trained": 268, "mean": 140.0, "p50": 100, "p90": 300,
                         "p99": 300, "max": 300}
    assert t["histogram"]["edges"][1] == 512 and t["histogram"]["kept"][0] == 3
    assert t["histogram"]["rejected"][17] == 1  # 9,000 tokens in [8704, 9216)
    d = rep["duplicates"]
    assert (d["exact_rejected"], d["near_rejected"], d["exact_groups"], d["near_clusters"]) == (1, 1, 1, 1)
    near = d["largest_near"][0]
    assert (near["id"], near["size"], near["min_jaccard"], d["near_min_jaccard"]) == ("7", 2, 0.85, 0.85)
    assert [(m["ref"], m["kept"], m["jaccard"], m["prompt"]) for m in near["members"]] == [
        ("a.jsonl:1", True, None, "Write hello world in Python."),
        ("a.jsonl:4", False, 0.85, "Write hello world in Python please.")]
    md, html = render(rep, "md"), render(rep, "html")
    assert ("near duplicates rejected: 1 (1 clusters; lowest Jaccard of a removed copy to its kept copy: 0.85)"
            in md)
    assert "- cluster 7 (2 rows, lowest J 0.85): " in md
    assert "(1 clusters; lowest Jaccard of a removed copy to its kept copy: 0.85)" in html
    assert "<b>cluster 7</b> &middot; 2 rows &middot; lowest J=0.85" in html
    s = rep["split"]
    assert (s["train"], s["val"], s["content_hash_in_both"], s["near_clusters_in_both"]) == (2, 1, 0, 0)
    assert rep["cost"]["estimate"]["epochs"] == 3
    assert rep["sources"][0] == {"source_file": "a.jsonl", "read": 4, "kept": 1, "rejected": 3, "train": 1,
                                 "val": 0, "kept_share": 0.25}
    assert rep["not_measured"] == ["gates.language", "gates.tokens"]


def test_partial_pipeline_says_not_measured(tmp_path):
    rep = build_report(make_run(tmp_path / "run", full=False))
    assert rep["not_measured"] == ["quality", "tokens", "cost", "languages.natural", "languages.code",
                                   "duplicates.near", "gates.quality", "gates.language", "gates.size",
                                   "gates.tokens"]
    md = render(rep, "md")
    assert "_Quality scores: not measured" in md and "_Token counts: not measured" in md
    assert "not measured" in render(rep, "html")


def test_reports_validate_against_the_checked_in_schema(tmp_path, rep):
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.validate(rep, schema)
    jsonschema.validate(build_report(make_run(tmp_path / "partial", full=False)), schema)
    broken = json.loads(json.dumps(rep))
    broken["schema_version"] = 2
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_checked_in_schema_is_current():
    assert SCHEMA_PATH.read_text() == schema_text(), "run: python -m curator.report.model > schemas/report.schema.json"


def test_write_reports_writes_three_files_and_rebuild_is_identical(run_dir):
    rep = write_reports(run_dir)
    assert (run_dir / "report.json").read_text() == dumps_json(rep)
    assert json.loads((run_dir / "report.json").read_text()) == build_report(run_dir)
    md = (run_dir / "report.md").read_text()
    assert md.index("## Gates") < md.index("## Funnel"), "gates come first"
    assert "| ❌ | `size.min_examples` | 3 | 10,000 | -9,997 |" in md
    assert "> **bot**: Hello!" in md  # the offending turn of the bad-role sample


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.tags, self.marks, self._in_mark = set(), [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.ids.update(v for k, v in attrs if k == "id")
        self._in_mark = tag == "mark"

    def handle_data(self, data):
        if self._in_mark:
            self.marks.append(data)
            self._in_mark = False


def test_html_is_self_contained_with_sections_and_marks(rep):
    html = render(rep, "html")
    p = _Collect()
    p.feed(html)
    for section in ("gates", "funnel", "rejects", "quality", "languages", "tokens", "duplicates", "split",
                    "sources", "cost", "config"):
        assert section in p.ids and f'href="#{section}"' in html
    assert p.tags.count("svg") == 7  # funnel, reasons, quality, natural, code, tokens, split
    # the bad role, the refusal phrase (not the whole answer), and the word a near duplicate adds
    assert p.marks[:4] == [" please", "{not json", "As an AI language model, I cannot", "bot"]
    assert p.marks[-1] == " please"
    assert not re.search(r'(src|href)="(https?:)?//', html), "no network references"
    assert "<link" not in html


def test_html_escapes_text_from_the_data(tmp_path):
    from tests import report_fixture

    original = report_fixture.RECORDS[5]
    report_fixture.RECORDS[5] = report_fixture.conv("x", "<script>alert(1)</script>")
    try:
        html = render(build_report(make_run(tmp_path / "run")), "html")
    finally:
        report_fixture.RECORDS[5] = original
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_locate_and_excerpt_rules():
    rec = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                        {"role": "assistant", "content": "a"}], "meta": {"k": 1}}
    assert locate("schema.bad_role", "messages[1].role: bad", rec) == {"path": "messages[1].role", "turn": 1,
                                                                      "field": "role"}
    assert locate("quality.echo", "echoes the prompt", rec)["turn"] == 2
    assert locate("dup.prompt_conflict", "", rec)["turn"] == 1
    assert locate("quality.x", "turn 0 has a problem", rec)["turn"] == 0
    assert locate("schema.bad_meta", "meta: Input should be an object", rec)["path"] == "meta"
    assert locate("dup.exact", "duplicate of f:1", rec) is None
    _, turns = excerpt("structure.control_char", "messages[1].content: U+0000", {"messages": [
        {"role": "user", "content": "nul\x00byte"}]}, "")
    assert turns[0]["text"] == "nul\u2400byte"  # shown, not written raw into the report


def test_not_a_run_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(CurateError, match="missing annotations.parquet"):
        (tmp_path / "x").mkdir()
        (tmp_path / "x" / "manifest.json").write_text("{}")
        build_report(tmp_path / "x")
    with pytest.raises(CurateError, match="no such directory"):
        build_report(tmp_path / "nope")


def test_edited_split_file_is_detected(run_dir):
    lines = (run_dir / "train.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines]
    records[0]["id"] = "not-the-hash"
    (run_dir / "train.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    with pytest.raises(CurateError, match=r"train.jsonl:1: id not-the-hash does not match content_hash h0"):
        build_report(run_dir)



def test_rejects_are_read_in_chunks_and_only_the_asked_refs_kept(run_dir, monkeypatch):
    from curator.report import load

    lines = [json.loads(x) for x in (run_dir / "rejects.jsonl").read_text().splitlines()]
    refs = {lines[0]["ref"], lines[-1]["ref"]}
    whole, whole_report = load.load_run(run_dir).rejects_of(refs), build_report(run_dir)
    monkeypatch.setattr(load, "REJECTS_CHUNK_BYTES", 1)  # a line per chunk
    chunked = load.load_run(run_dir).rejects_of(refs)
    assert chunked.schema == load.REJECTS_SCHEMA
    assert chunked.to_dicts() == [{"raw_b64": None, **r} for r in (lines[0], lines[-1])]
    assert chunked.equals(whole)
    assert build_report(run_dir) == whole_report


def test_a_bad_rejects_line_past_the_first_chunk_is_a_one_line_error(run_dir, monkeypatch):
    from curator.report import load

    path = run_dir / "rejects.jsonl"
    path.write_text(path.read_text() + '{"ref": "x",\n')
    monkeypatch.setattr(load, "REJECTS_CHUNK_BYTES", 1)
    with pytest.raises(CurateError, match=r"rejects.jsonl: not valid JSON lines: error parsing line: Syntax at "):
        build_report(run_dir)


# --- figures the reviewer found wrong (each test fails on the code before its fix) ---------------

def _edit(run_dir, manifest=None, columns=None):
    """Change manifest.json (a function of the dict) and annotations.parquet columns (name -> values)."""
    import polars as pl

    if manifest is not None:
        m = json.loads((run_dir / "manifest.json").read_text())
        manifest(m)
        (run_dir / "manifest.json").write_text(json.dumps(m))
    if columns:
        ann = pl.read_parquet(run_dir / "annotations.parquet")
        ann = ann.with_columns(pl.Series(k, v, dtype=ann.schema.get(k)) for k, v in columns.items())
        ann.write_parquet(run_dir / "annotations.parquet")
    return run_dir


def test_cost_is_the_estimate_of_the_kept_set(run_dir):
    # `cost` is the tokens stage's estimate before quality and near-dup removal; `cost_kept` the final set's
    def add(m):
        m["summaries"]["tokens"] = {
            "cost": {"epochs": 3, "tokens_seen_per_epoch": 9234, "tokens_trained_per_epoch": 9043, "options": []},
            "cost_kept": {"epochs": 3, "tokens_seen_per_epoch": 420, "tokens_trained_per_epoch": 268, "options": []}}
    rep = build_report(_edit(run_dir, add))
    assert rep["cost"] == {"measured": True, "estimate": {
        "epochs": 3, "tokens_seen_per_epoch": 420, "tokens_trained_per_epoch": 268, "options": []}}
    assert rep["cost"]["estimate"]["tokens_seen_per_epoch"] == rep["tokens"]["kept"]["total"]
    assert rep["cost"]["estimate"]["tokens_trained_per_epoch"] == rep["tokens"]["kept"]["trained"]


def test_a_pre_drop_cost_alone_is_not_shown_as_the_kept_sets(run_dir):
    def add(m):
        m["summaries"]["tokens"] = {"cost": {"epochs": 3, "tokens_seen_per_epoch": 9234, "options": []}}
    rep = build_report(_edit(run_dir, add))
    note = "the only estimate covers 9,234 tokens per epoch, the rows alive at the tokens stage, not the 420 of the kept set"
    assert rep["cost"] == {"measured": False, "note": note}
    assert f"_Cost estimate: not shown: {note}._" in render(rep, "md")
    assert f"Cost estimate: not shown: {note}." in render(rep, "html")
    jsonschema.validate(rep, json.loads(SCHEMA_PATH.read_text()))


def test_code_languages_are_the_gates_figures_and_data_languages_are_apart(run_dir):
    import polars as pl

    from curator.config import CurateConfig
    from curator.stages import code_language
    from curator.stages.base import StageContext

    # a.jsonl:1 also has an html block; b.jsonl:1 only a json block: it is not a code example
    langs = [["html", "python"], None, None, ["python"], ["json"], [], [], None, ["go", "rust"]]
    rep = build_report(_edit(run_dir, columns={"code_langs": langs,
                                               "has_code": [True, None, None, True, True, False, False, None, True]}))
    code = rep["languages"]["code"]
    assert (code["examples_with_code"], code["share_with_code"]) == (2, 0.6667)
    figures = lambda items: [{k: v for k, v in x.items() if k != "examples"} for x in items]  # noqa: E731
    assert figures(code["items"]) == [{"key": "go", "count": 1, "share": 0.5},
                                      {"key": "python", "count": 1, "share": 0.5},
                                      {"key": "rust", "count": 1, "share": 0.5}]
    assert figures(code["other_items"]) == [{"key": "html", "count": 1, "share": 0.3333},
                                            {"key": "json", "count": 1, "share": 0.3333}]
    # the same numbers as the diversity gate on the kept rows
    kept = pl.DataFrame({"code_langs": [langs[i] for i in (0, 4, 8)]}, schema={"code_langs": pl.List(pl.Utf8)})
    ctx = StageContext(config=CurateConfig())
    (gate,) = code_language.gates(kept, ctx)
    assert "of 2 code examples" in gate.message
    assert ctx.summaries["code_language"]["kept_language_shares"] == {x["key"]: x["share"] for x in code["items"]}
    md = render(rep, "md")
    assert ("Programming (2 examples with a programming-language block, 66.7% of kept; shares are of these, as the "
            "diversity gate counts): go 1 (50.0%), python 1 (50.0%), rust 1 (50.0%)") in md
    assert "Also seen, not counted by the gate (data and markup; share of kept examples): html 1 (33.3%), json 1 (33.3%)" in md
    html = render(rep, "html")
    assert "Also seen, not counted by the gate" in html and '<td><a href="#lang-data-json">json</a></td>' in html
    jsonschema.validate(rep, json.loads(SCHEMA_PATH.read_text()))


def test_gate_figures_near_the_threshold_keep_six_places_and_no_negative_zero(run_dir):
    def gates(m):
        m["gates"] = [
            {"name": "quality.high_quality_rate", "passed": False, "value": 247 / 259, "threshold": 0.9537,
             "message": "m1"},
            {"name": "quality.other", "passed": False, "value": 0.95369999999, "threshold": 0.9537, "message": "m2"}]
    items = build_report(_edit(run_dir, gates))["gates"]["items"]
    assert [(g["value"], g["threshold"], g["margin"]) for g in items] == [
        (0.953668, 0.9537, -0.000032), (0.9537, 0.9537, 0.0)]
    assert str(items[1]["margin"]) == "0.0"  # not -0.0
    md = render(build_report(run_dir), "md")
    assert "| ❌ | `quality.high_quality_rate` | 0.953668 | 0.9537 | -0.000032 | m1 |" in md
    assert "| ❌ | `quality.other` | 0.9537 | 0.9537 | 0 | m2 |" in md
    html = render(build_report(run_dir), "html")
    assert '<td class="n" data-label="value" data-v="0.953668">0.953668</td>' in html and ">-0.000032</td>" in html


def test_no_kept_example_has_no_high_quality_rate(run_dir):
    reasons = [["x.y"]] * 9
    rep = build_report(_edit(run_dir, columns={"reject_reasons": reasons}))
    assert rep["quality"]["kept_high_quality_rate"] is None
    assert "High-quality rate of the kept set: **n/a (no example kept)**" in render(rep, "md")
    assert "High-quality rate of the kept set: <b>n/a (no example kept)</b>" in render(rep, "html")


def test_quality_histogram_bins_scores_on_an_edge_into_the_bin_it_opens():
    import polars as pl

    from curator.report.build import _histogram

    edges = [round(i / 20, 4) for i in range(21)]
    # 0.6999999999999999: a score of 0.7 an ulp low (scores were not rounded before), bin 14, not 13
    counts = _histogram(pl.Series([0.35, 0.6999999999999999, 0.56, 1.0, 0.0]), edges)
    assert [i for i, c in enumerate(counts) if c] == [0, 7, 11, 14, 19]


def test_tokens_section_says_what_the_truncate_policy_did(run_dir):
    def add(m):
        m["summaries"]["tokens"] = {"policy": "truncate", "over_budget": 3, "truncated_examples": 2,
                                    "truncated_turns": 5}
    # b.jsonl:5 (kept) lost 4 messages, b.jsonl:2 (rejected later) 1
    rep = build_report(_edit(run_dir, add, {"truncated_turns": [0, None, None, 0, 0, 1, 0, None, 4]}))
    t = rep["tokens"]
    assert (t["policy"], t["over_budget"], t["truncated_examples"], t["truncated_turns"], t["kept_truncated"]) == (
        "truncate", 3, 2, 5, 1)
    sentence = ("Policy truncate: 3 rows were over the 8,192-token context before the policy; 2 were truncated to "
                "fit (earliest exchanges dropped, 5 messages in all), of which 1 is in the kept set; 1 could not fit "
                "and was rejected (`tokens.over_budget`).")
    assert "\n" + sentence + "\n" in render(rep, "md")
    assert "<p>" + sentence.replace("`", "") + "</p>" in render(rep, "html")
    jsonschema.validate(rep, json.loads(SCHEMA_PATH.read_text()))


def test_tokens_section_without_a_policy_summary_says_nothing_of_it(rep):
    t = rep["tokens"]
    assert (t["policy"], t["over_budget"], t["truncated_examples"], t["truncated_turns"], t["kept_truncated"]) == (
        None, None, None, None, None)
    assert "Policy" not in render(rep, "md")


def test_zero_thresholds_are_thresholds(run_dir):
    def zero(m):
        m["summaries"]["quality"] = {"high_quality_threshold": 0.0}
        m["config"]["tokens"]["context_length"] = 0
    rep = build_report(_edit(run_dir, zero))
    assert rep["quality"]["high_quality_threshold"] == 0.0
    assert (rep["tokens"]["budget"], rep["tokens"]["over_budget_rows"]) == (0, 6)


def test_prompt_conflicts_count_records_and_groups(run_dir):
    def add(m):
        m["summaries"]["dedup_minhash"] = {"prompt_conflict_groups": 1, "prompt_conflict_records": 2}
    conflict = [True, None, None, False, True, False, False, None, False]
    rep = build_report(_edit(run_dir, add, {"prompt_conflict": conflict}))
    assert (rep["duplicates"]["prompt_conflicts"], rep["duplicates"]["prompt_conflict_groups"]) == (2, 1)
    assert "prompt conflicts (same prompt with different answers): 2 records in 1 group." in render(rep, "md")
    assert "prompt conflicts (same prompt with different answers): 2 records in 1 group." in render(rep, "html")


def test_markdown_has_the_sources_table(rep):
    md = render(rep, "md")
    assert md.index("## Split") < md.index("## Sources") < md.index("## Training cost estimate")
    assert "| file | read | kept | rejected | train | val | kept share |" in md
    assert "| `a.jsonl` | 4 | 1 | 3 | 1 | 0 | 25.0% |" in md
    assert "| `b.jsonl` | 5 | 2 | 3 | 1 | 1 | 40.0% |" in md


def test_a_disabled_dedup_stage_is_reported_as_disabled_not_as_zero(run_dir, tmp_path):
    def off(m):
        m["summaries"]["dedup_minhash"] = {"enabled": False}
        m["summaries"]["dedup_exact"] = {"enabled": False}
    nulls = {"near_dup_cluster": [None] * 9, "near_dup_of": [None] * 9, "near_dup_jaccard": [None] * 9,
             "prompt_conflict": [False, None, None, False, False, False, False, None, False]}
    rep = build_report(_edit(run_dir, off, nulls))
    d = rep["duplicates"]
    assert (d["exact_disabled"], d["near_disabled"]) == (True, True)
    assert (d["near_clusters"], d["prompt_conflicts"], d["prompt_conflict_groups"], d["largest_near"]) == (
        None, None, None, [])
    assert rep["split"]["near_clusters_in_both"] is None
    assert "duplicates.near" in rep["not_measured"] and "duplicates.exact" in rep["not_measured"]
    md, html = render(rep, "md"), render(rep, "html")
    assert ("Exact duplicates: disabled (`dedup_exact.enabled: false`); near duplicates and prompt conflicts: "
            "disabled (`dedup_minhash.enabled: false`).") in md
    assert "_Near-duplicate clusters: disabled (`dedup_minhash.enabled: false`)._" in md
    assert "near-duplicate clusters on both sides: –" in md
    assert "Exact duplicates: disabled (dedup_exact.enabled: false)" in html
    assert "near duplicates and prompt conflicts: disabled (dedup_minhash.enabled: false)" in html
    jsonschema.validate(rep, json.loads(SCHEMA_PATH.read_text()))

    # a run folder written before the stages said so in their summaries: the resolved config tells
    def config_only(m):
        m["config"]["dedup_minhash"] = {"enabled": False}
    rep = build_report(_edit(make_run(tmp_path / "old"), config_only, nulls))
    assert (rep["duplicates"]["exact_disabled"], rep["duplicates"]["near_disabled"]) == (False, True)
    md = render(rep, "md")
    assert "Exact duplicates rejected: 1 (1 groups); near duplicates and prompt conflicts: disabled" in md


def test_warnings_are_counted_by_code_with_the_kept_rows(tmp_path):
    from curator.config import load_config
    from curator.pipeline import run

    raw = tmp_path / "raw" / "captures.json"
    raw.parent.mkdir()
    raw.write_text(json.dumps([
        {"conversations": [{"from": "gpt", "value": "tail of an earlier answer"}, {"from": "human", "value": "Q?"},
                           {"from": "gpt", "value": "A."}]},
        {"conversations": [{"from": "human", "value": "one"}, {"from": "human", "value": "two"},
                           {"from": "bing", "value": "Answer."}]},
    ]), encoding="utf-8")
    run(raw.parent, tmp_path / "out", load_config(None, ["gates.min_examples=null"]))
    rep = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert rep["warnings"] == {"rows_with_warnings": 2, "items": [
        {"code": "repair.leading_assistant", "count": 1, "kept": 1},
        {"code": "repair.merge_turns", "count": 1, "kept": 1},
        {"code": "repair.role_alias", "count": 1, "kept": 1},
    ]}
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "| `repair.leading_assistant` | 1 | 1 |" in md
