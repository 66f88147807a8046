"""CurateConfig loading: values checked at load, one-line errors naming the override or the file, key
and line, duplicate keys refused, option values taken as they are."""

from __future__ import annotations

import pytest

from curator.config import load_config
from curator.errors import CurateError


def error_of(*args, **kwargs) -> str:
    with pytest.raises(CurateError) as caught:
        load_config(*args, **kwargs)
    return str(caught.value)


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- B1: option values are plain strings; a bad YAML value in -s is one line naming it ----------------


def test_option_values_are_taken_as_they_are_not_as_yaml():
    config = load_config(
        None,
        [],
        values={"quality.rules": "r #2/rules.yaml", "tokens.model": "/models/my tok #3", "input.format": "alpaca"},
    )
    assert config.quality.rules == "r #2/rules.yaml"  # " #2..." is not cut off as a YAML comment
    assert config.tokens.model == "/models/my tok #3"
    assert config.input.format == "alpaca"
    assert load_config(None, [], values={"quality.rules": "[x].yaml"}).quality.rules == "[x].yaml"


def test_option_values_apply_after_overrides():
    config = load_config(None, ["tokens.model=a", "tokens.policy=truncate"], values={"tokens.model": "b"})
    assert (config.tokens.model, config.tokens.policy) == ("b", "truncate")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("seed=[", "-s seed=[: not valid YAML: expected the node content, but found '<stream end>'"),
        ("skip_stages=[a, b", "-s skip_stages=[a, b: not valid YAML: expected ',' or ']', but got '<stream end>'"),
        ("tokens.throughput={a: 1, a: 2}", "-s tokens.throughput={a: 1, a: 2}: duplicate key 'a' (first on line 1)"),
    ],
)
def test_a_bad_yaml_value_in_an_override_is_one_line_naming_it(override, expected):
    assert error_of(None, [override]) == expected


# --- B3: values checked at load, the error names the key ---------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("input.format=foo", "-s input.format=foo: Input should be 'auto', 'chat', 'alpaca', 'sharegpt' or 'gpteacher'"),
        ("normalize.unicode_form=nfc", "-s normalize.unicode_form=nfc: Input should be 'NFC', 'NFKC', 'NFD' or 'NFKD'"),
        ("dedup_minhash.seed=-5", "-s dedup_minhash.seed=-5: Input should be greater than or equal to 0"),
        ("dedup_minhash.seed=4294967296", "-s dedup_minhash.seed=4294967296: Input should be less than or equal to 4294967295"),
        ("input.max_line_bytes=0", "-s input.max_line_bytes=0: Input should be greater than or equal to 1024"),
        (
            'secrets.ignore_email_domains=["*.corp"]',
            "-s secrets.ignore_email_domains=[\"*.corp\"]: secrets.ignore_email_domains.0: String should match "
            r"pattern '^\.?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.?$' (got '*.corp')",
        ),
    ],
)
def test_bad_values_fail_at_load_naming_the_key(override, expected):
    assert error_of(None, [override]) == expected


def test_good_values_of_the_checked_keys_load():
    config = load_config(
        None,
        [
            "normalize.unicode_form=null",
            "dedup_minhash.seed=4294967295",
            "secrets.ignore_email_domains=[corp, .internal.example.org, my-test]",
            "input.max_line_bytes=1024",
            "input.format=sharegpt",
        ],
    )
    assert config.normalize.unicode_form is None
    assert config.secrets.ignore_email_domains == ["corp", ".internal.example.org", "my-test"]


# --- B4: an error from an override names the override, not the config file --------------------------


def test_an_override_error_names_the_override_not_the_file(tmp_path):
    good = write(tmp_path, "good.yaml", "seed: 3\ntokens:\n  policy: truncate\n")
    assert error_of(good, ["tokens.policy=trunc"]) == "-s tokens.policy=trunc: Input should be 'reject', 'truncate' or 'report'"
    # an override deeper or shallower than the failing key is still the one named, with the key
    assert error_of(good, ["skip_stages=[tokens, foo]"]).startswith("-s skip_stages=[tokens, foo]: unknown or required stage 'foo'")
    assert error_of(good, ["dedup_minhash.short_ngram=9"]) == (
        "-s dedup_minhash.short_ngram=9: dedup_minhash: short_ngram (9) must not exceed ngram (5)"
    )


def test_a_file_error_is_not_blamed_on_an_unrelated_override(tmp_path):
    bad = write(tmp_path, "bad.yaml", "seed: 3\ntokens:\n  policy: trunc\n")
    assert error_of(bad, ["tokens.context_length=100", "seed=4"]) == (
        f"{bad}: tokens.policy: Input should be 'reject', 'truncate' or 'report' (line 3)"
    )


# --- B5: one line, with the line in the file ------------------------------------------------------


def test_a_yaml_syntax_error_is_one_line_with_the_line(tmp_path):
    bad = write(tmp_path, "bad.yaml", "seed: 1\ntokens:\n  policy: [truncate\nsplit: {}\n")
    assert error_of(bad) == f"{bad}:4: not valid YAML: expected ',' or ']', but got ':'"


def test_a_toml_syntax_error_is_one_line_with_the_line(tmp_path):
    bad = write(tmp_path, "bad.toml", "seed = 1\n[tokens]\npolicy = \n")
    assert error_of(bad) == f"{bad}:3: not valid TOML: Invalid value (at line 3, column 10)"


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("c.yaml", "seed: 3\n\ntokens:\n  # a comment\n  policy: trunc\n", "tokens.policy: Input should be 'reject', 'truncate' or 'report' (line 5)"),
        ("c.yaml", "split:\n  val_fraction: 2\n", "split.val_fraction: Input should be less than or equal to 1 (line 2)"),
        ("c.yaml", "skip_stages:\n  - tokens\n  - 7\n", "skip_stages.1: Input should be a valid string (line 3)"),
        ("c.yaml", "validate:\n  extra_fields: keep\n", "validate.extra_fields: String should match pattern '^(warn|reject)$' (got 'keep') (line 2)"),
        ("c.yaml", "seed: 1\ntokens: {polcy: x}\n", "tokens.polcy: Extra inputs are not permitted; allowed: model, tokenizer_path, "
         "context_length, policy, batch_size, epochs, prices_file, throughput, mfu, n_params (line 2)"),
        ("c.toml", "seed = 3\n\n[tokens]\n# x\npolicy = \"trunc\"\n", "tokens.policy: Input should be 'reject', 'truncate' or 'report' (line 5)"),
        ("c.toml", "seed = 3\n[secrets.policy]\nemail = \"delete\"\n", "secrets.policy.email: Input should be 'reject', 'redact' or 'flag' (line 3)"),
    ],
)
def test_a_bad_value_in_a_file_names_file_key_and_line(tmp_path, name, text, expected):
    path = write(tmp_path, name, text)
    assert error_of(path) == f"{path}: {expected}"


def test_several_errors_are_counted_on_the_one_line(tmp_path):
    path = write(tmp_path, "c.yaml", "seed: x\ntokens: {policy: trunc}\n")
    assert error_of(path) == f"{path}: seed: Input should be a valid integer, unable to parse string as an integer (line 1; 2 errors in config)"


# --- B7: duplicate keys are refused ----------------------------------------------------------------


def test_duplicate_keys_in_a_config_file_are_refused(tmp_path):
    path = write(tmp_path, "dup.yaml", "seed: 1\nseed: 2\n")
    assert error_of(path) == f"{path}:2: duplicate key 'seed' (first on line 1)"
    path = write(tmp_path, "dup.yaml", "seed: 1\ntokens:\n  policy: truncate\n  context_length: 10\n  policy: report\n")
    assert error_of(path) == f"{path}:5: duplicate key 'policy' (first on line 3)"
    path = write(tmp_path, "dup.yaml", "tokens: {policy: truncate}\ntokens: {context_length: 100}\n")
    assert error_of(path) == f"{path}:2: duplicate key 'tokens' (first on line 1)"


def test_yaml_merge_keys_may_be_overridden(tmp_path):
    # a merge (`<<`) is the one place where giving a key again is intended
    path = write(tmp_path, "m.yaml", "tokens:\n  <<: {policy: truncate, context_length: 10}\n  policy: report\n")
    config = load_config(path)
    assert (config.tokens.policy, config.tokens.context_length) == ("report", 10)


# --- minor: TOML suffix in any case, empty sections, empty files ----------------------------------


def test_a_toml_suffix_in_any_case_is_toml(tmp_path):
    path = write(tmp_path, "GOOD.TOML", 'seed = 3\n[tokens]\npolicy = "truncate"\n')
    config = load_config(path)
    assert (config.seed, config.tokens.policy) == (3, "truncate")


def test_a_section_with_every_key_commented_out_is_empty(tmp_path):
    path = write(tmp_path, "c.yaml", "seed: 3\ntokens:\n  # policy: truncate\nsecrets:\n  policy:\n")
    config = load_config(path)
    assert (config.seed, config.tokens.policy, config.secrets.policy.email) == (3, "reject", "redact")
    assert load_config(path, ["tokens.policy=truncate"]).tokens.policy == "truncate"
    assert load_config(write(tmp_path, "empty.yaml", "# nothing yet\n")).seed == 0
    # a null where a value (not a section) belongs is still an error
    assert error_of(write(tmp_path, "n.yaml", "seed:\n")) == f"{tmp_path / 'n.yaml'}: seed: Input should be a valid integer (line 1)"


def test_a_select_target_with_quality_skipped_fails_at_load():
    with pytest.raises(CurateError, match=r"^-s select.target=4: select: select.target=4 ranks examples by quality_score"):
        load_config(None, ["skip_stages=[quality]", "select.target=4"])
    assert load_config(None, ["skip_stages=[quality,select]", "select.target=4"]).select.target == 4


def test_curate_config_prints_every_key_documented_and_reads_back(tmp_path):
    from click.testing import CliRunner

    from curator.cli import cli
    from curator.stages.registry import STAGES

    result = CliRunner().invoke(cli, ["config", "-s", "tokens.policy=truncate", "-s", "select.target=null"])
    assert result.exit_code == 0, result.output
    text = result.output
    lines = text.splitlines()
    keys = [i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]
    assert all(lines[i - 1].lstrip().startswith("# ") for i in keys)  # every key has its description above it
    for stage in STAGES:
        assert f"# stage {stage.name} ({stage.kind}): {stage.doc}\n{stage.name}:\n" in text
    assert "  # examples over the context: reject | truncate (drop earliest exchanges) | report\n  policy: truncate\n" in text
    path = tmp_path / "curate.yaml"
    path.write_text(text, encoding="utf-8")
    again = load_config(path)
    assert again.resolved() == load_config(None, ["tokens.policy=truncate", "select.target=null"]).resolved()
