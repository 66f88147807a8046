"""TRL's SFTTrainer with assistant_only_loss=True on a curated OUT trains the tokens curator trains.

The tokenizer is the folder `curate export-template OUT DIR` writes (OUT/chat_template.jinja, with
{% generation %} around the trained tokens); the model a tiny random MistralForCausalLM.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from curator.cli import cli
from tests.finetune_support import (
    chat_tokenizer,
    curate,
    one_torch_thread,
    real_records,
    split_lines,
    tiny_mistral,
    write_curated_folder,
)
from tests.test_chat_template import TOOL_RECORDS
from tests.test_inspect import TOOL_RECORD

trl = pytest.importorskip("trl")

torch_one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


def _short_tool_records(n: int) -> list[dict]:
    """Glaive records with a function call and under 700 tokens (a CPU step stays fast)."""
    tok = chat_tokenizer()
    picked = []
    for record in real_records("llamafactory_glaive_toolcall_en_demo.jsonl", 60):
        if any(m["role"] == "tool" for m in record["messages"]) and tok.encode(record["messages"]).n_tokens < 700:
            picked.append(record)
        if len(picked) == n:
            break
    return picked


@pytest.fixture(scope="module")
def outs(tmp_path_factory):
    """A `curate run` OUT (Glaive calls, a canonical tool-call record, a plain chat) and a hand-made OUT whose
    records carry `tools` (as train.jsonl holds them)."""
    root = tmp_path_factory.mktemp("trl")
    plain = real_records("llamafactory_identity.jsonl", 1)
    run_out = curate(root / "run", _short_tool_records(3) + [TOOL_RECORD] + plain)
    with_tools = [{"messages": m, "tools": t} for m, t in TOOL_RECORDS[:4]]
    made = write_curated_folder(root / "made", with_tools[:3], with_tools[3:])
    (made / "chat_template.jinja").write_text(chat_tokenizer().chat_template, encoding="utf-8")  # as `curate run` does
    return [run_out, made]


def _dataset(out):
    """OUT's records as TRL reads them: tools as JSON text, so that Arrow does not merge the tool schemas
    of different records into one struct (which would add null fields to each)."""
    from datasets import Dataset

    rows = [{"messages": r["messages"], "tools": json.dumps(r["tools"], ensure_ascii=False) if r.get("tools") else None}
            for r in split_lines(out)]
    return Dataset.from_list(rows)


def test_trl_assistant_masks_equal_curate_inspect_labels(outs, tmp_path):
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    n_calls = 0
    for k, out in enumerate(outs):
        dest = tmp_path / f"tok{k}"
        assert CliRunner().invoke(cli, ["export-template", str(out), str(dest)]).exit_code == 0
        tokenizer = AutoTokenizer.from_pretrained(str(dest), local_files_only=True)
        config = SFTConfig(
            output_dir=str(tmp_path / f"sft{k}"), assistant_only_loss=True, max_steps=1, per_device_train_batch_size=2,
            max_length=None, learning_rate=1e-3, report_to=[], save_strategy="no", use_cpu=True, bf16=False,
            dataloader_num_workers=0, logging_steps=1,
        )
        trainer = SFTTrainer(model=tiny_mistral(), args=config, train_dataset=_dataset(out), processing_class=tokenizer)
        result = CliRunner().invoke(cli, ["inspect", str(out), "--format", "json", "--n", "100"])
        inspected = [json.loads(line) for line in result.output.splitlines()]
        assert len(inspected) == len(trainer.train_dataset) == len(split_lines(out))
        for row, line in zip(trainer.train_dataset, inspected):
            # TRL folds its assistant_masks into labels: the token id where the mask is 1, else -100
            assert row["input_ids"] == line["input_ids"]
            assert row["labels"] == line["labels"]
        n_calls += sum(bool(m.get("tool_calls")) for r in split_lines(out) for m in r["messages"])
        trainer.train()
        assert trainer.state.global_step == 1
    assert n_calls >= 5
