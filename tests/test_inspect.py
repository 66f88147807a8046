"""`curate inspect` and `curate export-template`: what the trainer trains, shown; the template as a tokenizer."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from curator.cli import cli
from finetune.data import encode_records, read_chat_jsonl
from tests.conftest import ROOT
from tests.finetune_support import chat_tokenizer, curate, real_records, split_lines, write_curated_folder
from tests.test_tokenize_chat import WEATHER_TOOLS, call

TOOL_RECORD = {
    "messages": [
        {"role": "user", "content": "What is the weather in Paris right now?"},
        {"role": "assistant", "content": None, "tool_calls": [call("get_weather", {"city": "Paris"})]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21, "sky": "clear"}'},
        {"role": "assistant", "content": "It is 21 degrees and clear in Paris right now."},
    ],
    "tools": WEATHER_TOOLS,
}


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    records = real_records("llamafactory_glaive_toolcall_en_demo.jsonl", 4) + [TOOL_RECORD]
    return curate(tmp_path_factory.mktemp("inspect"), records)


@pytest.fixture
def small(tmp_path):
    record = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    return write_curated_folder(tmp_path / "small", [record], [TOOL_RECORD])


def test_json_lines_are_the_trainers_ids_and_labels(out):
    result = invoke("inspect", str(out), "--format", "json", "--n", "100")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    records = read_chat_jsonl(out / "train.jsonl") + read_chat_jsonl(out / "val.jsonl")
    examples, _ = encode_records(records, chat_tokenizer(), 8192)
    assert len(lines) == len(records) == len(examples) == 5
    tok = chat_tokenizer()
    for line, record, example in zip(lines, records, examples):
        assert list(line) == ["id", "input_ids", "labels", "text"]
        assert (line["id"], line["input_ids"], line["labels"]) == (record.id, example.ids, example.labels)
        assert line["text"] == tok.tokenizer.decode(example.ids, skip_special_tokens=False)
    [tool_line] = [line for line, r in zip(lines, records) if any(m.get("tool_calls") for m in r.messages)
                   and "Paris" in r.messages[0]["content"]]
    trained = tok.decode([t for t in tool_line["labels"] if t != -100])
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in trained


def test_text_marks_trained_spans_with_brackets_when_not_a_terminal(small):
    result = invoke("inspect", str(small), "--n", "1")
    assert result.exit_code == 0, result.output
    record_id = json.loads((small / "train.jsonl").read_text(encoding="utf-8"))["id"]
    enc = chat_tokenizer().encode(json.loads((small / "train.jsonl").read_text(encoding="utf-8"))["messages"])
    assert result.output == (
        f"── train.jsonl:1 id={record_id} ({enc.n_tokens} tokens, {enc.n_trained} trained)\n"
        "<s> [INST] Hi [/INST]⟦ Hello!</s>⟧\n"
    )


def test_trained_spans_are_green_on_a_terminal(small):
    from curator.inspect_records import inspect_folder

    [item] = list(inspect_folder(small, n=1))
    assert item.marked(color=True) == "<s> [INST] Hi [/INST]\x1b[32m Hello!</s>\x1b[0m"


def test_tools_and_calls_in_the_text_of_a_tool_record(small):
    result = invoke("inspect", str(small), "--n", "2")
    text = result.output.split("── val.jsonl:1", 1)[1]
    tools = json.dumps(WEATHER_TOOLS, ensure_ascii=False)
    assert f"<s> [INST] [AVAILABLE_TOOLS] {tools} [/AVAILABLE_TOOLS]\n\nWhat is the weather" in text
    assert '[/INST]⟦ {"name": "get_weather", "arguments": {"city": "Paris"}}</s>⟧ [INST] {"temp": 21' in text


def test_id_picks_one_record_and_an_unknown_id_is_one_line(small):
    val_id = json.loads((small / "val.jsonl").read_text(encoding="utf-8"))["id"]
    result = invoke("inspect", str(small), "--id", val_id, "--format", "json")
    assert result.exit_code == 0 and [json.loads(x)["id"] for x in result.output.splitlines()] == [val_id]
    result = invoke("inspect", str(small), "--id", "nope")
    assert result.exit_code == 1
    assert result.output == f"error: {small}: no record with id 'nope' in train.jsonl or val.jsonl\n"
    result = invoke("inspect", str(small), "--id", val_id, "--n", "2")
    assert result.exit_code == 1 and result.output == "error: --id and --n exclude each other: pass one\n"


def test_default_is_three_records_train_first(out):
    result = invoke("inspect", str(out), "--format", "json")
    ids = [json.loads(x)["id"] for x in result.output.splitlines()]
    assert ids == [r["id"] for r in split_lines(out)][:3]


def test_a_folder_without_manifest_is_one_line(tmp_path):
    (tmp_path / "train.jsonl").write_text("", encoding="utf-8")
    result = invoke("inspect", str(tmp_path))
    assert result.exit_code == 1
    assert result.output == f"error: {tmp_path / 'manifest.json'}: missing (expected the OUT folder of `curate run`)\n"


def test_export_template_writes_an_offline_tokenizer_with_the_runs_template(out, tmp_path):
    from transformers import AutoTokenizer

    dest = tmp_path / "tok"
    result = invoke("export-template", str(out), str(dest))
    assert result.exit_code == 0, result.output
    hf = AutoTokenizer.from_pretrained(str(dest), local_files_only=True)
    assert hf.chat_template == (out / "chat_template.jinja").read_text(encoding="utf-8")
    inspected = [json.loads(x) for x in invoke("inspect", str(out), "--format", "json", "--n", "100").output.splitlines()]
    for record, line in zip(split_lines(out), inspected):
        got = hf.apply_chat_template(record["messages"], tools=record.get("tools"), tokenize=True, return_dict=True,
                                     return_assistant_tokens_mask=True)
        assert list(got["input_ids"]) == line["input_ids"]
        assert list(got["assistant_masks"]) == [int(x != -100) for x in line["labels"]]
    again = invoke("export-template", str(out), str(dest))
    assert again.exit_code == 1 and again.output == f"error: {dest}: exists and is not an empty folder\n"


def test_export_template_needs_the_runs_template(small, tmp_path):
    result = invoke("export-template", str(small), str(tmp_path / "tok"))
    assert result.exit_code == 1
    assert result.output == (
        f"error: {small / 'chat_template.jinja'}: missing (`curate run` writes it when its tokens stage runs)\n"
    )


def test_inspect_and_export_template_do_not_import_torch(out, tmp_path):
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom curator.cli import cli\n"
        "for args in (['inspect', sys.argv[1], '--n', '1'], ['export-template', sys.argv[1], sys.argv[2]]):\n"
        "    r = CliRunner().invoke(cli, args)\n"
        "    assert r.exit_code == 0, r.output\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(out), str(tmp_path / "tok")], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
