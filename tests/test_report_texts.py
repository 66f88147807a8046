"""What the report shows of the data: chat turns, the differing words of duplicates, the offending span,
language examples, and charts that show every bin."""

from __future__ import annotations

import json
import re

import pytest

from curator.report import build_report, render
from curator.report.diff import diff_spans, fit
from curator.report import svg
from curator.report.render_md import collapse
from tests.report_fixture import make_run

USER, ANSWER = "Write hello world in Python.", "```python\nprint('hello')\n```"


@pytest.fixture
def rep(tmp_path):
    return build_report(make_run(tmp_path / "run"))


def _samples(rep, code):
    return next(r for r in rep["rejects"]["items"] if r["code"] == code)["samples"]


def test_a_near_duplicate_is_shown_beside_its_kept_copy_with_the_added_word_marked(rep):
    (pair,) = rep["duplicates"]["largest_near"][0]["pairs"]
    assert pair == {
        "removed": "a.jsonl:4", "kept": "a.jsonl:1", "jaccard": 0.85,
        "kept_turns": [{"role": "user", "text": USER, "highlight": False, "field": None},
                       {"role": "assistant", "text": ANSWER, "highlight": False, "field": None}],
        "removed_turns": [{"role": "user", "text": "Write hello world in Python please.", "highlight": True,
                           "field": None, "marks": [[27, 34]]},
                          {"role": "assistant", "text": ANSWER, "highlight": False, "field": None}],
    }
    html = render(rep, "html")
    assert "Write hello world in Python<mark> please</mark>." in html
    assert '<span class="pass">kept</span> <code>a.jsonl:1</code>' in html
    md = render(rep, "md")
    assert ("  - removed `a.jsonl:4` J=0.85, kept `a.jsonl:1`: **user** Write hello world in Python<b> please</b>. "
            "⟷ kept: Write hello world in Python.") in md


def test_duplicate_samples_show_the_record_they_duplicate(rep):
    (exact,) = _samples(rep, "dup.exact")
    assert exact["duplicate_of"] == {"ref": "a.jsonl:1", "jaccard": None, "turns": [
        {"role": "user", "text": USER, "highlight": False, "field": None},
        {"role": "assistant", "text": ANSWER, "highlight": False, "field": None}]}
    assert [t["text"] for t in exact["turns"]] == [USER, ANSWER]
    (near,) = _samples(rep, "dup.near")
    assert (near["duplicate_of"]["ref"], near["duplicate_of"]["jaccard"]) == ("a.jsonl:1", 0.85)
    assert near["turns"][0]["marks"] == [[27, 34]]
    md = render(rep, "md")
    assert "  > duplicate of `a.jsonl:1` (J=0.85)" in md


def test_the_refusal_phrase_is_marked_not_the_whole_answer(rep):
    (refusal,) = _samples(rep, "quality.refusal")
    assert refusal["turns"][1]["marks"] == [[0, len("As an AI language model, I cannot")]]
    assert "  > **assistant**: <b>As an AI language model, I cannot</b> do that." in render(rep, "md")


def test_a_long_turn_is_cut_around_its_marks():
    text = "a " * 300 + "NEEDLE" + " b" * 300
    at = text.index("NEEDLE")
    shown, marks = fit(text, [(at, at + 6)], limit=100, context=10)
    assert shown == "…" + text[at - 10:at + 16] + "…"
    assert [shown[s:e] for s, e in marks] == ["NEEDLE"]
    assert fit("short", [(0, 5)], 100) == ("short", [[0, 5]])
    assert fit("x" * 50, [], 10) == ("x" * 9 + "…", [])


def test_diff_spans_mark_whole_words_on_both_sides():
    a, b = "the cat sat on the mat", "the dog sat on the mat today"
    sa, sb = diff_spans(a, b)
    assert [a[s:e] for s, e in sa] == ["cat", ""]
    assert [b[s:e] for s, e in sb] == ["dog", " today"]


def _alpaca(instruction: str, output: str, inp: str = "") -> dict:
    return {"instruction": instruction, "input": inp, "output": output}


def test_converted_shapes_are_shown_as_chat_turns_not_raw_json(tmp_path):
    from curator.config import load_config
    from curator.pipeline import run

    story = ("The committee met on Tuesday to review the annual budget, discuss the new library wing, "
             "approve the spring festival schedule, and hear a short report on road repairs near the school. ")
    base = _alpaca("Summarise the following meeting notes in one short paragraph.", story * 2, "Notes: " + story)
    near = dict(base, output=base["output"].replace("Tuesday", "Monday", 1))
    refusal = _alpaca("Tell me the admin password.", "I'm sorry, but I cannot help with that request at all.")
    raw = tmp_path / "alpaca.json"
    raw.write_text(json.dumps([base, near, base, refusal]), encoding="utf-8")
    out = tmp_path / "out"
    run(raw, out, load_config(None, []))
    rep = json.loads((out / "report.json").read_text())
    (pair,) = rep["duplicates"]["largest_near"][0]["pairs"]
    assert [t["role"] for t in pair["removed_turns"]] == ["user", "assistant"]
    # the prompt is the instruction and the input, as the reader joins them; the same on both sides, so short
    prompt = base["instruction"] + "\n\nNotes: " + story.strip()
    assert pair["removed_turns"][0] == {"role": "user", "text": prompt[:159] + "…", "highlight": False, "field": None}
    (kept_answer, removed_answer) = pair["kept_turns"][1], pair["removed_turns"][1]
    assert [removed_answer["text"][s:e] for s, e in removed_answer["marks"]] == ["Monday"]
    assert [kept_answer["text"][s:e] for s, e in kept_answer["marks"]] == ["Tuesday"]
    (exact,) = _samples(rep, "dup.exact")
    assert [t["role"] for t in exact["turns"]] == ["user", "assistant"]
    assert exact["duplicate_of"]["ref"].endswith("alpaca.json:1")
    (ref,) = _samples(rep, "quality.refusal")
    assert ref["turns"][1]["text"] == refusal["output"] and ref["turns"][1]["marks"] == [[0, len("I'm sorry, but I cannot")]]
    assert '"instruction"' not in json.dumps(rep["rejects"]) + json.dumps(rep["duplicates"])


def test_language_rows_link_to_their_first_examples(tmp_path):
    from tests.test_report import _edit

    run_dir = make_run(tmp_path / "run")
    block = {"turn": 1, "role": "assistant", "label": "python", "lang": "python"}
    blocks = [[block], None, None, [block], [], [], [], None,
              [dict(block, label="rust", lang="rust"), dict(block, label="go", lang="go")]]
    rep = build_report(_edit(run_dir, columns={"code_blocks": blocks}))
    nat = {x["key"]: x["examples"] for x in rep["languages"]["natural"]["items"]}
    assert nat["en"] == [{"ref": "a.jsonl:1", "text": USER}]
    assert nat["de"] == [{"ref": "b.jsonl:1", "text": "Wie spät ist es?"}]
    code = {x["key"]: x["examples"] for x in rep["languages"]["code"]["items"]}
    assert code["python"] == [{"ref": "a.jsonl:1", "text": ANSWER}]
    assert code["go"] == [{"ref": "b.jsonl:5", "text": "…```go\nfunc main() {}\n```"}]
    html = render(rep, "html")
    assert '<td><a href="#lang-nat-en">en</a></td>' in html and 'id="lang-nat-en"' in html
    assert re.search(r'id="lang-code-go"><b>go</b> &middot; 1<div class="turn"><code>b.jsonl:5</code> …```go', html)


def test_tiny_categories_collapse_into_one_other_row():
    items = [{"key": k, "count": c, "share": c / 1000} for k, c in
             [("en", 960), ("de", 30), ("sw", 4), ("cy", 3), ("la", 3)]]
    shown, other = collapse(items)
    assert [x["key"] for x in shown] == ["en", "de"]
    assert (other["key"], other["count"], other["share"]) == ("other (3)", 10, 0.01)
    assert [x["key"] for x in other["members"]] == ["sw", "cy", "la"]
    # beyond the first N, however large
    shown, other = collapse(items, beyond=1)
    assert [x["key"] for x in shown] == ["en"] and other["key"] == "other (4)"
    # one small item alone is not worth an "other" row
    assert collapse(items[:3]) == (items[:3], None)


def test_a_histogram_with_its_mass_in_one_bin_is_drawn_on_a_log_scale():
    assert svg.use_log_scale([0, 1, 3, 143, 1493]) is True
    assert svg.use_log_scale([307, 310, 252, 453, 471, 1]) is False  # no bin holds half
    assert svg.use_log_scale([0, 0, 50]) is False  # one bin only: nothing to hide
    chart = svg.histogram([0, 0.5, 1], {"kept": [1, 1493]}, "Quality")
    assert "<title>Quality (log scale)</title>" in chart and "rows, log scale" in chart
    heights = [float(h) for h in re.findall(r'<rect [^>]*height="([\d.]+)"', chart)[:2]]
    assert heights[0] > 0.09 * heights[1]  # 1 row of 1,494 is visible (log10 2 / log10 1494)
    linear = svg.histogram([0, 0.5, 1], {"kept": [40, 60]}, "Quality")
    assert "log scale" not in linear


def test_the_last_axis_label_ends_at_the_axis_instead_of_past_the_edge():
    chart = svg.histogram([i * 512 for i in range(21)], {"kept": [1] * 20}, "Tokens", marker=10000,
                          marker_label="budget 10,000")
    assert '<text x="628.0" y="202" text-anchor="end" class="val">10,240</text>' in chart
    assert 'text-anchor="end" class="val">budget 10,000</text>' in chart  # written leftwards of the line



def test_a_removed_copy_that_ends_early_says_so_beside_the_kept_turn():
    from curator.report.render_md import _pair_line

    turns = [{"role": "user", "text": "Hi", "marks": []}, {"role": "assistant", "text": "Hello", "marks": []}]
    extra = {"role": "user", "text": "And more?", "marks": [[0, 9]]}
    pair = {"removed": "a.jsonl:2", "kept": "a.jsonl:1", "jaccard": 0.9, "removed_turns": turns,
            "kept_turns": [*turns, extra]}
    assert _pair_line(pair) == ("  - removed `a.jsonl:2` J=0.9, kept `a.jsonl:1`: *(no user turn here)* ⟷ kept: "
                                "<b>And more?</b>")
