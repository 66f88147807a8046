"""Data shown in the Markdown report and the review sheet stays data: no HTML, no Markdown links,
no spreadsheet formulas."""

from __future__ import annotations

import csv
import io

from curator.report.render_md import _data, render_markdown
from curator.report.sample import to_csv
from curator.report.build import report_from_run
from tests.report_fixture import make_run


def test_markdown_data_text_carries_no_html_and_no_markdown():
    shown = _data("<img src=x onerror=alert(1)></details>\n[click](http://x) ![i](http://t) *b* a|b")
    assert shown == ("&lt;img src=x onerror=alert(1)&gt;&lt;/details&gt; ⏎ [click\\](http://x) "
                     "![i\\](http://t) *b* a\\|b")


def test_a_reject_sample_with_html_is_escaped_in_report_md(tmp_path):
    rep = report_from_run(make_run(tmp_path / "out"))
    item = rep["rejects"]["items"][0]
    item["samples"] = [{"ref": "a.jsonl:1", "detail": "</details><img src=x onerror=alert(1)>", "highlight": None,
                        "turns": [{"role": "user", "text": "<script>alert(1)</script>", "highlight": True}]}]
    md = render_markdown(rep)
    assert "<img" not in md and "<script>" not in md
    assert md.count("</details>") == md.count("<details>")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md


def test_review_sheet_cells_that_look_like_formulas_are_text():
    rows = [{"sample_id": 1, "ref": "=HYPERLINK(\"http://x\")", "conversation": "+1 call", "note": "-2", "ok": "@SUM(A1)",
             "plain": "[user] hi"}]
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert parsed == [{"sample_id": "1", "ref": "'=HYPERLINK(\"http://x\")", "conversation": "'+1 call", "note": "'-2",
                       "ok": "'@SUM(A1)", "plain": "[user] hi"}]


def test_a_file_name_with_backticks_cannot_close_its_code_span():
    from curator.report.render_md import _code

    assert _code("raw/`<img src=x onerror=alert(1)>`.jsonl:1") == "``raw/`<img src=x onerror=alert(1)>`.jsonl:1``"
    assert _code("`a|b") == "`` `a\\|b ``"
    assert _code("plain.jsonl:3") == "`plain.jsonl:3`"
