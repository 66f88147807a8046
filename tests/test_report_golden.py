"""Golden tests of report.md and report.json for the data_samples/ run.

Package versions are masked (CI may install newer patch releases); everything else must match
data_samples/expected/report.{md,json}. Regenerate with `make golden` after an intended change.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from curator.config import load_config
from curator.pipeline import run
from curator.report import build_report, render
from tests.conftest import ROOT, SAMPLES

EXPECTED = SAMPLES / "expected"


@pytest.fixture(scope="module")
def sample_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("report-golden") / "out"
    cwd = os.getcwd()
    os.chdir(ROOT)  # source_file paths are relative: data_samples/raw/...
    try:
        run("data_samples/raw", out, load_config(None, []))
    finally:
        os.chdir(cwd)
    return out


def _masked(report: dict) -> dict:
    report = json.loads(json.dumps(report))
    report["versions"] = {k: "*" for k in report["versions"]}
    return report


def test_curate_report_rebuilds_the_run_reports_exactly(sample_out):
    rebuilt = build_report(sample_out)
    for fmt in ("json", "md", "html"):
        assert (sample_out / f"report.{fmt}").read_text(encoding="utf-8") == render(rebuilt, fmt), fmt


@pytest.mark.parametrize("fmt", ["json", "md"])
def test_report_matches_golden(sample_out, fmt):
    text = render(_masked(json.loads((sample_out / "report.json").read_text(encoding="utf-8"))), fmt)
    expected = EXPECTED / f"report.{fmt}"
    if os.environ.get("UPDATE_GOLDEN"):
        EXPECTED.mkdir(parents=True, exist_ok=True)
        expected.write_text(text, encoding="utf-8")
    assert expected.exists(), f"{expected} missing; run `make golden`"
    assert text == expected.read_text(encoding="utf-8"), f"report.{fmt} differs; run `make golden` if intended"


def test_report_reasons_equal_the_rejects_file(sample_out):
    rep = json.loads((sample_out / "report.json").read_text(encoding="utf-8"))
    lines = [json.loads(x) for x in (sample_out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    per_code = Counter(code for rec in lines for code in set(rec["reasons"]))
    assert {r["code"]: r["count"] for r in rep["rejects"]["items"]} == dict(per_code)
    assert rep["counts"]["consistent_with_manifest"] is True
    assert rep["rejects"]["rows_rejected"] == len(lines)
    # the planted bad role (03_defects.jsonl:15) is shown with its role highlighted
    bad_role = next(r for r in rep["rejects"]["items"] if r["code"] == "schema.bad_role")["samples"][0]
    assert bad_role["ref"] == "data_samples/raw/03_defects.jsonl:15" and bad_role["highlight"] == "messages[0].role"
    assert [t for t in bad_role["turns"] if t["highlight"]][0]["field"] == "role"


def test_cost_and_languages_describe_the_kept_set_as_the_gates_do(sample_out):
    rep = json.loads((sample_out / "report.json").read_text(encoding="utf-8"))
    manifest = json.loads((sample_out / "manifest.json").read_text(encoding="utf-8"))
    est, kept = rep["cost"]["estimate"], rep["tokens"]["kept"]
    assert (est["tokens_seen_per_epoch"], est["tokens_trained_per_epoch"]) == (kept["total"], kept["trained"])
    shares = manifest["summaries"]["code_language"]["kept_language_shares"]
    assert {x["key"]: x["share"] for x in rep["languages"]["code"]["items"]} == shares
    gate = next(g for g in manifest["gates"] if g["name"] == "code.language_diversity")
    assert f"of {rep['languages']['code']['examples_with_code']} code examples" in gate["message"]
