"""The report's "what to do next" advice (curator/report/advice.py): one table, shown alike in report.json,
report.md, report.html and `curate run`'s summary."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from curator.cli import cli
from curator.config import load_config
from curator.report import build_report, render
from curator.report.advice import ADVICE, MIN_SHARE, advice_lines, build_advice, cited_overrides, lookup
from tests.conftest import SAMPLES, chat, write_lines
from tests.report_fixture import make_run

REQUIRED = [
    "structure.not_alternating", "format.ambiguous_shape", "format.unknown_shape", "dup.exact", "dup.near",
    "tokens.over_budget", "secrets.private_key", "secrets.phone", "secrets.email", "quality.refusal",
    "io.bad_json", "io.bad_utf8", "size.min_examples", "size.kept", "quality.high_quality_rate",
    "code.language_diversity", "tokens.within_context",
]


@pytest.mark.parametrize("subject", REQUIRED)
def test_the_table_covers_the_common_codes_and_gates(subject):
    why, do = lookup(subject)
    assert why and do


def test_cited_options_named_in_the_brief_are_there():
    text = " ".join(do for _, do in ADVICE.values())
    for option in ("-s input.repairs=", "--input-format 'x/*.json=sharegpt'", "--input-format 'GLOB=alpaca'",
                   "-s dedup_minhash.threshold=", "-s tokens.policy=truncate", "-s secrets.policy.phone=flag",
                   "--rules FILE"):
        assert option in text


@pytest.mark.parametrize("override", cited_overrides())
def test_every_cited_override_loads(override):
    load_config(None, [override])  # a renamed key or a bad value raises


def test_cited_overrides_are_found():
    assert len(cited_overrides()) >= 10
    with pytest.raises(Exception):
        load_config(None, ["tokens.polcy=truncate"])


def test_quality_rules_name_their_rule():
    why, do = lookup("quality.refusal")
    assert "refusal" in why and "--rules FILE" in do
    assert lookup("structure.no_user") is None


def test_codes_over_one_percent_of_read_get_advice_and_under_do_not():
    rejects = {"items": [{"code": "dup.exact", "count": 11}, {"code": "dup.near", "count": 10},
                         {"code": "schema.bad_role", "count": 50}]}
    gates = {"items": [{"name": "size.min_examples", "passed": False}, {"name": "tokens.within_context", "passed": True}]}
    got = build_advice(gates, rejects, read=1000)
    assert MIN_SHARE == 0.01
    assert [(a["subject"], a["kind"], a["rows"]) for a in got] == [
        ("size.min_examples", "gate", None), ("dup.exact", "reject", 11)]  # 10/1000 is not over 1%; no entry for schema.bad_role


def test_report_json_md_html_carry_the_advice(tmp_path):
    rep = build_report(make_run(tmp_path / "run"))  # 9 rows: every code is over 1%; size.min_examples fails
    subjects = {a["subject"]: a for a in rep["advice"]}
    assert subjects["size.min_examples"]["kind"] == "gate"
    assert subjects["dup.exact"] == {"subject": "dup.exact", "kind": "reject", "rows": 1,
                                     "why": ADVICE["dup.exact"][0], "do": ADVICE["dup.exact"][1]}
    assert "quality.refusal" in subjects and "tokens.over_budget" in subjects
    assert "quality.high_quality_rate" not in subjects  # passed
    assert "schema.bad_role" not in subjects  # nothing in the table
    md = render(rep, "md")
    assert md.index("## Gates") < md.index("## What to do next") < md.index("## Funnel")
    for line in advice_lines(rep["advice"]):
        assert line.split(": ", 1)[1] in md
    html = render(rep, "html")
    assert 'id="advice"' in html and "-s tokens.policy=truncate" in html


def test_golden_sample_advises_on_near_dups_but_not_on_exact_ones():
    rep = json.loads((SAMPLES / "expected" / "report.json").read_text(encoding="utf-8"))
    shares = {r["code"]: r["share_of_read"] for r in rep["rejects"]["items"]}
    assert shares["dup.near"] > 0.01 > shares["dup.exact"]
    subjects = [a["subject"] for a in rep["advice"]]
    assert "dup.near" in subjects and "dup.exact" not in subjects
    md = (SAMPLES / "expected" / "report.md").read_text(encoding="utf-8")
    assert "## What to do next" in md and "`dup.near` (4 rows)" in md and "`dup.exact` (" not in md


def test_run_summary_prints_the_same_advice(tmp_path):
    write_lines(tmp_path / "raw" / "a.jsonl", [chat(("user", "hi"), ("assistant", "hello"))])
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "raw"), str(out),
            "-s", "skip_stages=[secrets,language,code_language,tokens,quality,dedup_minhash,select]"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 3
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [a["subject"] for a in rep["advice"]] == ["size.min_examples"]
    text = re.sub(r"\s+", " ", result.output)
    assert "what to do next" in text
    assert re.sub(r"\s+", " ", advice_lines(rep["advice"])[0]) in text


def test_advice_never_suggests_the_policy_the_run_already_used():
    rejects = {"items": [{"code": "tokens.over_budget", "count": 605}]}
    rejecting = build_advice({"items": []}, rejects, read=2000, config={"tokens": {"policy": "reject"}})
    assert rejecting[0]["do"] == ADVICE["tokens.over_budget"][1]
    assert "-s tokens.policy=truncate" in rejecting[0]["do"]
    truncating = build_advice({"items": []}, rejects, read=2000, config={"tokens": {"policy": "truncate"}})
    assert truncating[0]["why"] == ADVICE["tokens.over_budget@truncate"][0]
    assert "tokens.policy=truncate" not in truncating[0]["do"]
    assert "-s tokens.context_length=N" in truncating[0]["do"]
