"""The chat template as a product of curation: apply_chat_template gives curator's ids and trained mask.

The Mistral v1 template (curator.tokenize_chat.MISTRAL_V1_CHAT_TEMPLATE, written by `curate run` to
OUT/chat_template.jinja) is run by transformers with the tokenizer folder `curate export-template` writes,
and compared with ChatTokenizer.encode on every record of ../shared/data/chat, on canonical tool-call
records, and on the Glaive tool-call file converted to the canonical form.
"""

from __future__ import annotations

import json

import pytest

from curator.tokenize_chat import render_tool_calls
from finetune.export import _save_chat_tokenizer
from tests.conftest import CHAT_DATA
from tests.finetune_support import chat_tokenizer
from tests.test_tokenize_chat import WEATHER_TOOLS, call

pytest.importorskip("transformers")

GLAIVE = "llamafactory_glaive_toolcall_en_demo.jsonl"


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    _save_chat_tokenizer(chat_tokenizer(), folder)
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def template_encodings(hf, conversations: list[list[dict]], tools: list | None = None) -> list[tuple[list, list]]:
    """(ids, assistant mask) of each conversation from transformers' apply_chat_template."""
    if tools is None:
        out = hf.apply_chat_template(conversations, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        return [(list(i), list(m)) for i, m in zip(out["input_ids"], out["assistant_masks"])]
    results = []
    for messages, conv_tools in zip(conversations, tools):
        out = hf.apply_chat_template(messages, tools=conv_tools, tokenize=True, return_dict=True,
                                     return_assistant_tokens_mask=True)
        results.append((list(out["input_ids"]), list(out["assistant_masks"])))
    return results


def assert_template_equals_training(hf, conversations: list[list[dict]], tools: list | None = None) -> None:
    encoded = chat_tokenizer().encode_batch(conversations, tools)
    mismatches = [
        i for i, ((ids, mask), enc) in enumerate(zip(template_encodings(hf, conversations, tools), encoded))
        if ids != enc.ids or mask != [int(t) for t in enc.trained]
    ]
    assert mismatches == []


def glaive_canonical(record: dict) -> tuple[list[dict], list | None]:
    """A Glaive record in the canonical form the ingestion side gives it: each JSON-in-content call as
    `tool_calls` (arguments canonical JSON text, content ""), tool turns with `tool_call_id`, meta.tools as
    TRL's `tools`."""
    messages: list[dict] = []
    last_id = None
    for msg in record["messages"]:
        parsed = None
        if msg["role"] == "assistant":
            try:
                parsed = json.loads(msg["content"])
            except json.JSONDecodeError:
                pass
        if isinstance(parsed, dict) and {"name", "arguments"} <= parsed.keys():
            last_id = f"call_{len(messages)}"
            args = json.dumps(parsed["arguments"], ensure_ascii=False)
            messages.append({"role": "assistant", "content": "", "tool_calls": [
                {"id": last_id, "type": "function", "function": {"name": parsed["name"], "arguments": args}}]})
        elif msg["role"] == "tool":
            messages.append({**msg, "tool_call_id": last_id})
        else:
            messages.append(dict(msg))
    functions = json.loads((record.get("meta") or {}).get("tools") or "[]")
    tools = [{"type": "function", "function": f} for f in functions] or None
    return messages, tools


def glaive_records() -> list[tuple[list[dict], list | None]]:
    with (CHAT_DATA / GLAIVE).open(encoding="utf-8") as handle:
        return [glaive_canonical(json.loads(line)) for line in handle]


# Canonical tool-call records (OpenAI style): single and parallel calls, calls with text, tools present,
# with a system prompt, weights, and a conversation that opens with the assistant.
TOOL_RECORDS: list[tuple[list[dict], list | None]] = [
    ([{"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "content": None, "tool_calls": [call("get_weather", {"city": "Paris"})]},
      {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
      {"role": "assistant", "content": "It is 21 °C in Paris."}], WEATHER_TOOLS),
    ([{"role": "system", "content": "Answer in French."},
      {"role": "user", "content": "Paris and Zürich?"},
      {"role": "assistant", "content": "Je regarde les deux.",
       "tool_calls": [call("get_weather", {"city": "Paris"}), call("get_weather", {"city": "Zürich"}, "call_2")]},
      {"role": "tool", "tool_call_id": "call_1", "content": "21"},
      {"role": "tool", "tool_call_id": "call_2", "content": "18"},
      {"role": "assistant", "content": "Brouillon.", "weight": 0},
      {"role": "assistant", "content": "21 et 18 degrés.", "weight": 1}], WEATHER_TOOLS),
    ([{"role": "user", "content": "No tools listed, one call."},
      {"role": "assistant", "content": "", "tool_calls": [
          {"id": "x", "type": "function", "function": {"name": "f", "arguments": '{"a":1,  "b": [ ]}'}}]}], None),
    ([{"role": "assistant", "content": "Opening line."}, {"role": "user", "content": "q"},
      {"role": "assistant", "content": "", "tool_calls": [call("get_weather", {"city": "Oslo"})]}], WEATHER_TOOLS),
    ([{"role": "system", "content": "S"}], WEATHER_TOOLS),
]


def test_template_gives_training_ids_and_mask_on_every_shared_record(hf):
    conversations = []
    for path in sorted(CHAT_DATA.glob("*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            conversations.extend(json.loads(line)["messages"] for line in handle)
    assert len(conversations) > 20_000
    assert_template_equals_training(hf, conversations)


def test_template_gives_training_ids_and_mask_on_canonical_tool_records(hf):
    assert_template_equals_training(hf, [m for m, _ in TOOL_RECORDS], [t for _, t in TOOL_RECORDS])
    rendered = hf.apply_chat_template(TOOL_RECORDS[1][0], tools=WEATHER_TOOLS, tokenize=False)
    assert rendered == (
        f"<s> [INST] [AVAILABLE_TOOLS] {json.dumps(WEATHER_TOOLS, ensure_ascii=False)} [/AVAILABLE_TOOLS]\n\n"
        "Answer in French.\n\nParis and Zürich? [/INST] Je regarde les deux.\n\n"
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        '{"name": "get_weather", "arguments": {"city": "Zürich"}}</s> [INST] 21\n\n18 [/INST] Brouillon.</s>'
        " 21 et 18 degrés.</s>"
    )


def test_template_and_training_agree_on_the_converted_glaive_file(hf):
    records = glaive_records()
    assert sum(any(m.get("tool_calls") for m in msgs) for msgs, _ in records) >= 100
    assert_template_equals_training(hf, [m for m, _ in records], [t for _, t in records])


def test_the_calls_of_every_tool_record_are_trained():
    tok = chat_tokenizer()
    records = glaive_records() + TOOL_RECORDS
    encoded = tok.encode_batch([m for m, _ in records], [t for _, t in records])
    n_calls = 0
    for (messages, _), enc in zip(records, encoded):
        start = 0
        for msg, n in zip(messages, enc.turn_tokens):
            if msg.get("tool_calls") and msg.get("weight") != 0:
                content = msg.get("content") or ""
                text = content + "\n\n" + render_tool_calls(msg["tool_calls"]) if content else render_tool_calls(msg["tool_calls"])
                # the turn's tokens: its content and calls, then EOS, every one trained
                assert enc.ids[start : start + n] == [*tok.tokenizer.encode(text).ids, tok.eos_id]
                assert all(enc.trained[start : start + n])
                n_calls += len(msg["tool_calls"])
            start += n
    assert n_calls >= 200


def test_string_tool_calls_are_refused_by_the_template(hf):
    from jinja2.exceptions import TemplateError

    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": "[]x"}]
    with pytest.raises(TemplateError, match="tool_calls must be a list"):
        hf.apply_chat_template(messages, tokenize=False)


def test_template_reaches_trl_stop_token_check(hf):
    trl_utils = pytest.importorskip("trl.chat_template_utils")
    assert trl_utils.has_generation_markers(hf.chat_template)
    assert trl_utils.is_chat_template_stop_token_trained(hf)
