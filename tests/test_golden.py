"""Golden end-to-end test: `curate run data_samples/raw` gives exactly data_samples/expected.

After an intended change, regenerate with `make golden` (UPDATE_GOLDEN=1) and review the diff.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from click.testing import CliRunner

from curator.cli import cli
from curator.config import load_config
from curator.pipeline import run
from tests.conftest import ROOT, SAMPLES

EXPECTED = SAMPLES / "expected"
GOLDEN_FILES = ("train.jsonl", "val.jsonl", "rejects.jsonl", "duplicates.jsonl", "counts.json")


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("golden") / "out"
    cwd = os.getcwd()
    os.chdir(ROOT)  # source_file paths are relative: data_samples/raw/...
    try:
        result = run("data_samples/raw", out, load_config(None, []))
    finally:
        os.chdir(cwd)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    counts = {"counts": manifest["counts"], "funnel": manifest["funnel"], "gates": manifest["gates"]}
    (out / "counts.json").write_text(json.dumps(counts, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if os.environ.get("UPDATE_GOLDEN"):
        EXPECTED.mkdir(parents=True, exist_ok=True)
        for name in GOLDEN_FILES:
            if (out / name).exists():
                shutil.copyfile(out / name, EXPECTED / name)
    return out, result


@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_sample_run_matches_golden(sample_run, name):
    out, _ = sample_run
    expected = EXPECTED / name
    assert expected.exists() == (out / name).exists(), f"{name}: present in one of expected/out only"
    if expected.exists():
        assert (out / name).read_text(encoding="utf-8") == expected.read_text(encoding="utf-8"), f"{name} differs; run `make golden` if intended"


def test_sample_run_accounts_for_every_line(sample_run):
    out, result = sample_run
    lines = sum(1 for side in ("train", "val", "rejects") for _ in (out / f"{side}.jsonl").open())
    assert lines == result.counts["read"] == result.counts["kept"] + result.counts["rejected"]


def test_sample_plants_are_rejected_for_the_right_reason(sample_run):
    out, _ = sample_run
    reasons = {}
    for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        reasons[record["ref"]] = record["reasons"]
    defects = {int(ref.rsplit(":", 1)[1]): codes for ref, codes in reasons.items() if "03_defects.jsonl" in ref}
    assert defects == {
        2: ["io.bad_json"],
        3: ["schema.not_object"],
        4: ["schema.not_object"],
        5: ["schema.not_object"],
        6: ["schema.not_object"],
        7: ["io.blank_line"],
        8: ["io.blank_line"],
        9: ["io.bad_utf8"],
        10: ["io.bad_json"],
        11: ["schema.bad_messages"],
        12: ["schema.empty_messages"],
        13: ["format.unknown_shape"],
        14: ["schema.bad_content"],
        15: ["schema.bad_role"],
        16: ["schema.null_content"],
        17: ["structure.empty_content"],
        18: ["structure.control_char"],
        19: ["structure.system_not_first"],
        20: ["structure.not_alternating"],
        21: ["structure.last_not_assistant"],
        22: ["structure.tool_without_call"],
        23: ["structure.no_user", "structure.not_alternating"],
        24: ["schema.missing_role"],
        25: ["schema.bad_weight"],
        28: ["structure.bad_tool_arguments"],
        29: ["structure.unknown_tool_call_id", "structure.unanswered_tool_call"],  # c2 answers nothing, so c1 waits
        30: ["structure.unanswered_tool_call"],
        31: ["structure.bad_tool_arguments"],  # a Glaive text call whose arguments are Python, not JSON
        32: ["schema.bad_tools"],
    }
    truncated = [codes for ref, codes in reasons.items() if "05_truncated.jsonl.gz" in ref]
    assert truncated == [["io.truncated_gzip"]]


@pytest.mark.parametrize("name", ["train.jsonl", "val.jsonl"])
def test_curate_validate_strict_accepts_what_curate_run_writes(sample_run, name):
    """`id`, `tools`, `meta`, canonical tool calls and tool_call_id: the split passes its own
    pre-commit check, warnings as errors included."""
    out, _ = sample_run
    result = CliRunner().invoke(cli, ["validate", "--strict", "--format", "json", str(out / name)], catch_exceptions=False)
    report = json.loads(result.stdout)
    assert (result.exit_code, report["problems"]) == (0, [])
    assert report["records"] == sum(1 for _ in (out / name).open(encoding="utf-8")) > 0


def test_sample_split_has_the_tool_records_in_their_one_form(sample_run):
    out, _ = sample_run
    records = [json.loads(l) for side in ("train", "val") for l in (out / f"{side}.jsonl").open(encoding="utf-8")]
    with_calls = [r for r in records if any("tool_calls" in m for m in r["messages"])]
    # 6 Glaive records with their calls as text (the ShareGPT copy of one is a near duplicate), 2 OpenAI ones
    assert len(with_calls) == 8
    for record in with_calls:
        for m in record["messages"]:
            for call in m.get("tool_calls", []):
                assert list(call) == ["id", "type", "function"] and list(call["function"]) == ["name", "arguments"]
                assert call["function"]["arguments"] == json.dumps(json.loads(call["function"]["arguments"]), ensure_ascii=False)
            assert m["content"] is not None
    # the OpenAI request; the ShareGPT records kept have "tools": "[]", which is no tools
    assert [list(r) for r in records if "tools" in r] == [["id", "messages", "tools", "meta"]]
