"""The hand-off from `curate run` to `curate train` through manifest.json: the trainer tokenizes with the
curation's profile, template and context, and refuses a base model or a context the data was not checked for.

A folder curated for codellama-13b-instruct (its tokenizer folder made from the Mistral vocabulary, as the
other tests do: nothing is downloaded) trains a tiny random-weight Llama on CPU."""

from __future__ import annotations

import json

import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from click.testing import CliRunner  # noqa: E402

from curator.cli import cli  # noqa: E402
from curator.config import load_config  # noqa: E402
from curator.model_profiles import LLAMA2_TEMPLATE  # noqa: E402
from curator.pipeline import run  # noqa: E402
from curator.tokenize_chat import ChatTokenizer  # noqa: E402
from finetune.data import read_chat_jsonl  # noqa: E402
from tests.finetune_support import (  # noqa: E402
    chat_tokenizer,
    one_torch_thread,
    real_records,
    save_tiny_llama,
    save_tiny_mistral,
    tiny_train_settings,
    tokenizer_folder,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def codellama(tmp_path_factory):
    """`curate run --model codellama-13b-instruct` on real records, gates sized for a tiny set, and two base models."""
    root = tmp_path_factory.mktemp("codellama")
    tok = tokenizer_folder(root / "codellama-tokenizer")
    records = real_records("llamafactory_identity.jsonl", 12) + real_records("fastchat_dummy_conversation.jsonl", 8)
    raw = root / "raw.jsonl"
    raw.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    config = load_config(None, [
        "tokens.model=codellama-13b-instruct", f"tokens.tokenizer_path={tok}", "gates.min_examples=5",
        "code_language.min_languages=null", "quality.min_high_quality_rate=null",
    ])
    result = run(raw, root / "out", config)
    assert all(g.passed for g in result.gates)
    settings = tiny_train_settings(save_tiny_llama(root / "tiny-llama"), max_steps=1)
    del settings["context_length"]  # the manifest's
    settings["eval"] = {"every_steps": 1, "bleu_samples": 0, "compare_sheet_samples": 0}
    (root / "train.yaml").write_text(yaml.safe_dump(settings))
    return {"root": root, "out": root / "out", "tokenizer": tok, "config": root / "train.yaml",
            "mistral": save_tiny_mistral(root / "tiny-mistral")}


def _train(codellama, output: str, *extra: str):
    args = ["train", str(codellama["out"]), "--output", str(codellama["root"] / output),
            "--config", str(codellama["config"]), "-q", *extra]
    return CliRunner().invoke(cli, args)


def test_a_codellama_curated_folder_trains_with_codellamas_template_and_context(codellama):
    result = _train(codellama, "adapter")
    assert result.exit_code == 0, result.output
    adapter = codellama["root"] / "adapter"
    used = yaml.safe_load((adapter / "train_config.yaml").read_text())
    assert (used["tokenizer"], used["tokenizer_path"], used["context_length"]) == (
        "codellama-13b-instruct", codellama["tokenizer"], 16384
    )
    assert json.loads((adapter / "tokenizer_config.json").read_text())["chat_template"] == LLAMA2_TEMPLATE
    # the one step ran over all of train.jsonl (one packed row): its trained tokens are the Llama-2 encoding's
    llama = ChatTokenizer.load("codellama-13b-instruct", tokenizer_path=codellama["tokenizer"])
    records = read_chat_jsonl(codellama["out"] / "train.jsonl")
    trained = sum(e.n_trained for e in llama.encode_batch([r.messages for r in records]))
    assert trained != sum(e.n_trained for e in chat_tokenizer().encode_batch([r.messages for r in records]))
    step = json.loads((adapter / "metrics.jsonl").read_text().splitlines()[0])
    assert (step["kind"], step["target_tokens"]) == ("train", trained)


def test_a_base_model_of_another_family_is_one_line_naming_both(codellama):
    result = _train(codellama, "family", "--model", str(codellama["mistral"]))
    assert result.exit_code == 1
    assert result.output == (
        f"error: --model {codellama['mistral']}: a mistral model, but {codellama['out'] / 'manifest.json'} says the "
        "data was curated for codellama-13b-instruct (a llama model); train a llama model, or curate again with "
        "--model for this one\n"
    )


def test_a_context_longer_than_the_curated_budget_is_one_line_naming_both(codellama):
    result = _train(codellama, "context", "-s", "context_length=32768")
    assert result.exit_code == 1
    assert result.output == (
        f"error: context_length 32768: larger than 16384, the context {codellama['out'] / 'manifest.json'} says the "
        "data was checked against (codellama-13b-instruct, policy reject); use at most 16384, or curate again "
        "with a larger tokens.context_length\n"
    )


def test_another_tokenizer_than_the_curations_is_one_line(codellama):
    result = _train(codellama, "tokenizer", "-s", "tokenizer=mistral-7b-instruct-v0.2")
    assert result.exit_code == 1
    assert result.output == (
        f"error: tokenizer mistral-7b-instruct-v0.2: differs from codellama-13b-instruct, the tokenizer "
        f"{codellama['out'] / 'manifest.json'} says the data was budgeted with; leave tokenizer unset, or curate "
        "again with this one\n"
    )


def test_a_folder_with_an_old_manifest_is_refused_in_one_line(codellama, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(codellama["out"], old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["manifest_version"] = 1
    (old / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    result = CliRunner().invoke(cli, ["train", str(old), "--output", str(tmp_path / "a"), "-q"])
    assert result.exit_code == 1
    assert result.output == (
        f"error: {old}: not from a passing `curate run`: {old / 'manifest.json'}: manifest_version: 1, expected 2 "
        "(written by another curator version; run `curate run` again); use --force to train anyway\n"
    )
