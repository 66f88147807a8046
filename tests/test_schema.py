"""The chat record schema: one exact reason code per defect, and the checked-in JSON Schema."""

from __future__ import annotations

import json

import pytest

from curator.schema import check_record, json_schema_text, to_plain
from tests.conftest import ROOT, chat


def codes(obj) -> list[str]:
    _, problems = check_record(obj)
    return [p.code for p in problems]


def test_good_record_has_no_problems():
    record, problems = check_record(chat(("system", "Be brief."), ("user", "hi"), ("assistant", "hello")))
    assert problems == []
    assert to_plain(record) == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
        ],
        "tools": None,
        "meta": None,
    }


@pytest.mark.parametrize(
    "obj, expected",
    [
        ([1, 2], ["schema.not_object"]),
        ("text", ["schema.not_object"]),
        ({"msgs": []}, ["schema.missing_messages"]),
        ({"messages": "hi"}, ["schema.bad_messages"]),
        ({"messages": []}, ["schema.empty_messages"]),
        ({"messages": [1]}, ["schema.bad_message"]),
        ({"messages": [{"content": "x"}]}, ["schema.missing_role"]),
        ({"messages": [{"role": "bot", "content": "x"}]}, ["schema.bad_role"]),
        ({"messages": [{"role": "user"}]}, ["schema.missing_content"]),
        ({"messages": [{"role": "user", "content": 3}]}, ["schema.bad_content"]),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, ["schema.bad_content"]),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 2}]}, ["schema.bad_weight"]),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "meta": 5}, ["schema.bad_meta"]),
    ],
)
def test_schema_reason_codes(obj, expected):
    assert codes(obj) == expected


def test_bad_role_message_matches_the_hook_format():
    _, problems = check_record({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}, {"role": "robot", "content": "d"}]})
    assert [p.format("data.jsonl", 7) for p in problems] == [
        "data.jsonl:7: messages[3].role: Input should be 'system', 'user', 'assistant' or 'tool' [schema.bad_role]"
    ]


@pytest.mark.parametrize(
    "turns, expected",
    [
        ([("assistant", "hi")], ["structure.no_user", "structure.not_alternating"]),
        ([("user", "hi")], ["structure.no_assistant", "structure.last_not_assistant"]),
        ([("user", "a"), ("system", "s"), ("assistant", "b")], ["structure.system_not_first"]),
        ([("user", "a"), ("user", "b"), ("assistant", "c")], ["structure.not_alternating"]),
        ([("user", "a"), ("assistant", "b"), ("assistant", "c")], ["structure.not_alternating"]),
        ([("user", "a"), ("assistant", "b"), ("user", "c")], ["structure.last_not_assistant"]),
        ([("user", "a"), ("tool", "r"), ("assistant", "b")], ["structure.tool_without_call"]),
        ([("user", "a"), ("assistant", " \n\t")], ["structure.empty_content"]),
        ([("user", "a\x00b"), ("assistant", "c")], ["structure.control_char"]),
        ([("user", "a\x1bb"), ("assistant", "c")], ["structure.control_char"]),
        ([("user", "caf\u00c3\u0083\u009b"), ("assistant", "c")], ["structure.control_char"]),  # C1: mojibake
        ([("user", "tab\tand\nnewline"), ("assistant", "fine")], []),
    ],
)
def test_structure_rules(turns, expected):
    assert codes(chat(*turns)) == expected


def test_null_content_is_rejected_except_on_a_tool_call():
    assert codes({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": None}]}) == ["schema.null_content"]
    record = {
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "{\"t\": 3}"},
            {"role": "assistant", "content": "3 degrees"},
        ]
    }
    assert codes(record) == []


def test_function_call_text_opens_tool_turns():
    # Glaive / LLaMA-Factory write the call as the assistant's text.
    call = '{"name": "search", "arguments": {"q": "x"}}'
    assert codes(chat(("user", "a"), ("assistant", call), ("tool", "{}"), ("assistant", "done"))) == []
    assert codes(chat(("user", "a"), ("assistant", "not a call"), ("tool", "{}"), ("assistant", "done"))) == ["structure.tool_without_call"]


def test_content_parts_are_joined():
    record, problems = check_record({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}, {"role": "assistant", "content": "c"}]})
    assert problems == []
    assert to_plain(record)["messages"][0]["content"] == "ab"


def test_unknown_fields_are_warnings_and_kept_under_meta():
    # `id` is what `curate run` writes: known, so no warning, but an input's own id is still kept.
    record, problems = check_record({"messages": [{"role": "user", "content": "a", "name": "bob"}, {"role": "assistant", "content": "b"}], "id": 7, "meta": {"k": 1}, "src": "x"})
    assert [(p.field, p.code, p.warning) for p in problems] == [("src", "schema.extra_field", True), ("messages[0].name", "schema.extra_field", True)]
    assert to_plain(record)["meta"] == {"k": 1, "_extra": {"src": "x", "id": 7, "messages": {"0": {"name": "bob"}}}}


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"_extra": {"mine": 1}}, {"_extra": {"mine": 1, "id": 7}}),  # the record's own _extra: merged into
        ({"_extra": {"id": 0}}, {"_extra": {"id": 0}, "_extra_2": {"id": 7}}),  # a clash: kept apart
        ({"_extra": "note", "_extra_2": 1}, {"_extra": "note", "_extra_2": 1, "_extra_3": {"id": 7}}),
    ],
)
def test_a_records_own_meta_extra_is_never_overwritten(meta, expected):
    record, _ = check_record({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "id": 7, "meta": meta})
    assert to_plain(record)["meta"] == expected


def test_weight_only_on_assistant_turns():
    record = {"messages": [{"role": "user", "content": "a", "weight": 0}, {"role": "assistant", "content": "b"}]}
    assert codes(record) == ["structure.bad_weight_role"]


def test_checked_in_json_schema_is_current():
    checked_in = (ROOT / "schemas" / "chat_record.schema.json").read_text(encoding="utf-8")
    assert checked_in == json_schema_text(), "run `make schemas` to regenerate schemas/chat_record.schema.json"
    schema = json.loads(checked_in)
    assert schema["required"] == ["messages"]
    assert schema["$defs"]["Message"]["properties"]["role"]["enum"] == ["system", "user", "assistant", "tool"]


def test_json_schema_accepts_the_real_records(real_data):
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json.loads(json_schema_text()))
    with (real_data / "exercism_go.chat.jsonl").open() as fh:
        for line in list(fh)[:20]:
            validator.validate(json.loads(line))
    assert not validator.is_valid({"messages": [{"role": "bot", "content": "x"}]})
