"""Tool use in one representation (curator/tool_use.py): canonical calls and ids, calls written
as text, results tied to their calls, tool definitions, the reject codes, and the split's lines."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from curator.config import CurateConfig, load_config
from curator.io.readers import iter_file
from curator.pipeline import run
from curator.schema import check_record, to_plain
from curator.stages import validate
from curator.stages.base import StageContext
from curator.tool_use import canonical_arguments, canonical_tools, fill_call_ids
from tests.conftest import HEAVY_STAGES, chat, write_lines


def call(name: str, arguments, id: str | None = None) -> dict:
    found = {"type": "function", "function": {"name": name, "arguments": arguments}}
    return {"id": id, **found} if id else found


def calling(*calls: dict, content=None) -> dict:
    return {"role": "assistant", "content": content, "tool_calls": list(calls)}


def result(content: str, id: str | None = None) -> dict:
    return {"role": "tool", "content": content, **({"tool_call_id": id} if id else {})}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def answer(text: str) -> dict:
    return {"role": "assistant", "content": text}


def plain(record: dict) -> dict:
    """The record as the pipeline keeps it; it must have no problem."""
    checked, problems = check_record(record)
    assert problems == []
    return to_plain(checked)


def found(record: dict) -> list[tuple[str, str]]:
    _, problems = check_record(record)
    return [(p.field, p.code) for p in problems]


# --- the canonical call ------------------------------------------------------------------------


def test_calls_take_one_form_whatever_their_arguments_were():
    record = {
        "messages": [
            user("Weather in Paris and in Zürich?"),
            calling(call("w", '{ "city" :"Paris" ,"days":[1, 2]}', id="c1"), call("w", {"city": "Zürich"})),
            result('{"t": 3}', "c1"),
            result('{"t": 1}'),
            answer("3 and 1 degrees."),
        ]
    }
    messages = plain(record)["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": "",  # null on a call turn becomes "": every content of the split is a string
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": '{"city": "Paris", "days": [1, 2]}'}},
            {"id": "call00002", "type": "function", "function": {"name": "w", "arguments": '{"city": "Zürich"}'}},
        ],
    }
    assert [m.get("tool_call_id") for m in messages[2:4]] == ["c1", "call00002"]


def test_the_frame_holds_the_calls_as_canonical_json_text(tmp_path):
    record = {"messages": [user("q"), calling(call("w", {"b": 1, "a": "é"})), result("r"), answer("done")]}
    path = write_lines(tmp_path / "one.jsonl", [record])
    frame = validate.build_frame(iter_file(path, "one.jsonl"), StageContext(config=CurateConfig()))
    text = frame.row(0, named=True)["messages"][1]["tool_calls"]
    # keys id, type, function / name, arguments in this order, json's default separators, no \\u escapes
    assert text == '[{"id": "call00001", "type": "function", "function": {"name": "w", "arguments": "{\\"b\\": 1, \\"a\\": \\"é\\"}"}}]'
    assert frame.row(0, named=True)["tools"] is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ('{"a":1,"b":{"c":[true,null]}}', '{"a": 1, "b": {"c": [true, null]}}'),
        ({"é": "ü"}, '{"é": "ü"}'),
        ('{"\\u00e9": 1}', '{"é": 1}'),
        ("{}", "{}"),
    ],
)
def test_canonical_arguments(given, expected):
    assert canonical_arguments(given) == expected


def test_missing_ids_are_numbered_within_the_record_and_never_reuse_one():
    assert fill_call_ids([None, None, None]) == ["call00001", "call00002", "call00003"]
    assert fill_call_ids(["call00002", None, None]) == ["call00002", "call00003", "call00004"]
    assert fill_call_ids([None, "call00001"]) == ["call00002", "call00001"]
    assert all(re.fullmatch(r"[a-zA-Z0-9]{9}", i) for i in fill_call_ids([None] * 12))  # Mistral's id form


# --- calls written as the assistant's text (Glaive, LLaMA-Factory) --------------------------------


def test_a_call_written_as_text_becomes_tool_calls():
    text = '{"name": "search", "arguments": {"q": "x"}}'
    messages = plain(chat(("user", "a"), ("assistant", text), ("tool", "{}"), ("assistant", "done")))["messages"]
    assert messages[1:3] == [
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call00001", "type": "function", "function": {"name": "search", "arguments": '{"q": "x"}'}}]},
        {"role": "tool", "content": "{}", "tool_call_id": "call00001"},
    ]
    # a call that ends the conversation (no result yet) is a call too
    assert plain(chat(("user", "a"), ("assistant", text)))["messages"][1]["content"] == ""


def test_a_list_of_calls_is_taken_for_calls_only_when_tool_turns_follow():
    text = '[{"name": "a", "arguments": "{}"}, {"name": "b", "arguments": {"x": 1}}]'
    messages = plain(chat(("user", "q"), ("assistant", text), ("tool", "1"), ("tool", "2"), ("assistant", "ok")))["messages"]
    assert [c["function"]["name"] for c in messages[1]["tool_calls"]] == ["a", "b"]
    assert [m["tool_call_id"] for m in messages[2:4]] == ["call00001", "call00002"]
    # without a tool turn after it, a JSON list is an answer like any other
    assert plain(chat(("user", "q"), ("assistant", text)))["messages"][1] == {"role": "assistant", "content": text}


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "Ann", "age": 3}',  # no arguments
        '{"name": "f", "arguments": {}, "id": "x"}',  # more keys than a call has
        '{"name": 5, "arguments": {}}',  # a name that is not a string
        'Calling {"name": "f", "arguments": {}}',  # not the whole text
        "{not json",
    ],
)
def test_text_that_is_not_exactly_a_call_stays_text(text):
    assert plain(chat(("user", "q"), ("assistant", text)))["messages"][1] == {"role": "assistant", "content": text}


# --- what is rejected, and why --------------------------------------------------------------------


def conversation(*turns: dict) -> dict:
    return {"messages": [user("q"), *turns]}


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (  # arguments that are not JSON
            conversation(calling(call("w", "{city: Oslo}")), result("r"), answer("a")),
            [("messages[1].tool_calls[0].function.arguments", "structure.bad_tool_arguments")],
        ),
        (  # JSON, but not an object
            conversation(calling(call("w", "[1, 2]")), result("r"), answer("a")),
            [("messages[1].tool_calls[0].function.arguments", "structure.bad_tool_arguments")],
        ),
        (  # NaN cannot be written back as JSON
            conversation(calling(call("w", '{"x": NaN}')), result("r"), answer("a")),
            [("messages[1].tool_calls[0].function.arguments", "structure.bad_tool_arguments")],
        ),
        (  # an escape that decodes to no character cannot be written back as UTF-8
            conversation(calling(call("w", '{"x": "\\ud800"}')), result("r"), answer("a")),
            [("messages[1].tool_calls[0].function.arguments", "structure.bad_tool_arguments")],
        ),
        (  # a call written as text whose arguments are Python, not JSON
            chat(("user", "q"), ("assistant", json.dumps({"name": "w", "arguments": "{'a': 1}"})), ("tool", "r"), ("assistant", "a")),
            [("messages[1].tool_calls[0].function.arguments", "structure.bad_tool_arguments")],
        ),
        (  # a result after a user turn answers no call
            conversation(answer("a"), user("b"), result("r"), answer("c")),
            [("messages[3].role", "structure.tool_without_call")],
        ),
        (  # one call, two results
            conversation(calling(call("w", "{}")), result("r1"), result("r2"), answer("a")),
            [("messages[3].role", "structure.tool_without_call")],
        ),
        (  # the same call answered twice
            conversation(calling(call("w", "{}", id="c1")), result("r1", "c1"), result("r2", "c1"), answer("a")),
            [("messages[3].tool_call_id", "structure.tool_without_call")],
        ),
        (  # an id that is no call of the turn before
            conversation(calling(call("w", "{}", id="c1")), result("r", "c9"), answer("a")),
            [("messages[2].tool_call_id", "structure.unknown_tool_call_id"), ("messages[1].tool_calls[0]", "structure.unanswered_tool_call")],
        ),
        (  # the user speaks before the call has a result
            conversation(calling(call("w", "{}")), user("never mind"), answer("ok")),
            [("messages[1].tool_calls[0]", "structure.unanswered_tool_call")],
        ),
        (  # two parallel calls, one result
            conversation(calling(call("w", "{}", id="a"), call("w", "{}", id="b")), result("r", "a"), answer("x")),
            [("messages[1].tool_calls[1]", "structure.unanswered_tool_call")],
        ),
        (  # tool definitions that are not tool definitions
            {**chat(("user", "q"), ("assistant", "a")), "tools": [{"description": "nameless"}]},
            [("tools[0].name", "schema.bad_tools")],
        ),
    ],
)
def test_tool_use_that_does_not_add_up_is_rejected_with_its_code(record, expected):
    _, problems = check_record(record)
    assert [(p.field, p.code) for p in problems] == expected
    assert not any(p.warning for p in problems)


def test_reject_details_say_what_is_wrong():
    _, problems = check_record(conversation(calling(call("w", "{}", id="c1")), result("r", "c9"), answer("a")))
    assert [p.message for p in problems] == [
        "'c9' is not the id of a call of messages[1] (its calls: c1)",
        "call c1 (w) has no tool result before the next assistant turn, messages[3]",
    ]
    _, problems = check_record(conversation(calling(call("w", "[1]")), result("r"), answer("a")))
    assert problems[0].message == "the arguments are not a JSON object (or a string of one) but an array"


def test_calls_of_the_last_turn_may_go_unanswered():
    assert found(conversation(calling(call("w", "{}")))) == []


# --- tool definitions ------------------------------------------------------------------------------


WEATHER = {"name": "get_weather", "description": "Weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


@pytest.mark.parametrize(
    "given",
    [
        [WEATHER],  # bare, as LLaMA-Factory's ShareGPT data has them
        json.dumps([WEATHER]),  # ... usually as a JSON string
        [{"type": "function", "function": {"parameters": WEATHER["parameters"], "description": WEATHER["description"], "name": "get_weather"}}],
    ],
)
def test_tools_take_trl_shape(given):
    assert canonical_tools(given) == [{"type": "function", "function": WEATHER}]
    assert list(canonical_tools(given)[0]["function"]) == ["name", "description", "parameters"]


@pytest.mark.parametrize("given", [None, "", "[]", []])
def test_no_tools(given):
    assert canonical_tools(given) is None


def test_chat_records_may_carry_tools_as_an_openai_request_does():
    _, problems = check_record({**chat(("user", "q"), ("assistant", "a")), "tools": [WEATHER]})
    assert problems == []  # a known field now: no schema.extra_field warning
    record = plain({**chat(("user", "q"), ("assistant", "a")), "tools": [WEATHER], "meta": {"tools": "mine"}})
    assert record["tools"] == [{"type": "function", "function": WEATHER}]
    assert record["meta"] == {"tools": "mine"}  # meta is the user's: never read for tools
    assert plain({**chat(("user", "q"), ("assistant", "a")), "meta": {"tools": json.dumps([WEATHER])}})["tools"] is None


def test_unknown_keys_of_a_call_are_warnings_and_kept_under_meta():
    odd = {"id": "c1", "type": "function", "index": 0, "function": {"name": "w", "arguments": "{}", "strict": True}}
    record, problems = check_record(conversation(calling(odd), result("r"), answer("a")))
    assert [(p.field, p.code, p.warning) for p in problems] == [
        ("messages[1].tool_calls[0].index", "schema.extra_field", True),
        ("messages[1].tool_calls[0].function.strict", "schema.extra_field", True),
    ]
    kept = to_plain(record)
    assert kept["messages"][1]["tool_calls"] == [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]
    assert kept["meta"] == {"_extra": {"messages": {"1": {"tool_calls": {"0": {"index": 0, "function": {"strict": True}}}}}}}


# --- the split ----------------------------------------------------------------------------------------


def test_split_lines_and_dataset_info(tmp_path):
    good = {
        "messages": [user("Weather in Lyon?"), calling(call("get_weather", {"city": "Lyon"})), result('{"t": 14}'), answer("14 degrees.")],
        "tools": [WEATHER],
        "meta": {"source": "hand"},
    }
    bad = conversation(calling(call("w", "{oops")), result("r"), answer("a"))
    raw = write_lines(tmp_path / "raw" / "tools.jsonl", [good, bad, chat(("user", "hi"), ("assistant", "hello"))])
    out = tmp_path / "out"
    result_ = run(raw.parent, out, load_config(None, [f"skip_stages={HEAVY_STAGES}", "gates.min_examples=null"]))
    assert result_.counts["read"] == 3 == result_.counts["kept"] + result_.counts["rejected"]
    lines = [l for side in ("train", "val") for l in (out / f"{side}.jsonl").read_text(encoding="utf-8").splitlines()]
    records = [json.loads(l) for l in lines]
    with_tools = next(r for r in records if "tools" in r)
    assert list(with_tools) == ["id", "messages", "tools", "meta"]
    assert with_tools["tools"] == [{"type": "function", "function": WEATHER}]
    assert with_tools["messages"][1:3] == [
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call00001", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'}}]},
        {"role": "tool", "content": '{"t": 14}', "tool_call_id": "call00001"},
    ]
    assert [list(r) for r in records if "tools" not in r] == [["id", "messages"]]
    rejects = [json.loads(l) for l in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["source_line"], r["reasons"]) for r in rejects] == [(2, ["structure.bad_tool_arguments"])]

    info = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
            "observation_tag": "tool", "function_tag": "function_call", "system_tag": "system"}
    assert info == {
        f"curated_{side}": {"file_name": f"{side}.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"}, "tags": tags}
        for side in ("train", "val")
    }
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["outputs"]["dataset_info.json"] == hashlib.sha256((out / "dataset_info.json").read_bytes()).hexdigest()


def test_a_redacted_call_keeps_its_canonical_form(tmp_path):
    record = conversation(calling(call("send", {"to": "li.wei@corp.io", "body": "hi"})), result("sent"), answer("Sent."))
    raw = write_lines(tmp_path / "raw" / "mail.jsonl", [record])
    others = "[language,code_language,tokens,quality,dedup_minhash,select]"
    run(raw.parent, tmp_path / "out", load_config(None, [f"skip_stages={others}", "gates.min_examples=null"]))
    (line,) = [l for side in ("train", "val") for l in (tmp_path / "out" / f"{side}.jsonl").read_text(encoding="utf-8").splitlines()]
    assert json.loads(line)["messages"][1]["tool_calls"] == [
        {"id": "call00001", "type": "function", "function": {"name": "send", "arguments": '{"to": "[REDACTED:email]", "body": "hi"}'}}
    ]
    assert '"tool_calls":[{"id":"call00001","type":"function","function":{"name":"send","arguments":' in line
