"""The command line's shared behaviour: the secret check of `curate validate`, what RAW may hold, a run
that keeps nothing, one-line errors and quiet third-party warnings."""

from __future__ import annotations

from click.testing import CliRunner

from curator.cli import cli
from tests.conftest import chat, write_lines

OPENAI_KEY = "sk-" + "A1b2C3d4E5" * 4 + "F6g7H8i9"
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAs3cr3t\n-----END RSA PRIVATE KEY-----"


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_validate_secrets_reports_each_secret_by_kind_and_exits_1(tmp_path):
    leaky = chat(("user", f"my key:\n{PRIVATE_KEY}"), ("assistant", f"use {OPENAI_KEY}"))
    leaky["meta"] = {"contact": "jane.doe@example.com"}
    path = write_lines(tmp_path / "data.jsonl", [chat(("user", "hi"), ("assistant", "hello")), leaky])
    result = invoke("validate", "--secrets", str(path))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{path}:2: messages[0].content: private_key [secrets.private_key]",
        f"{path}:2: messages[1].content: openai_key [secrets.openai_key]",
        f"warning: {path}:2: meta.contact: email [secrets.email]",
    ]
    assert OPENAI_KEY not in result.output and "MIIEow" not in result.output and "jane.doe" not in result.output


def test_validate_secrets_finds_tool_arguments_and_meta_keys_without_quoting_them(tmp_path):
    record = chat(("user", "deploy"), ("assistant", "ok"))
    record["messages"][1]["tool_calls"] = [{"type": "function", "function": {"name": "f", "arguments": {"token": OPENAI_KEY}}}]
    record["meta"] = {OPENAI_KEY: 1}
    path = write_lines(tmp_path / "data.jsonl", [record])
    result = invoke("validate", "--secrets", str(path))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert f"{path}:1: messages[1].tool_calls[0].function.arguments.token: openai_key [secrets.openai_key]" in lines
    assert f"{path}:1: meta.[REDACTED:openai_key]: openai_key [secrets.openai_key]" in lines
    assert OPENAI_KEY not in result.output


def test_validate_secrets_fails_on_a_temporary_aws_access_key_id(tmp_path):
    key = "ASIAZ2QW7YXK4MDN3BTE"
    path = write_lines(tmp_path / "data.jsonl", [chat(("user", f"id {key}"), ("assistant", "ok"))])
    result = invoke("validate", "--secrets", str(path))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [f"{path}:1: messages[0].content: aws_access_key [secrets.aws_access_key]"]
    assert key not in result.output


def test_validate_secrets_passes_a_clean_file_and_is_off_by_default(tmp_path):
    clean = write_lines(tmp_path / "clean.jsonl", [chat(("user", "hi"), ("assistant", "hello"))])
    assert invoke("validate", "--secrets", str(clean)).exit_code == 0
    leaky = write_lines(tmp_path / "leaky.jsonl", [chat(("user", OPENAI_KEY), ("assistant", "ok"))])
    result = invoke("validate", str(leaky))
    assert (result.exit_code, result.output) == (0, "")


def test_validate_secrets_contact_details_are_warnings_only(tmp_path):
    path = write_lines(tmp_path / "data.jsonl", [chat(("user", "call 555-123-4567"), ("assistant", "ok"))])
    result = invoke("validate", "--secrets", str(path))
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [f"warning: {path}:1: messages[0].content: phone [secrets.phone]"]


def test_precommit_hook_turns_secrets_on():
    import yaml
    from pathlib import Path

    hooks = yaml.safe_load((Path(__file__).resolve().parents[1] / ".pre-commit-hooks.yaml").read_text())
    assert hooks[0]["args"] == ["--secrets"]


def test_run_skips_a_raw_file_that_is_not_json(tmp_path):
    raw = tmp_path / "data.csv"
    raw.write_text("role,content\nuser,hi\n")
    result = invoke("run", str(raw), str(tmp_path / "out"), "-q")
    assert result.exit_code == 1
    assert result.output == (
        f"error: {raw}: not read: not .jsonl, .jsonl.gz, .json or .json.gz, and does not start like JSON; no input file found\n"
    )
    assert not (tmp_path / "out").exists()


def test_run_names_what_it_passed_over_in_a_folder_without_input(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "data.csv").write_text("a,b\n")
    result = invoke("run", str(tmp_path / "raw"), str(tmp_path / "out"), "-q")
    assert result.exit_code == 1
    assert result.output == (
        f"error: {tmp_path / 'raw'}: no .jsonl, .jsonl.gz or .json files found; "
        f"not read: {tmp_path / 'raw' / 'data.csv'} (not .jsonl, .jsonl.gz, .json or .json.gz)\n"
    )


def test_run_reads_a_raw_file_named_otherwise_that_starts_like_jsonl(tmp_path):
    raw = write_lines(tmp_path / "export.txt", [chat(("user", "hi"), ("assistant", "hello"))])
    result = invoke("run", str(raw), str(tmp_path / "out"), "-q", "--no-gate")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "manifest.json").exists()


NO_SIZE_GATES = ("-s", "gates.min_examples=null", "-s", "quality.min_high_quality_rate=null", "-s", "code_language.min_languages=null")


def test_run_that_keeps_nothing_fails_the_size_kept_gate_with_the_main_reason(tmp_path):
    raw = write_lines(tmp_path / "chat.jsonl", [chat(("user", "hi"), ("assistant", "hello"))] * 2)
    result = invoke("run", str(raw), str(tmp_path / "out"), "-q", "--input-format", "sharegpt", *NO_SIZE_GATES)
    assert result.exit_code == 3
    assert result.output == (
        "error: gate failed: size.kept: 0 of 2 records kept; the main reject reason is format.bad_type (2 records)"
        f" (outputs written to {tmp_path / 'out'})\n"
    )


def test_run_that_keeps_nothing_exits_0_with_no_gate(tmp_path):
    raw = write_lines(tmp_path / "chat.jsonl", [chat(("user", "hi"), ("assistant", "hello"))])
    result = invoke("run", str(raw), str(tmp_path / "out"), "-q", "--no-gate", "--input-format", "sharegpt", *NO_SIZE_GATES)
    assert (result.exit_code, result.output) == (0, "")
    manifest = __import__("json").loads((tmp_path / "out" / "manifest.json").read_text())
    assert [(g["name"], g["passed"]) for g in manifest["gates"]] == [("size.kept", False), ("tokens.within_context", True)]


def test_path_errors_of_train_export_and_sample_are_one_line_not_clicks_usage_block(tmp_path):
    not_a_folder = write_lines(tmp_path / "val.jsonl", [chat(("user", "hi"), ("assistant", "hello"))])
    (tmp_path / "adapter").mkdir()
    cases = [
        (["export", str(tmp_path / "missing"), "--merge", str(tmp_path / "m")], f"{tmp_path / 'missing'}: no such folder"),
        (["export", str(not_a_folder), "--merge", str(tmp_path / "m")], f"{not_a_folder}: not a folder (pass the --output folder of `curate train`)"),
        (["export", str(tmp_path / "adapter"), "--merge", str(not_a_folder)], f"{not_a_folder}: not a folder (--merge writes a model folder)"),
        (["export", str(tmp_path / "adapter"), "--compare", str(tmp_path / "nope.jsonl")], f"{tmp_path / 'nope.jsonl'}: no such file (--compare reads a val.jsonl)"),
        (["train", str(not_a_folder), "-o", str(tmp_path / "a")], f"{not_a_folder}: not a folder (expected the OUT folder of `curate run`)"),
        (["sample", str(tmp_path), "--output", str(not_a_folder)], f"{not_a_folder}: not a folder (--output is where the review sheet is written)"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(cli, args)
        assert (result.exit_code, result.output) == (1, f"error: {message}\n"), args


def test_train_unknown_key_lists_the_allowed_keys_as_run_does(tmp_path):
    result = CliRunner().invoke(cli, ["train", str(tmp_path), "-o", str(tmp_path / "a"), "-s", "lora.rr=8"])
    assert result.exit_code == 1
    assert result.output == "error: -s lora.rr=8: Extra inputs are not permitted; allowed: r, alpha, dropout, target_modules\n"
    run = CliRunner().invoke(cli, ["run", str(tmp_path), str(tmp_path / "o"), "-s", "split.foo=1"])
    assert run.output == "error: -s split.foo=1: Extra inputs are not permitted; allowed: val_fraction\n"


def _warning_group():
    """A curate-style group whose command warns as transformers does, and as curator itself may."""
    import warnings

    import click

    from curator.cli import CuratorGroup

    @click.group(cls=CuratorGroup)
    def group() -> None:
        pass

    @group.command()
    def noisy() -> None:
        warnings.warn_explicit("`torch_dtype` is deprecated", FutureWarning, "modeling_utils.py", 1, module="transformers.modeling_utils")
        warnings.warn_explicit("packed attention not checked", UserWarning, "modeling.py", 2, module="finetune.modeling")
        click.echo("done")

    return group


def _shown_warnings(group) -> list[str]:
    """The warnings the command let through (recorded here rather than printed: pytest takes over printing)."""
    import warnings

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")  # what the command filters is then all that hides a warning
        result = CliRunner().invoke(group, ["noisy"])
    assert (result.exit_code, result.stdout) == (0, "done\n")
    return [f"{w.category.__name__}: {w.message}" for w in shown]


def test_third_party_warnings_are_hidden_and_curators_own_kept(monkeypatch):
    monkeypatch.delenv("CURATE_DEBUG", raising=False)
    assert _shown_warnings(_warning_group()) == ["UserWarning: packed attention not checked"]


def test_third_party_warnings_are_shown_with_curate_debug(monkeypatch):
    monkeypatch.setenv("CURATE_DEBUG", "1")
    assert _shown_warnings(_warning_group()) == [
        "FutureWarning: `torch_dtype` is deprecated", "UserWarning: packed attention not checked"
    ]


def test_transformers_logger_is_set_to_errors_only_while_a_command_runs(monkeypatch):
    import os

    import click

    from curator.cli import CuratorGroup

    @click.group(cls=CuratorGroup)
    def group() -> None:
        pass

    @group.command()
    def show() -> None:
        click.echo(os.environ.get("TRANSFORMERS_VERBOSITY", "unset"))

    monkeypatch.delenv("CURATE_DEBUG", raising=False)
    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    assert CliRunner().invoke(group, ["show"]).stdout == "error\n"
    assert "TRANSFORMERS_VERBOSITY" not in os.environ
    monkeypatch.setenv("CURATE_DEBUG", "1")
    assert CliRunner().invoke(group, ["show"]).stdout == "unset\n"
