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
    path.write_bytes(gzip.compress((json.dumps({**GOOD, "id": 1}) + "\n").encode()))
    result = invoke("validate", str(path))
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [f"warning: {path}:1: id: unknown field, kept under meta._extra [schema.extra_field]"]
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
    assert result.output.strip() == f"error: {tmp_path / 'out'}: folder is not empty; use --force to replace it"


def test_run_gate_failure_exits_3_after_writing(tmp_path):
    write_lines(tmp_path / "raw" / "a.jsonl", [GOOD])
    args = ["run", str(tmp_path / "raw"), str(tmp_path / "out"), "--quiet", "-s", "skip_stages=[secrets,language,code_language,tokens,quality,dedup_minhash,select]"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 3
    assert "size.min_examples: 1 examples kept, 9,999 short of the minimum of 10,000" in result.output
    assert (tmp_path / "out" / "manifest.json").exists()
    result = CliRunner().invoke(cli, [*args, "--force", "--no-gate"])
    assert result.exit_code == 0


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
