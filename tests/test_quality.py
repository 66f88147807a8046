"""The quality stage: each default rule on small inline examples (exact rule, value, action and
reason code), the score, high_quality, the summary, the gate, and one property of the real data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest

from curator.columns import MESSAGE
from curator.config import CurateConfig, load_config
from curator.errors import CurateError
from curator.stages import quality
from curator.stages.base import StageContext
from curator.stages.secrets import FINDING

CHAT = Path(__file__).resolve().parents[2] / "shared" / "data" / "chat"


def frame(*convs, tokens=None, user_lang="en", assistant_lang="en", parse_error=None, findings=None) -> pl.DataFrame:
    """Rows from (role, content) lists, with the upstream columns quality reads built inline."""
    n = len(convs)
    msgs = [[{"role": r, "content": c, "weight": None, "tool_calls": None, "tool_call_id": None} for r, c in conv]
            for conv in convs]
    return pl.DataFrame(
        {
            "messages": msgs,
            "content_hash": [f"{i:032x}" for i in range(n)],
            "reject_reasons": [[] for _ in range(n)],
            "reject_details": [[] for _ in range(n)],
            "n_assistant_tokens": tokens if tokens is not None else [50] * n,
            "user_lang": [user_lang] * n,
            "assistant_lang": [assistant_lang] * n,
            "code_parse_error_frac": [parse_error] * n,
            "secret_findings": findings if findings is not None else [[] for _ in range(n)],
        },
        schema={
            "messages": pl.List(MESSAGE),
            "content_hash": pl.Utf8,
            "reject_reasons": pl.List(pl.Utf8),
            "reject_details": pl.List(pl.Utf8),
            "n_assistant_tokens": pl.Int64,
            "user_lang": pl.Utf8,
            "assistant_lang": pl.Utf8,
            "code_parse_error_frac": pl.Float64,
            "secret_findings": pl.List(FINDING),
        },
    )


def qa(answer: str, question: str = "Tell me about Paris, please.", **kw) -> pl.DataFrame:
    return frame([("user", question), ("assistant", answer)], **kw)


def run(df: pl.DataFrame, *overrides: str) -> tuple[pl.DataFrame, StageContext]:
    ctx = StageContext(config=load_config(None, list(overrides)))
    return quality.run(df, ctx), ctx


def flags(row: dict) -> dict[str, tuple[float, str]]:
    return {f["rule"]: (f["value"], f["action"]) for f in row["quality_flags"]}


CLEAN = "The capital of France is Paris. It is known for the Eiffel Tower."


def test_a_clean_answer_fires_nothing():
    out, _ = run(qa(CLEAN))
    row = out.row(0, named=True)
    assert row["quality_flags"] == []
    assert row["quality_score"] == 1.0
    assert row["high_quality"] is True
    assert row["reject_reasons"] == []
    assert not any(c.startswith("__") for c in out.columns)
    assert out.schema["quality_flags"] == pl.List(pl.Struct({"rule": pl.Utf8, "value": pl.Float64, "action": pl.Utf8}))


# (rule id, answer, extra frame args, expected measured value, action, score)
CASES = [
    ("ai_disclaimer", "As an AI language model, I think Paris is lovely.", {}, 1.0, "score", 0.6),
    ("repeated_lines", "Paris is the capital.\nParis is the capital.\nParis is the capital.\nLyon is a city too.",
     {}, 0.5, "score", 0.5),
    ("repeated_paragraphs", "Lyon is a big city.\n\nParis is the capital.\n\nParis is the capital.", {}, 1 / 3, "score", None),
    ("top_2gram", " ".join(["the cat"] * 30) + ".", {}, 1.0, "score", None),
    ("symbol_ratio", "Wait... what... really... yes... no... maybe... so... then... ok... fine... done.", {}, 10 / 11,
     "score", None),
    ("few_alphabetic_words", "1 2 3 4 5 6 7 8 9 10 eleven twelve.", {}, 2 / 12, "flag", None),
    ("ends_mid_sentence", "Paris is the capital of France and", {}, 1.0, "score", 0.5),
    ("unclosed_code_fence", "Here:\n```python\nprint(1)", {}, 1.0, "score", 0.5),
    ("glued_code_fence", "Here:\n```js\nf();}```", {}, 1.0, "score", 0.9),
    ("unclosed_brackets", "Call it like this: foo(bar, [1, 2", {}, 2.0, "score", 0.6),
    ("placeholder_text", "Hello! I am {{name}}, made by {{ author }}.", {}, 2.0, "score", 0.4),
    ("todo_only_code", "Sure:\n```python\ndef solve(x):\n    # TODO: implement\n    pass\n```", {}, 1.0, "score", 0.4),
    ("language_mismatch", CLEAN, {"assistant_lang": "de"}, 1.0, "score", 0.5),
    ("unparsable_code", CLEAN, {"parse_error": 0.25}, 0.25, "score", 0.6),
    ("unfenced_code", "def f(x):\n    return x + 1\nprint(f(2))", {}, 1.0, "score", 0.8),
    ("url_heavy", "See https://a.io and https://b.io/x now.", {}, 40.0, "score", 0.7),
    ("email_heavy", "Mail ann@corp.io or bob@corp.io today.", {}, 40.0, "score", 0.7),
    # as the secrets stage leaves them under its default policy
    ("email_heavy", "Mail [REDACTED:email] or [REDACTED:email] today.", {}, 40.0, "score", 0.7),
    ("short_answer", "Paris.", {"tokens": [2]}, 2.0, "flag", 1.0),
    ("secrets_found", CLEAN, {"findings": [[{"kind": "email", "action": "redact", "turn": 1}]]}, 1.0, "score", 0.7),
]


@pytest.mark.parametrize(("rule", "answer", "kw", "value", "action", "score"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_rule_reports_its_measured_value(rule, answer, kw, value, action, score):
    out, _ = run(qa(answer, **kw))
    row = out.row(0, named=True)
    got = flags(row)
    assert rule in got, got
    assert got[rule][0] == pytest.approx(value)
    assert got[rule][1] == action
    if score is not None:
        assert row["quality_score"] == pytest.approx(score)
        assert set(got) == {rule}
    assert row["reject_reasons"] == []


def test_echo_of_the_question():
    q = "Please explain how photosynthesis works in plants."
    out, _ = run(qa(q, question=q))
    row = out.row(0, named=True)
    assert flags(row) == {"echoes_prompt": (1.0, "score")}
    assert row["quality_score"] == pytest.approx(0.2)
    assert row["high_quality"] is False
    # an answer that only changes case did change the text; a short answer inside the question is fine
    out, _ = run(frame([("user", "Uppercase this: hello world, hello all"), ("assistant", "HELLO WORLD, HELLO ALL")],
                       [("user", "Is it 42 or 43? Answer 42"), ("assistant", "42")]))
    assert [flags(r).get("echoes_prompt") for r in out.iter_rows(named=True)] == [None, None]


@pytest.mark.parametrize(
    ("rule", "conv", "value", "detail"),
    [
        ("refusal", [("user", "Write a poem."), ("assistant", "I'm sorry, but I can't help with that.")], 1.0,
         "refusals=1.0 (max_refusals=0, turns=assistant)"),
        ("empty_answer", [("user", "Write a poem."), ("assistant", "")], 0.0,
         "words=0.0 (min_words=1, turns=assistant)"),
        ("empty_prompt", [("user", ""), ("assistant", CLEAN)], 0.0, "words=0.0 (min_words=1, turns=user)"),
    ],
)
def test_reject_rules_reject_with_their_code(rule, conv, value, detail):
    out, _ = run(frame(conv))
    row = out.row(0, named=True)
    assert flags(row)[rule] == (value, "reject")
    assert f"quality.{rule}" in row["reject_reasons"]
    assert row["reject_details"][row["reject_reasons"].index(f"quality.{rule}")] == detail
    assert row["quality_score"] == 0.0


def test_scores_multiply_and_threshold_is_configurable():
    df = qa("As an AI language model, I think Paris is the capital of France and")
    out, _ = run(df)
    row = out.row(0, named=True)
    assert flags(row) == {"ai_disclaimer": (1.0, "score"), "ends_mid_sentence": (1.0, "score")}
    assert row["quality_score"] == pytest.approx(0.6 * 0.5)
    assert row["high_quality"] is False
    out, _ = run(df, "quality.high_quality_threshold=0.3")
    assert out.row(0, named=True)["high_quality"] is True


def test_rules_apply_to_the_turns_they_name():
    # the placeholder rule reads all turns; the disclaimer rule reads the assistant's only
    out, _ = run(frame([("system", "You are {{name}}."), ("user", "As an AI language model, what are you?"),
                        ("assistant", CLEAN)]))
    assert flags(out.row(0, named=True)) == {"placeholder_text": (1.0, "score")}


def test_rules_file_from_config(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "version: 1\nrules:\n  - id: long\n    description: d\n    signal: words\n    max_words: 3\n"
        "    weight: 0.25\n    action: score\n",
        encoding="utf-8",
    )
    out, ctx = run(qa(CLEAN), f"quality.rules={path}")
    row = out.row(0, named=True)
    assert flags(row) == {"long": (13.0, "score")}
    assert row["quality_score"] == 0.75
    assert ctx.manifest["quality"]["rules_file"] == str(path)
    assert ctx.manifest["quality"]["enabled_rules"] == ["long"]


def test_missing_upstream_column_skips_its_rules_and_says_so():
    df = qa(CLEAN, assistant_lang="de").drop("user_lang")
    with pytest.raises(CurateError, match="quality: rules need column\\(s\\) user_lang"):
        quality.evaluate(df, quality.load_rules())
    out, ctx = run(df)
    assert out.row(0, named=True)["quality_flags"] == []
    assert ctx.summaries["quality"]["skipped_rules"] == {"language_mismatch": "missing column(s) user_lang"}
    assert ctx.manifest["quality"]["skipped_rules"] == ["language_mismatch"]


def test_summary_has_hit_rates_and_histogram():
    df = frame([("user", "q?"), ("assistant", CLEAN)], [("user", "q?"), ("assistant", "Paris is the capital of France and")],
               [("user", "q?"), ("assistant", "I'm sorry, but I can't help with that.")])
    _, ctx = run(df)
    s = ctx.summaries["quality"]
    rules = {r["rule"]: r for r in s["rules"]}
    assert (rules["ends_mid_sentence"]["hits"], rules["refusal"]["hits"], rules["echoes_prompt"]["hits"]) == (1, 1, 0)
    assert rules["refusal"]["rate"] == pytest.approx(1 / 3)
    assert s["score_histogram"]["counts"] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert (s["high_quality"], s["rows"]) == (1, 3)


def _kept(n_high: int, n: int) -> pl.DataFrame:
    return pl.DataFrame({"high_quality": [True] * n_high + [False] * (n - n_high)})


def test_gate_passes_and_says_by_how_much():
    ctx = StageContext(config=CurateConfig())
    (gate,) = quality.gates(_kept(70, 100), ctx)
    assert (gate.name, gate.passed, gate.value, gate.threshold) == ("quality.high_quality_rate", True, 0.7, 0.6)
    assert gate.message == "high-quality rate 70.0% (70 of 100 kept) meets the minimum 60% by 10.0 points"


def test_gate_misses_and_says_by_how_much():
    ctx = StageContext(config=CurateConfig())
    (gate,) = quality.gates(_kept(55, 100), ctx)
    assert gate.passed is False
    assert gate.message == (
        "high-quality rate 55.0% (55 of 100 kept) is under the minimum 60% by 5.0 points "
        "(5 more high-quality examples needed)"
    )
    ctx = StageContext(config=load_config(None, ["quality.min_high_quality_rate=null"]))
    assert quality.gates(_kept(0, 10), ctx) == []


@pytest.mark.skipif(not CHAT.exists(), reason="needs ../shared/data/chat")
def test_real_identity_set_placeholders_are_caught():
    """llamafactory_identity.jsonl ships {{name}}/{{author}} placeholders (its meta says so)."""
    records = [json.loads(line) for line in (CHAT / "llamafactory_identity.jsonl").open(encoding="utf-8")]
    convs = [[(m["role"], m["content"]) for m in r["messages"]] for r in records]
    expected = [any(re.search(r"\{\{\s*\w+\s*\}\}", c) for _, c in conv) for conv in convs]
    out, _ = run(frame(*convs))
    got = [("placeholder_text" in flags(r)) for r in out.iter_rows(named=True)]
    assert got == expected
    assert sum(got) >= 85
    assert not any(out.filter(pl.Series(got))["high_quality"])


def test_threshold_at_a_product_of_weights_classes_the_row_high(tmp_path):
    # two rules of weights 0.2 and 0.3 fire: the score is 0.56 exactly, so a 0.56 threshold holds
    path = tmp_path / "mine.yaml"
    path.write_text(
        "version: 1\nrules:\n"
        "  - {id: long, description: d, signal: words, max_words: 3, weight: 0.2, action: score}\n"
        "  - {id: longer, description: d, signal: words, max_words: 4, weight: 0.3, action: score}\n",
        encoding="utf-8",
    )
    out, _ = run(qa(CLEAN), f"quality.rules={path}", "quality.high_quality_threshold=0.56")
    row = out.row(0, named=True)
    assert (row["quality_score"], row["high_quality"]) == (0.56, True)


def _gate(n_high: int, n: int, need: float):
    ctx = StageContext(config=load_config(None, [f"quality.min_high_quality_rate={need}"]))
    (gate,) = quality.gates(_kept(n_high, n), ctx)
    return gate


def test_gate_message_prints_the_minimum_exactly_and_the_rate_apart_from_it():
    gate = _gate(247, 259, 0.955)
    assert gate.message == (
        "high-quality rate 95.4% (247 of 259 kept) is under the minimum 95.5% by 0.1 points "
        "(1 more high-quality examples needed)"
    )
    # 95.367% would print as 95.4%, or as 95.37% (the minimum) with two decimals
    gate = _gate(247, 259, 0.9537)
    assert (gate.passed, gate.value, gate.threshold) == (False, 247 / 259, 0.9537)
    assert gate.message == (
        "high-quality rate 95.367% (247 of 259 kept) is under the minimum 95.37% by 0.003 points "
        "(1 more high-quality examples needed)"
    )
    gate = _gate(247, 259, 0.9536)
    assert gate.message == "high-quality rate 95.37% (247 of 259 kept) meets the minimum 95.36% by 0.01 points"
    gate = _gate(60, 100, 0.6)
    assert gate.message == "high-quality rate 60.0% (60 of 100 kept) meets the minimum 60% by 0.0 points"


def test_gate_rate_of_no_kept_example_is_not_available():
    gate = _gate(0, 0, 0.6)
    assert (gate.passed, gate.value, gate.threshold) == (False, None, 0.6)
    assert gate.message == "high-quality rate n/a (no example kept); the minimum is 60%"


# --- repetition is measured within a turn ---------------------------------------------------------

DRAFT = "\n".join(f"Line number {i} of the draft text." for i in range(6))


def signal(df: pl.DataFrame, name: str) -> list:
    """The measured value of a default-rule signal on the assistant turns, per row."""
    from curator.rules import load_rules

    return quality.evaluate(df, load_rules(), keep_signals=True)[f"__value_{name}__assistant"].to_list()


def test_lines_repeated_across_turns_are_edits_not_repetition():
    # the joined answers repeat 6 of 13 lines (0.46), each answer none
    conv = [("user", "Write a draft."), ("assistant", DRAFT), ("user", "Add a closing line."),
            ("assistant", DRAFT + "\nA closing line added on request.")]
    out, _ = run(frame(conv))
    row = out.row(0, named=True)
    assert (row["quality_flags"], row["quality_score"]) == ([], 1.0)
    assert (signal(frame(conv), "dup_line_frac"), signal(frame(conv), "dup_para_frac")) == ([0.0], [None])


def test_paragraphs_repeated_across_turns_are_edits_not_repetition():
    paras = DRAFT.replace("\n", "\n\n")
    conv = [("user", "Write it."), ("assistant", paras), ("user", "Shorter, please."),
            ("assistant", paras.rsplit("\n\n", 2)[0])]
    out, _ = run(frame(conv))
    assert out.row(0, named=True)["quality_flags"] == []
    assert signal(frame(conv), "dup_para_frac") == [0.0]  # joined: 4 of 10 paragraphs repeat (0.4)


def test_a_looping_turn_is_judged_alone_not_diluted_by_the_others():
    clean = " ".join(f"word{i}" for i in range(400)) + "."
    loop = " ".join(["the cat"] * 30) + "."
    conv = [("user", "Tell me."), ("assistant", clean), ("user", "And then?"), ("assistant", loop)]
    out, _ = run(frame(conv))  # joined: "the cat" covers 60 of 461 words (0.13)
    got = flags(out.row(0, named=True))
    assert got["top_2gram"] == (1.0, "score")
    assert set(got) == {"top_2gram", "top_3gram", "top_4gram"}


def test_flags_list_every_fired_rule_in_rule_order_with_its_value_and_action():
    compiled = quality.compile_rules(quality.load_rules())
    df = frame(
        [("user", "Tell me about Paris, please."), ("assistant", "As an AI language model, I think Paris is the capital and")],
        [("user", "Tell me about Paris, please."), ("assistant", CLEAN)],
        [("system", "You are {{name}}."), ("user", "Hi?"), ("assistant", "As an AI language model, I can't help with that")],
        [("user", "Tell me about Paris, please."), ("assistant", "TODO")],
    )
    out = quality.evaluate(df, compiled, keep_signals=True)
    expected = [
        [
            {"rule": r.id, "value": row[compiled.value_col(r)], "action": r.action}
            for r in compiled.rules
            if row[compiled.fired_col(r)]
        ]
        for row in out.iter_rows(named=True)
    ]
    assert out["quality_flags"].to_list() == expected
    assert [[f["rule"] for f in row] for row in expected][0] == ["ai_disclaimer", "ends_mid_sentence"]
    assert expected[1] == [] and sum(len(row) for row in expected) >= 6
    assert quality.evaluate(df.head(0), compiled)["quality_flags"].to_list() == []
    none = quality.compile_rules([])
    assert quality.evaluate(df, none)["quality_flags"].to_list() == [[], [], [], []]
    assert quality.evaluate(df, none).schema["quality_flags"] == pl.List(pl.Struct({"rule": pl.Utf8, "value": pl.Float64, "action": pl.Utf8}))
