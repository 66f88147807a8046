"""Rule files: loading, errors that name file, line, rule and key, and compiling to expressions."""

from __future__ import annotations

import polars as pl
import pytest

from curator.errors import CurateError
from curator.rules import DEFAULT_RULES, Rule, compile_rules, load_rules, resolve_rules_path
from curator.signals import SIGNALS
from tests.conftest import ROOT


def write(tmp_path, text: str):
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """\
version: 1
rules:
  - id: short
    description: too short
    signal: words
    turns: assistant
    min_words: 3
    weight: 0.5
    action: score
"""


def test_default_rules_load_and_every_rule_is_documented():
    rules = load_rules()
    assert rules.path == resolve_rules_path(DEFAULT_RULES)
    assert len(rules.sha256) == 64
    ids = [r.id for r in rules.rules]
    assert len(ids) == len(set(ids))
    for r in rules.rules:
        assert len(r.description) > 40, r.id  # a rationale, not a label
        assert r.enabled, r.id
        assert r.signal in SIGNALS
    # no defect kind loses its rule from the default set unnoticed
    assert {"refusal", "ai_disclaimer", "repeated_lines", "top_2gram", "symbol_ratio", "few_alphabetic_words",
            "ends_mid_sentence", "unclosed_code_fence", "echoes_prompt", "placeholder_text", "todo_only_code",
            "language_mismatch", "unparsable_code", "url_heavy", "email_heavy", "short_answer"} <= set(ids)


def test_relative_path_falls_back_to_the_source_tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_rules_path("rules/default.yaml").is_absolute()
    with pytest.raises(CurateError, match="nope.yaml: rule file not found"):
        resolve_rules_path("nope.yaml")


def test_a_good_file_loads(tmp_path):
    rules = load_rules(write(tmp_path, GOOD))
    (rule,) = rules.rules
    assert (rule.id, rule.signal, rule.turns, rule.min, rule.max, rule.weight, rule.action) == (
        "short", "words", "assistant", 3.0, None, 0.5, "score")


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        ("    min_words: 3\n", "    min_word: 3\n", r"rules.yaml:7: rule short: key min_word: threshold keys of signal words are min_words and max_words"),
        ("    action: score\n", "    action: drop\n", r"rules.yaml:9: rule short: key action: Input should be 'score', 'flag' or 'reject'"),
        ("    weight: 0.5\n", "    weight: 1.5\n", r"rules.yaml:8: rule short: key weight: Input should be less than or equal to 1"),
        ("    signal: words\n", "    signal: wordz\n", r"rules.yaml:5: rule short: key signal: unknown signal 'wordz'"),
        ("    turns: assistant\n", "    turns: bot\n", r"rules.yaml:6: rule short: key turns: Input should be"),
        ("    weight: 0.5\n", "    weight: 0.5\n    colour: red\n", r"rules.yaml:9: rule short: key colour: unknown key"),
        ("    description: too short\n", "", r"rules.yaml:3: rule short: key description: required key is missing"),
        ("    min_words: 3\n", "    min_words: 3\n    max_words: 2\n", r"rule short: key min_words: min_words 3.0 is above max_words 2.0"),
        ("    min_words: 3\n", "    min: 3\n", r"rules.yaml:7: rule short: key min: write thresholds as min_words"),
    ],
)
def test_errors_name_file_line_rule_and_key(tmp_path, replace, by, expected):
    path = write(tmp_path, GOOD.replace(replace, by))
    with pytest.raises(CurateError, match=expected):
        load_rules(path)


def test_signal_measured_on_other_turns_is_refused(tmp_path):
    text = GOOD.replace("signal: words", "signal: tokens").replace("min_words", "min_tokens").replace("turns: assistant", "turns: user")
    with pytest.raises(CurateError, match=r"rule short: key turns: signal tokens is measured on assistant only"):
        load_rules(write(tmp_path, text))


def test_duplicate_ids_and_bad_yaml(tmp_path):
    dup = GOOD + GOOD.split("rules:\n", 1)[1]
    with pytest.raises(CurateError, match=r"rules.yaml:10: rule short: key id: duplicate id \(first defined as rule #1\)"):
        load_rules(write(tmp_path, dup))
    with pytest.raises(CurateError, match=r"rules.yaml:4: not valid YAML: expected "):
        load_rules(write(tmp_path, "rules:\n  - id: [\n  x: 1\n"))
    with pytest.raises(CurateError, match=r"key rules: List should have at least 1 item"):
        load_rules(write(tmp_path, "version: 1\nrules: []\n"))


def test_null_threshold_disables_a_rule():
    off = Rule.model_validate({"id": "off", "description": "d", "signal": "words", "weight": 1, "min_words": None})
    on = Rule.model_validate({"id": "on", "description": "d", "signal": "words", "weight": 1, "max_words": 2})
    compiled = compile_rules([off, on])
    assert [r.id for r in compiled.rules] == ["on"]


def test_compiled_rule_fires_below_min_and_above_max_never_on_null():
    rule = Rule.model_validate(
        {"id": "band", "description": "d", "signal": "words", "weight": 0.5, "min_words": 2, "max_words": 4}
    )
    values = pl.DataFrame({"v": [1.0, 2.0, 4.0, 5.0, None]})
    assert values.select(rule.fired(pl.col("v"))).to_series().to_list() == [True, False, False, True, False]


def test_default_rules_are_found_without_the_source_tree(tmp_path, monkeypatch):
    # An installed wheel has no rules/ beside the package: the copy shipped as package data is used.
    import curator.rules as rules_module

    monkeypatch.setattr(rules_module, "SOURCE_ROOT", tmp_path / "no-source-tree")
    monkeypatch.chdir(tmp_path)
    found = rules_module.resolve_rules_path("rules/default.yaml")
    assert found == rules_module.PACKAGED_RULES / "default.yaml"
    assert found.read_text(encoding="utf-8") == (ROOT / "rules" / "default.yaml").read_text(encoding="utf-8")


def test_score_is_rounded_so_a_threshold_at_a_product_of_weights_holds():
    rules = compile_rules([
        Rule.model_validate({"id": i, "description": "d", "signal": "words", "max_words": 1, "weight": w})
        for i, w in (("a", 0.2), ("b", 0.3))
    ])
    a, b = (rules.fired_col(r) for r in rules.rules)
    fired = pl.DataFrame({a: [True, True, False], b: [True, False, False]})
    scores = fired.select(rules.score_expr().alias("s"))["s"].to_list()
    assert scores == [0.56, 0.8, 1.0]  # 0.8 * 0.7 is 0.5599999999999999 unrounded


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 2\n" + GOOD.split("\n", 1)[1], r"rules.yaml:1: key version: Input should be 1"),
        ("# rules\nversion: 1\nrules: []\n", r"rules.yaml:3: key rules: List should have at least 1 item after validation, not 0"),
        ("version: 1\nrules: {short: 1}\n", r"rules.yaml:2: key rules: Input should be a valid list"),
        (GOOD + "colour: red\n", r"rules.yaml:10: key colour: unknown key; allowed: version, rules"),
        ("# nothing yet\n", r"rules.yaml: a rule file is a mapping with a `rules` list, got an empty file"),
    ],
)
def test_top_level_errors_name_the_line(tmp_path, text, expected):
    with pytest.raises(CurateError) as caught:
        load_rules(write(tmp_path, text))
    assert str(caught.value) == f"{tmp_path}/{expected}"


def test_duplicate_keys_are_refused_naming_the_line(tmp_path):
    with pytest.raises(CurateError) as caught:
        load_rules(write(tmp_path, GOOD.replace("    weight: 0.5\n", "    weight: 0.5\n    min_words: 1\n")))
    assert str(caught.value) == f"{tmp_path / 'rules.yaml'}:9: duplicate key 'min_words' (first on line 7)"
    with pytest.raises(CurateError) as caught:
        load_rules(write(tmp_path, GOOD + "version: 1\n"))
    assert str(caught.value) == f"{tmp_path / 'rules.yaml'}:10: duplicate key 'version' (first on line 1)"


def test_a_rule_that_is_not_a_mapping_is_named_without_pydantic_prefix(tmp_path):
    with pytest.raises(CurateError) as caught:
        load_rules(write(tmp_path, "version: 1\nrules:\n  - short\n"))
    assert str(caught.value) == f"{tmp_path / 'rules.yaml'}:3: rule #1: a rule is a mapping of keys, got str"
