"""curator.manifest: the manifest.json a run writes reads back through the model, byte for byte; an old or
malformed one is one line naming the file and the field; reading it costs pydantic, not polars or a stage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from curator.errors import CurateError
from curator.manifest import MANIFEST_VERSION, parse_manifest, read_manifest
from tests.finetune_support import curate, real_records


@pytest.fixture(scope="module")
def run_out(tmp_path_factory):
    return curate(tmp_path_factory.mktemp("manifest"), real_records("llamafactory_identity.jsonl", 12))


def test_a_runs_manifest_reads_back_and_writes_the_same_bytes(run_out):
    text = (run_out / "manifest.json").read_text(encoding="utf-8")
    manifest = read_manifest(run_out)
    assert manifest.to_json() == text
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    assert manifest.manifest_version == MANIFEST_VERSION == 2


def test_the_tokenization_part_says_how_the_data_was_tokenized_and_budgeted(run_out):
    tokenization = read_manifest(run_out).tokenization
    assert (tokenization.model, tokenization.chat_format, tokenization.context_length, tokenization.policy) == (
        "mistral-7b-instruct-v0.2", "mistral-v1", 8192, "reject"
    )
    assert tokenization.tokenizer_path is None and tokenization.chat_template == "chat_template.jinja"
    assert tokenization.tokenizer_arguments() == ("mistral-7b-instruct-v0.2", None)


def _edited(run_out, tmp_path, edit) -> str:
    data = json.loads((run_out / "manifest.json").read_text(encoding="utf-8"))
    edit(data)
    (tmp_path / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(CurateError) as caught:
        read_manifest(tmp_path)
    return str(caught.value)


def test_an_old_manifest_is_one_line_naming_the_file_and_the_version(run_out, tmp_path):
    def old(data):
        data["manifest_version"] = 1
        del data["stages"]["tokens"]["policy"]

    assert _edited(run_out, tmp_path, old) == (
        f"{tmp_path / 'manifest.json'}: manifest_version: 1, expected 2 (written by another curator version; "
        "run `curate run` again)"
    )
    assert _edited(run_out, tmp_path, lambda data: data.pop("manifest_version")) == (
        f"{tmp_path / 'manifest.json'}: manifest_version: missing, expected 2 (written by another curator version; "
        "run `curate run` again)"
    )


def test_a_malformed_manifest_is_one_line_naming_the_file_and_the_field(run_out, tmp_path):
    path = tmp_path / "manifest.json"
    assert _edited(run_out, tmp_path, lambda data: data["stages"]["tokens"].pop("context_length")) == (
        f"{path}: stages.tokens.context_length: Field required"
    )
    assert _edited(run_out, tmp_path, lambda data: data["stages"]["tokens"].update(policy="cut")) == (
        f"{path}: stages.tokens.policy: Input should be 'reject', 'truncate' or 'report'"
    )
    assert _edited(run_out, tmp_path, lambda data: data["gates"][0].update(passed="maybe")) == (
        f"{path}: gates.0.passed: Input should be a valid boolean, unable to interpret input"
    )
    assert _edited(run_out, tmp_path, lambda data: data.update(outputs=[], counts=None)) == (
        f"{path}: outputs: Input should be a valid dictionary (+1 more)"
    )
    with pytest.raises(CurateError, match=r"^x/manifest.json:2: not valid JSON: Expecting value$"):
        parse_manifest('{\n"manifest_version": }', Path("x/manifest.json"))
    with pytest.raises(CurateError, match=r"manifest.json: expected a JSON object, got list$"):
        parse_manifest("[]", path)


def test_a_missing_manifest_is_one_line(tmp_path):
    with pytest.raises(CurateError) as caught:
        read_manifest(tmp_path)
    assert str(caught.value) == f"{tmp_path / 'manifest.json'}: missing"


def test_reading_a_manifest_imports_neither_polars_nor_a_stage():
    code = (
        "import sys, curator.manifest; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('polars', 'torch') "
        "or m.startswith(('curator.stages', 'curator.pipeline', 'curator.config'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
