"""finetune.data: masks against a reference built with mistral-common, packing, collation, data order."""

from __future__ import annotations

import json

import pytest

from curator.errors import CurateError
from finetune.data import (
    IGNORE_INDEX,
    SplitRecord,
    Example,
    collate,
    encode_records,
    epoch_micro_batches,
    labels_for,
    pack_best_fit,
    prompt_and_reference,
    read_chat_jsonl,
)
from tests.finetune_support import chat_tokenizer, real_records


def _reference_labels(messages: list[dict]) -> tuple[list[int], list[int]]:
    """Ids and labels from mistral-common's MistralTokenizer.v1(), the reference for Mistral-7B-Instruct-v0.2.

    mistral-common only encodes prompts that end with a user turn, so each assistant turn's span is found by
    difference: it starts where the prompt before it ends, and ends (with its </s>) where the prompt that
    follows it, minus that follow-up user turn, ends.
    """
    from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    tok = MistralTokenizer.v1()
    kinds = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}

    def enc(msgs: list[dict]) -> list[int]:
        objs = [kinds[m["role"]](content=m["content"]) for m in msgs]
        return tok.encode_chat_completion(ChatCompletionRequest(messages=objs)).tokens

    probe = {"role": "user", "content": "x"}
    tail = len(enc([probe])) - 1  # "[INST] x [/INST]" without <s>
    ids = enc(messages + [probe])[:-tail]
    labels = [IGNORE_INDEX] * len(ids)
    for k, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        start = len(enc(messages[:k]))
        end = len(enc(messages[: k + 1] + [probe])) - tail
        assert ids[end - 1] == 2  # the span ends with </s>
        labels[start:end] = ids[start:end]
    return ids, labels


@pytest.mark.parametrize(
    "file_name, n",
    [("fastchat_dummy_conversation.jsonl", 6), ("gsm8k_train.jsonl", 3), ("gpteacher_roleplay.jsonl", 3)],
)
def test_labels_equal_reference_masking_on_real_records(file_name, n):
    records = real_records(file_name, n)
    chats = [SplitRecord(messages=r["messages"], ref=f"{file_name}:{i + 1}") for i, r in enumerate(records)]
    examples, report = encode_records(chats, chat_tokenizer(), context_length=8192)
    assert report.n_examples == n
    for record, example in zip(records, examples):
        ids, labels = _reference_labels(record["messages"])
        assert example.ids == ids
        assert example.labels == labels


def test_multi_turn_record_trains_every_assistant_turn_and_its_eos():
    record = real_records("fastchat_dummy_conversation.jsonl", 40)
    multi = next(r for r in record if sum(m["role"] == "assistant" for m in r["messages"]) >= 2)
    (example,), _ = encode_records([SplitRecord(multi["messages"], "f:1")], chat_tokenizer(), 8192)
    trained_eos = sum(1 for t in example.labels if t == 2)
    assert trained_eos == sum(m["role"] == "assistant" for m in multi["messages"])
    assert example.labels[0] == IGNORE_INDEX and example.ids[0] == 1


def test_labels_for_masks_untrained_tokens():
    assert labels_for([5, 6, 7, 2], [False, True, True, True]) == [-100, 6, 7, 2]
    with pytest.raises(ValueError, match="differ in length"):
        labels_for([1, 2], [True])


def test_encode_records_skips_over_context_and_says_which():
    records = [SplitRecord(r["messages"], f"train.jsonl:{i + 1}") for i, r in enumerate(real_records("gsm8k_train.jsonl", 3))]
    lengths = [len(e.ids) for e in encode_records(records, chat_tokenizer(), 8192)[0]]
    limit = sorted(lengths)[1]  # the longest record no longer fits
    examples, report = encode_records(records, chat_tokenizer(), limit)
    longest = lengths.index(max(lengths))
    assert report.skipped_over_context == [f"train.jsonl:{longest + 1}"]
    assert report.n_examples == 2 and len(examples) == 2


def test_pack_best_fit_exact_rows():
    # longest first: 7 -> row 0 (3 free); 6 -> row 1 (4 free); 4 fills row 1; 3 fills row 0; 2 opens row 2
    assert pack_best_fit([3, 7, 6, 4, 2], 10) == [[1, 0], [2, 3], [4]]
    with pytest.raises(ValueError, match="over the row capacity 5"):
        pack_best_fit([6], 5)


def test_pack_best_fit_keeps_every_example_once_and_within_capacity_on_real_lengths():
    records = [SplitRecord(r["messages"], str(i)) for i, r in enumerate(real_records("gpteacher_roleplay.jsonl", 60))]
    examples, _ = encode_records(records, chat_tokenizer(), 1024)
    lengths = [len(e.ids) for e in examples]
    rows = pack_best_fit(lengths, 1024)
    assert sorted(i for row in rows for i in row) == list(range(len(examples)))
    assert all(sum(lengths[i] for i in row) <= 1024 for row in rows)
    assert len(rows) == -(-sum(lengths) // 1024)  # no more rows than the token count needs, on this mix


def test_collate_positions_targets_and_padding_exact():
    a = Example(ids=[1, 10, 11, 12], labels=[-100, -100, 11, 12], ref="a")
    b = Example(ids=[1, 20, 21], labels=[-100, 20, 21], ref="b")
    batch = collate([a, b], [[0, 1]], pad_id=0, pad_to_multiple=8)
    assert batch["input_ids"].tolist() == [[1, 10, 11, 12, 1, 20, 21, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2, 0]]
    # target[t] = label[t+1] inside each example; nothing crosses from a into b
    assert batch["targets"].tolist() == [[-100, 11, 12, -100, 20, 21, -100, -100]]
    assert batch["n_target_tokens"] == 4 and batch["n_real_tokens"] == 7
    assert batch["seq_lens"] == [[4, 3, 1]]


def test_epoch_order_is_a_function_of_seed_and_epoch():
    rows = [[i] for i in range(10)]
    first = epoch_micro_batches(rows, 3, seed=0, epoch=0)
    assert first == epoch_micro_batches(rows, 3, seed=0, epoch=0)
    assert first != epoch_micro_batches(rows, 3, seed=0, epoch=1)
    assert [len(mb) for mb in first] == [3, 3, 3, 1]
    assert sorted(r[0] for mb in first for r in mb) == list(range(10))


def test_prompt_stops_where_the_last_assistant_target_starts():
    record = SplitRecord(real_records("gsm8k_train.jsonl", 1)[0]["messages"], "gsm8k:1")
    prompt, reference, turn = prompt_and_reference(record, chat_tokenizer())
    (example,), _ = encode_records([record], chat_tokenizer(), 8192)
    assert example.ids[: len(prompt)] == prompt
    assert example.labels[len(prompt) - 1] == IGNORE_INDEX and example.labels[len(prompt)] != IGNORE_INDEX
    assert reference == record.messages[-1]["content"] and turn == len(record.messages) - 1


def test_prompt_and_reference_skip_an_untrained_last_assistant_turn():
    # the last assistant turn has weight 0: the reference is the last TRAINED turn, the prompt what precedes it
    first, second = real_records("fastchat_dummy_conversation.jsonl", 2)
    messages = [first["messages"][0], {**first["messages"][1], "weight": 1},
                second["messages"][0], {**second["messages"][1], "weight": 0}]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    prompt, reference, turn = prompt_and_reference(SplitRecord(messages, "f:1"), chat_tokenizer())
    assert turn == 1 and reference == messages[1]["content"]
    assert prompt == chat_tokenizer().encode(messages[:1]).ids  # <s> [INST] first question [/INST]


def test_reference_of_a_tool_call_turn_is_the_text_training_targets():
    calls = [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]
    messages = [{"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": "", "tool_calls": calls}]
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    prompt, reference, turn = prompt_and_reference(SplitRecord(messages, "t:1", tools=tools), chat_tokenizer())
    assert (reference, turn) == ('{"name": "weather", "arguments": {"city": "Paris"}}', 1)
    assert chat_tokenizer().decode(chat_tokenizer().encode(messages, tools).ids[len(prompt):]) == reference
    assert "[AVAILABLE_TOOLS]" in chat_tokenizer().decode(prompt)  # the prompt holds the tools, as training did


def test_read_chat_jsonl_names_file_line_and_field(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n" + json.dumps({"meta": {}}) + "\n")
    with pytest.raises(CurateError, match=r"train.jsonl:2: messages: expected a non-empty list"):
        read_chat_jsonl(path)
    path.write_text("{not json\n")
    with pytest.raises(CurateError, match=r"train.jsonl:1: not valid JSON"):
        read_chat_jsonl(path)


def test_train_jsonl_tools_and_list_tool_calls_reach_the_trained_tokens(tmp_path):
    # train.jsonl carries tool_calls as the OpenAI list and tools as a top-level list (curate run's output)
    calls = [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]
    tools = [{"type": "function", "function": {"name": "weather", "description": "Weather", "parameters": {"type": "object"}}}]
    messages = [{"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": "", "tool_calls": calls},
                {"role": "tool", "tool_call_id": "c1", "content": "21"}, {"role": "assistant", "content": "Warm."}]
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"id": "x", "messages": messages, "tools": tools}) + "\n", encoding="utf-8")
    [record] = read_chat_jsonl(path)
    assert record.tools == tools
    [example], _ = encode_records([record], chat_tokenizer(), 4096)
    tok = chat_tokenizer()
    assert example.ids == tok.encode(messages, tools).ids
    call_ids = tok.tokenizer.encode('{"name": "weather", "arguments": {"city": "Paris"}}').ids
    assert [t for t in example.labels if t != IGNORE_INDEX] == [*call_ids, 2, *tok.tokenizer.encode("Warm.").ids, 2]
    path.write_text(json.dumps({"messages": messages, "tools": "weather"}) + "\n", encoding="utf-8")
    with pytest.raises(CurateError, match=r"train.jsonl:1: tools: expected a list"):
        read_chat_jsonl(path)
