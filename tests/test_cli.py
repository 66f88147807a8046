"""The `curate` command line: validate output format, exit codes, and one-line errors."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

from click.testing import CliRunner

from curator.cli import cli
from tests.conftest import chat, write_lines

GOOD = chat(("user", "hi"), ("assistant", "hello"))


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_validate_good_file_exits_0(tmp_path):
    path = write_lines(tmp_path / "ok.jsonl", [GOOD, GOOD])
    result = invoke("validate", str(path))
    assert result.exit_code == 0
    assert result.output == ""


def test_validate_prints_one_line_per_problem_and_exits_1(tmp_path):
    path = write_lines(
        tmp_path / "bad.jsonl",
        [GOOD, {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}, {"role": "robot", "content": "d"}]}, b"{oops"],
    )
    result = invoke("validate", str(path))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{path}:2: messages[3].role: Input should be 'system', 'user', 'assistant' or 'tool' [schema.bad_role]",
        f"{path}:3: invalid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1) [io.bad_json]",
    ]


def test_validate_json_format(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [GOOD, {"messages": []}])
    result = invoke("validate", "--format", "json", str(path))
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["records"] == 2 and report["errors"] == 1 and report["warnings"] == 0
    assert report["problems"] == [
        {"file": str(path), "line": 2, "field": "messages", "message": "List should have at least 1 item after validation, not 0", "code": "schema.empty_messages", "severity": "error"}
    ]


def test_validate_max_errors_stops_early(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [b"x"] * 10)
    result = invoke("validate", "--max-errors", "3", "--format", "json", str(path))
    report = json.loads(result.stdout)
    assert result.exit_code == 1
    assert report["errors"] == 3 and report["records"] == 3 and report["stopped_at_max_errors"] is True


def test_validate_reads_gzip_and_warns_without_failing(tmp_path):
    path = tmp_path / "a.jsonl.gz"
    # `id` is known (curate run writes it); another unknown field is a warning
    path.write_bytes(gzip.compress((json.dumps({**GOOD, "id": 1, "origin": "forum"}) + "\n").encode()))
    result = invoke("validate", str(path))
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [f"warning: {path}:1: origin: unknown field, kept under meta._extra [schema.extra_field]"]
    assert invoke("validate", "--strict", str(path)).exit_code == 1


def test_missing_file_is_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {tmp_path / 'nope.jsonl'}: no such file"


def test_a_folder_is_one_line_error_naming_what_to_pass(tmp_path):
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {tmp_path}: is a folder; pass the files in it (e.g. {tmp_path}/*.jsonl)"


def test_run_warns_about_paths_it_did_not_read_even_when_quiet(tmp_path):
    write_lines(tmp_path / "raw" / "a.jsonl", [GOOD])
    write_lines(tmp_path / "raw" / "b.ndjson", [GOOD])
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "raw"), str(tmp_path / "out"), "--quiet", "--no-gate"])
    assert result.exit_code == 0
    raw = tmp_path / "raw"
    assert result.stderr.splitlines() == [
        f"warning: 1 path under {raw} not read ({(raw / 'b.ndjson').as_posix()}); see inputs_skipped in manifest.json"
    ]


def test_run_refuses_non_empty_out_with_one_line(tmp_path):
    write_lines(tmp_path / "raw" / "a.jsonl", [GOOD])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "raw"), str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"error: {tmp_path / 'out'}: folder is not empty and is not an earlier curate output (no manifest.json); "
        "--force replaces only an earlier run, choose another OUT"
    )


def test_run_gate_failure_exits_3_after_writing(tmp_path):
    write_lines(tmp_path / "raw" / "a.jsonl", [GOOD])
    args = ["run", str(tmp_path / "raw"), str(tmp_path / "out"), "--quiet", "-s", "skip_stages=[secrets,language,code_language,tokens,quality,dedup_minhash,select]"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 3
    assert "size.min_examples: 1 examples kept, 9,999 short of the minimum of 10,000" in result.output
    assert (tmp_path / "out" / "manifest.json").exists()
    result = CliRunner().invoke(cli, [*args, "--force", "--no-gate"])
    assert result.exit_code == 0


def test_validate_names_the_line_a_json_element_starts_on(tmp_path):
    path = tmp_path / "pretty.json"
    bad = {"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]}
    path.write_text(json.dumps([GOOD, bad, GOOD, bad], indent=2), encoding="utf-8")
    result = invoke("validate", str(path))
    assert result.exit_code == 1
    message = "messages[1].role: Input should be 'system', 'user', 'assistant' or 'tool' [schema.bad_role]"
    # json.dumps(indent=2) gives each record 12 lines, after the opening bracket's line
    assert result.stdout.splitlines() == [f"{path}:14: {message}", f"{path}:38: {message}"]


def test_validate_warns_of_a_record_in_another_shape_than_the_file(tmp_path):
    alpaca = {"instruction": "Say hi.", "input": "", "output": "Hi."}
    path = write_lines(tmp_path / "chat.jsonl", [GOOD, alpaca, GOOD, alpaca])
    result = invoke("validate", str(path))
    assert result.exit_code == 0  # a warning: `curate run` converts the record
    warning = "alpaca record in a file whose first record (line 1) is chat [format.mixed_shapes]"
    assert result.stdout.splitlines() == [f"warning: {path}:2: {warning}", f"warning: {path}:4: {warning}"]
    assert invoke("validate", "--strict", str(path)).exit_code == 1
    assert invoke("validate", "--input-format", "chat", str(path)).stdout.count("[format.mixed_shapes]") == 0


def test_validate_does_not_import_heavy_modules(tmp_path):
    path = write_lines(tmp_path / "ok.jsonl", [GOOD])
    code = (
        "import sys\n"
        "from curator.cli import main\n"
        f"sys.argv = ['curate', 'validate', {str(path)!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'polars', 'tokenizers', 'tree_sitter', 'datasketch') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_pipeline_does_not_import_torch():
    code = (
        "import sys\n"
        "import curator.pipeline, curator.report, curator.report.commands, finetune.commands\n"
        "print([m for m in ('torch', 'transformers', 'peft') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- config, rules and tokenizer errors: one line, found before any work --------------------------------

# every stage but quality and tokens skipped: runs in a moment, and both of them check their files first
QUICK = "skip_stages=[secrets,language,code_language,dedup_minhash,select]"


def run_one(tmp_path, *args: str, env: dict | None = None):
    raw = write_lines(tmp_path / "raw" / "a.jsonl", [GOOD])
    return CliRunner().invoke(cli, ["run", str(raw), str(tmp_path / "out"), "--quiet", "--no-gate", "-s", QUICK, *args], env=env)


def test_rules_and_model_options_are_plain_strings_not_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r #2").mkdir()
    rules = (tmp_path / "r #2" / "rules.yaml")
    rules.write_text("version: 1\nrules:\n  - {id: short, description: d, signal: words, max_words: 1, weight: 0.5}\n")
    result = run_one(tmp_path, "--rules", "r #2/rules.yaml")
    assert (result.exit_code, result.stderr) == (0, "")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["quality"]["rules"] == "r #2/rules.yaml"
    rules.rename(tmp_path / "[x].yaml")
    result = run_one(tmp_path, "--rules", "[x].yaml", "--force")
    assert (result.exit_code, result.stderr) == (0, "")
    result = run_one(tmp_path, "--model", "/models/my tok #3", "--force")
    assert result.stderr == (
        "error: tokens.model: '/models/my tok #3' is neither a profile (mistral-7b-instruct-v0.2, codellama-13b-instruct, "
        "phi-3-mini-4k-instruct) nor a folder holding a Hugging Face tokenizer\n"
    )


def test_a_bad_rules_file_or_model_stops_the_run_before_raw_is_read(tmp_path, monkeypatch):
    import curator.pipeline

    def no_reading(*args, **kwargs):
        raise AssertionError("RAW was read")

    monkeypatch.setattr(curator.pipeline, "read_lines", no_reading)
    bad = tmp_path / "rules.yaml"
    bad.write_text("version: 2\nrules: []\n")
    result = run_one(tmp_path, "--rules", str(bad))
    assert (result.exit_code, result.stderr) == (1, f"error: {bad}:1: key version: Input should be 1 (2 errors in the file)\n")
    result = run_one(tmp_path, "--model", "gpt-5")
    assert result.exit_code == 1 and result.stderr.startswith("error: tokens.model: 'gpt-5' is neither a profile")
    # a skipped stage's file is not needed
    result = run_one(tmp_path, "--rules", str(bad), "-s", "skip_stages=[secrets,language,code_language,tokens,quality,dedup_minhash,select]")
    assert result.exit_code == 1 and "RAW was read" in result.stderr


def test_a_bad_tokenizer_json_names_the_file(tmp_path):
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "tokenizer.json").write_text("x")
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ x }}", "bos_token": "<s>", "eos_token": "</s>"}))
    result = run_one(tmp_path, "--model", str(folder), "-s", "tokens.context_length=100")
    assert (result.exit_code, result.stderr) == (
        1, f"error: {folder / 'tokenizer.json'}: not a valid tokenizer.json: expected value at line 1 column 1\n"
    )


def test_config_errors_are_one_line_naming_the_override_or_the_file_and_line(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("seed: 3\ntokens:\n  policy: truncate\n")
    result = CliRunner().invoke(cli, ["config", "--config", str(good), "-s", "tokens.policy=trunc"])
    assert (result.exit_code, result.stderr) == (1, "error: -s tokens.policy=trunc: Input should be 'reject', 'truncate' or 'report'\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\ntokens:\n  policy: [truncate\nsplit: {}\n")
    result = CliRunner().invoke(cli, ["config", "--config", str(bad)])
    assert (result.exit_code, result.stderr) == (1, f"error: {bad}:4: not valid YAML: expected ',' or ']', but got ':'\n")
    result = CliRunner().invoke(cli, ["config", "-s", "seed=["])
    assert (result.exit_code, result.stderr) == (1, "error: -s seed=[: not valid YAML: expected the node content, but found '<stream end>'\n")
    result = run_one(tmp_path, "-s", "normalize.unicode_form=nfc")
    assert (result.exit_code, result.stderr) == (1, "error: -s normalize.unicode_form=nfc: Input should be 'NFC', 'NFKC', 'NFD' or 'NFKD'\n")


def broken_config(monkeypatch):
    import curator.config

    def broken(*args, **kwargs):
        raise RuntimeError("regex error: regex parse error:\n    (?:*\\.corp)$\n    ^\nerror: repetition operator missing expression")

    monkeypatch.setattr(curator.config, "load_config", broken)


def test_an_internal_error_is_the_first_line_of_its_message(monkeypatch):
    broken_config(monkeypatch)
    result = CliRunner().invoke(cli, ["config"], env={"CURATE_DEBUG": None})
    assert (result.exit_code, result.stderr) == (
        1, "error: internal error: RuntimeError: regex error: regex parse error: (set CURATE_DEBUG=1 for the traceback)\n"
    )


def test_curate_debug_0_shows_no_traceback(monkeypatch):
    broken_config(monkeypatch)
    for value in ("0", "false", "no", ""):
        result = CliRunner().invoke(cli, ["config"], env={"CURATE_DEBUG": value})
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), value
    for value in ("1", "true", "YES"):
        result = CliRunner().invoke(cli, ["config"], env={"CURATE_DEBUG": value})
        assert isinstance(result.exception, RuntimeError), value


def test_progress_bars_go_to_stderr(tmp_path):
    raw = write_lines(tmp_path / "raw" / "a.jsonl", [GOOD])
    args = ["run", str(raw), str(tmp_path / "out"), "--no-gate", "-s", "skip_stages=[secrets,language,code_language,tokens,quality,dedup_minhash,select]"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "read + validate" in result.stderr
