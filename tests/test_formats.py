"""Alpaca / ShareGPT / GPTeacher readers (curator/io/formats.py): small exact cases, then the real files."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from curator.errors import CurateError
from curator.io.formats import FormatError, detect_format, iter_array_elements, to_chat, to_chat_repaired
from curator.schema import check_record, to_plain
from curator.tool_use import canonical_tools
from tests.conftest import HEAVY_STAGES

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NATIVE = SHARED / "native"
CHAT = SHARED / "chat"


def _error(fn, *args) -> FormatError:
    with pytest.raises(FormatError) as info:
        fn(*args)
    return info.value


# --- detection ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"messages": []}, "chat"),
        ({"conversations": [], "id": "x"}, "sharegpt"),
        ({"instruction": "a", "input": "", "output": "b"}, "alpaca"),
        ({"instruction": "a", "output": "b"}, "alpaca"),
        ({"instruction": "a", "input": "", "response": "b"}, "gpteacher"),
    ],
)
def test_detect_format(record, expected):
    assert detect_format(record) == expected


def test_detect_format_unknown_names_the_keys():
    err = _error(detect_format, {"prompt": "a", "completion": "b"})
    assert (err.field, err.code) == ("", "format.unknown_shape")
    assert "keys: completion, prompt" in err.message


def test_detect_format_ambiguous():
    err = _error(detect_format, {"messages": [], "conversations": []})
    assert err.code == "format.ambiguous_shape"
    assert "chat and sharegpt" in err.message


@pytest.mark.parametrize(("value", "kind"), [([1], "array"), ("x", "string"), (None, "null"), (3, "number")])
def test_detect_format_not_an_object(value, kind):
    err = _error(detect_format, value)
    assert (err.code, err.message) == ("schema.not_object", f"Input should be a JSON object, not {kind}")


# --- Alpaca and GPTeacher -----------------------------------------------------------------------


def test_alpaca_instruction_and_input_joined_by_a_blank_line():
    record = {"instruction": "Sort these.", "input": "3, 1, 2", "output": "1, 2, 3"}
    assert to_chat(record, "alpaca") == {
        "messages": [
            {"role": "user", "content": "Sort these.\n\n3, 1, 2"},
            {"role": "assistant", "content": "1, 2, 3"},
        ],
        "meta": None,
    }


def test_alpaca_separator_can_follow_llamafactory():
    record = {"instruction": "Sort these.", "input": "3, 1, 2", "output": "1, 2, 3"}
    assert to_chat(record, "alpaca", input_separator="\n")["messages"][0]["content"] == "Sort these.\n3, 1, 2"


def test_alpaca_system_history_and_other_fields_under_meta():
    record = {
        "instruction": "And now?",
        "input": "",
        "output": "Done.",
        "system": "Be brief.",
        "history": [["First?", "One."], ["Second?", "Two."]],
        "id": 7,
        "meta": {"source": "x"},
    }
    before = copy.deepcopy(record)
    assert to_chat(record, "alpaca") == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "First?"},
            {"role": "assistant", "content": "One."},
            {"role": "user", "content": "Second?"},
            {"role": "assistant", "content": "Two."},
            {"role": "user", "content": "And now?"},
            {"role": "assistant", "content": "Done."},
        ],
        "meta": {"source": "x", "id": 7},
    }
    assert record == before  # the input is not modified


def test_alpaca_empty_parts():
    # An empty input adds nothing; empty instruction and output are kept so the schema rejects them.
    assert to_chat({"instruction": "", "input": "only input", "output": ""}, "alpaca")["messages"] == [
        {"role": "user", "content": "only input"},
        {"role": "assistant", "content": ""},
    ]
    converted = to_chat({"instruction": "", "input": None, "output": "x", "system": ""}, "alpaca")
    assert converted["messages"] == [{"role": "user", "content": ""}, {"role": "assistant", "content": "x"}]
    _, problems = check_record(converted)
    assert [(p.field, p.code) for p in problems] == [("messages[0].content", "structure.empty_content")]


@pytest.mark.parametrize(
    ("record", "field", "code"),
    [
        ({"instruction": "a", "input": ""}, "output", "format.missing_field"),
        ({"output": "b"}, "instruction", "format.missing_field"),
        ({"instruction": "a", "output": None}, "output", "format.bad_type"),
        ({"instruction": 5, "output": "b"}, "instruction", "format.bad_type"),
        ({"instruction": "a", "input": ["x"], "output": "b"}, "input", "format.bad_type"),
        ({"instruction": "a", "output": "b", "system": 1}, "system", "format.bad_type"),
        ({"instruction": "a", "output": "b", "history": "q"}, "history", "format.bad_type"),
        ({"instruction": "a", "output": "b", "history": [["q"]]}, "history[0]", "format.bad_type"),
        ({"instruction": "a", "output": "b", "history": [["q", "r"], ["q", 2]]}, "history[1][1]", "format.bad_type"),
        ({"instruction": "a", "output": "b", "meta": [1]}, "meta", "format.bad_type"),
        ({"instruction": "a", "output": "b", "id": 1, "meta": {"id": 2}}, "id", "format.field_conflict"),
    ],
)
def test_alpaca_bad_input(record, field, code):
    err = _error(to_chat, record, "alpaca")
    assert (err.field, err.code) == (field, code)


def test_alpaca_error_line():
    err = _error(to_chat, {"instruction": "a", "output": 3}, "alpaca")
    assert err.format("data.json", 4) == "data.json:4: output: Input should be a string, not number [format.bad_type]"


def test_gpteacher():
    record = {"instruction": "Write hello in C.", "input": "", "response": 'puts("hello");', "output": "kept"}
    assert to_chat(record, "gpteacher") == {
        "messages": [
            {"role": "user", "content": "Write hello in C."},
            {"role": "assistant", "content": 'puts("hello");'},
        ],
        "meta": {"output": "kept"},  # not a GPTeacher field: kept, not dropped
    }
    assert _error(to_chat, {"instruction": "a", "input": "b"}, "gpteacher").field == "response"


# --- ShareGPT ---------------------------------------------------------------------------------------

GLAIVE_LIKE = {
    "conversations": [
        {"from": "human", "value": "Weather in Paris?"},
        {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
        {"from": "observation", "value": '{"temp_c": 21}'},
        {"from": "gpt", "value": "It is 21 C."},
    ],
    "tools": '[{"name": "get_weather"}]',
    "system": "You can call tools.",
}


def test_sharegpt_tool_call_and_observation():
    # The function_call turn becomes an assistant turn with empty content and the call; `tools`
    # leaves meta for the record's own field. The schema then puts both in their one form.
    assert to_chat(GLAIVE_LIKE, "sharegpt") == {
        "messages": [
            {"role": "system", "content": "You can call tools."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
            },
            {"role": "tool", "content": '{"temp_c": 21}'},
            {"role": "assistant", "content": "It is 21 C."},
        ],
        "tools": '[{"name": "get_weather"}]',
        "meta": None,
    }
    record, problems = check_record(to_chat(GLAIVE_LIKE, "sharegpt"))
    assert problems == []
    plain = to_plain(record)
    assert plain["messages"][2:4] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "call00001", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
            ],
        },
        {"role": "tool", "content": '{"temp_c": 21}', "tool_call_id": "call00001"},
    ]
    assert plain["tools"] == [{"type": "function", "function": {"name": "get_weather"}}]


def test_sharegpt_parallel_calls_and_unparsable_call():
    calls = '[{"name": "a", "arguments": "{}"}, {"name": "b"}]'
    turns = [{"from": "human", "value": "q"}, {"from": "function_call", "value": calls}]
    assert to_chat({"conversations": turns}, "sharegpt")["messages"][1]["tool_calls"] == [
        {"type": "function", "function": {"name": "a", "arguments": "{}"}},
        {"type": "function", "function": {"name": "b", "arguments": {}}},
    ]
    # The turn says it is a call: a value that holds none is refused where it is, not kept as text.
    turns = [
        {"from": "human", "value": "q"},
        {"from": "function_call", "value": "get_weather(Paris)"},
        {"from": "observation", "value": "21"},
        {"from": "gpt", "value": "21 C"},
    ]
    err = _error(to_chat, {"conversations": turns}, "sharegpt")
    assert (err.field, err.code) == ("conversations[1].value", "format.bad_function_call")
    assert err.message.startswith("a function_call turn's value is not valid JSON (Expecting value")
    turns[1]["value"] = '{"name": "w", "arguments": {}, "id": "c1"}'
    err = _error(to_chat, {"conversations": turns}, "sharegpt")
    assert err.message == 'a function_call turn should be {"name": string, "arguments": ...}, not an object with keys arguments, id, name'


def test_sharegpt_fastchat_roles_ids_and_extra_turn_keys():
    record = {
        "id": "identity_0",
        "conversations": [
            {"from": "system", "value": "S"},
            {"from": "user", "value": "Hi"},
            {"from": "assistant", "value": "Hello", "weight": 0},
            {"from": "human", "value": "Bye"},
            {"from": "gpt", "value": "Bye!"},
        ],
    }
    assert to_chat(record, "sharegpt") == {
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello", "weight": 0},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Bye!"},
        ],
        "meta": {"id": "identity_0"},
    }


def test_sharegpt_openai_style_turns():
    record = {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    assert to_chat(record, "sharegpt")["messages"] == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
    ]


@pytest.mark.parametrize(
    ("conversations", "field", "code"),
    [
        ("hi", "conversations", "format.bad_type"),
        (None, "conversations", "format.bad_type"),
        ([{"from": "human", "value": "q"}, "a"], "conversations[1]", "format.bad_type"),
        ([{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}], "conversations[1].from", "format.unknown_role"),
        ([{"value": "q"}], "conversations[0].from", "format.missing_field"),
        ([{"from": "human"}], "conversations[0].value", "format.missing_field"),
        ([{"from": "human", "value": None}], "conversations[0].value", "format.bad_type"),
        ([{"from": "human", "value": ["q"]}], "conversations[0].value", "format.bad_type"),
        ([{"from": "human", "value": "q", "role": "assistant"}], "conversations[0].role", "format.field_conflict"),
    ],
)
def test_sharegpt_bad_input(conversations, field, code):
    err = _error(to_chat, {"conversations": conversations}, "sharegpt")
    assert (err.field, err.code) == (field, code)


def test_sharegpt_unknown_role_line():
    record = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}, {"from": "bing", "value": "b"}]}
    err = _error(to_chat, record, "sharegpt")
    assert err.format("chats.json", 3).startswith(
        "chats.json:3: conversations[2].from: unknown speaker 'bing'; expected one of 'human', 'user', 'gpt',"
    )
    assert err.format("chats.json", 3).endswith(" [format.unknown_role]")


def test_chat_passes_through_and_a_given_format_is_not_second_guessed():
    record = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    assert to_chat(record, "chat") is record
    assert to_chat({"instruction": "q", "response": "a"}, "gpteacher") == (
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "meta": None}
    )
    # a GPTeacher record read as ShareGPT is refused, not detected and converted anyway
    assert _error(to_chat, {"instruction": "q", "response": "a"}, "sharegpt").field == "conversations"
    with pytest.raises(ValueError, match="unknown format 'csv'"):
        to_chat(record, "csv")


# --- .json arrays -----------------------------------------------------------------------------------


def test_iter_array_elements_numbers_elements_and_keeps_raw_bytes():
    data = b'\xef\xbb\xbf[\n  {"a": 1},\n  [2],\n  "x" ,null\n]\n'
    assert list(iter_array_elements(data)) == [(1, {"a": 1}), (2, [2]), (3, "x"), (4, None)]
    raws = [raw for _, _, raw in iter_array_elements(data, with_raw=True)]
    assert raws == [b'{"a": 1}', b"[2]", b'"x"', b"null"]
    assert list(iter_array_elements(b" [ ] ")) == []


def test_iter_array_elements_names_the_line_each_element_starts_on():
    data = b'\xef\xbb\xbf[\n  {"a": 1},\n\n  {"b":\n 2}, {"c": 3},\r\n  "x" , 7\n]\n'
    assert [(n, line) for n, _, line in iter_array_elements(data, with_line=True)] == [(1, 2), (2, 4), (3, 5), (4, 6), (5, 6)]
    # a file that is not an array, text after the closing bracket: where it starts
    assert [line for *_, line in iter_array_elements(b'\n\n{"a": 1}', with_line=True)] == [3]
    assert [line for *_, line in iter_array_elements(b'[1,\n2]\n\nnope', with_raw=True, with_line=True)] == [1, 2, 4]


def test_iter_array_elements_counts_lines_across_chunks_and_past_long_elements(monkeypatch):
    import curator.io.formats as formats

    monkeypatch.setattr(formats, "CHUNK_BYTES", 8)  # many refills, each dropping what was consumed
    long = b'{\n "k":\n  "' + b"v" * 30 + b'"\n}'  # over 20 bytes: walked past, never held
    data = b"[\n" + b",\n".join([long, long, b"[\n1,\n2\n]", b"3"]) + b"\n]"
    items = list(iter_array_elements(data, with_line=True, max_element_bytes=20))
    assert [(n, getattr(v, "code", v), line) for n, v, line in items] == [
        (1, "io.line_too_long", 2), (2, "io.line_too_long", 6), (3, [1, 2], 10), (4, 3, 14)
    ]


def test_iter_array_elements_bad_utf8_element_is_an_error_the_others_are_read():
    data = b'[{"a": "ok"}, {"a": "\xff\xfe"}, {"a": "after"}]'
    items = list(iter_array_elements(data, with_raw=True))
    assert [n for n, _, _ in items] == [1, 2, 3]
    assert items[0][1] == {"a": "ok"} and items[2][1] == {"a": "after"}
    err = items[1][1]
    assert isinstance(err, FormatError)
    assert (err.code, err.message) == ("io.bad_utf8", "invalid UTF-8 at byte offset 21 of the file")
    assert items[1][2] == b'{"a": "\xff\xfe"}'  # the exact original bytes


def test_iter_array_elements_syntax_error_keeps_the_rest_of_the_file():
    data = b'[{"a": 1}, {"a": 2,, "b": 3}, {"a": 4}]'
    items = list(iter_array_elements(data, with_raw=True))
    assert [(n, v) for n, v, _ in items[:1]] == [(1, {"a": 1})]
    n, err, raw = items[1]
    assert n == 2 and err.code == "io.bad_json"
    assert err.message.startswith("array element 2 is not valid JSON: Expecting property name enclosed in double quotes")
    assert raw == b'{"a": 2,, "b": 3}, {"a": 4}]'
    assert len(items) == 2


@pytest.mark.parametrize(
    ("data", "raw", "message"),
    [
        (b'[{"a": 1}', b"", "expected ',' or ']' after array element 1, found end of file"),
        (b'[{"a": 1} {"a": 2}]', b'{"a": 2}]', "expected ',' or ']' after array element 1, found '{'"),
        (b'[{"a": 1}] {"b": 2}', b'{"b": 2}', "unexpected text after the closing ']' of the array"),
    ],
)
def test_iter_array_elements_unterminated_or_trailing(data, raw, message):
    items = list(iter_array_elements(data, with_raw=True))
    assert items[0][:2] == (1, {"a": 1})
    assert len(items) == 2
    n, err, got_raw = items[1]
    assert (n, err.code, got_raw) == (2, "io.bad_json", raw)
    assert err.message.startswith(message)


@pytest.mark.parametrize(
    ("data", "found"),
    [
        (b'{"instruction": "a", "output": "b"}', "expected a JSON array of records, found object"),
        (b"42", "expected a JSON array of records, found number"),
        (b"{oops", "expected a JSON array of records, found invalid JSON"),
    ],
)
def test_iter_array_elements_not_an_array_is_one_reject_with_the_whole_file(data, found):
    [(n, err, raw)] = list(iter_array_elements(data, name="data/x.json", with_raw=True))
    assert (n, err.code, raw) == (1, "io.not_array", data)
    assert err.message.startswith(found)


def test_iter_array_elements_empty_file_holds_no_records():
    assert list(iter_array_elements(b"  \n", name="data/x.json")) == []


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        (b'[{"a": 1}, {"a": 1e999}, {"a": 2}]', "a", "number 1e999 is out of range (it would be written back as inf, which is not JSON)"),
        (b'[{"a": 1}, {"a": NaN}, {"a": 2}]', "a", "NaN is not a JSON number (RFC 8259 section 6)"),
        (b'[{"a": 1}, {"a": {"b": [0, 1e-400]}}, {"a": 2}]', "a.b[1]", "number 1e-400 is out of range (too small: it would be written back as 0.0)"),
        (
            b'[{"a": 1}, {"a": [' + b"9" * 4301 + b']}, {"a": 2}]',
            "a[0]",
            "integer of 4,301 digits is out of range (more than 4,300 digits cannot be written back)",
        ),
    ],
)
def test_iter_json_array_numbers_that_cannot_be_written_back_reject_their_element_only(data, field, message):
    items = list(iter_array_elements(data, with_raw=True))
    assert [(n, v) for n, v, _ in items if not isinstance(v, FormatError)] == [(1, {"a": 1}), (3, {"a": 2})]
    n, err, raw = items[1]
    assert (n, err.code, err.field, err.message) == (2, "io.bad_json", field, message)
    assert raw.startswith(b'{"a": ') and raw.endswith(b"}")


def test_iter_json_array_too_deep_is_the_rest_of_the_file():
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    items = list(iter_array_elements(b'[{"a": 1}, ' + deep + b"]", with_raw=True))
    assert items[0][:2] == (1, {"a": 1})
    n, err, raw = items[1]
    assert (n, err.code) == (2, "io.bad_json") and "nested too deeply" in err.message
    assert raw == deep + b"]"


def test_iter_json_array_names_a_missing_file(tmp_path):
    with pytest.raises(CurateError, match=r"missing\.json: cannot read: No such file"):
        list(iter_array_elements(tmp_path / "missing.json"))


def test_formats_module_imports_no_heavy_packages():
    # curate validate (pre-commit) reads .json arrays through this module; it must stay light.
    code = "import sys, curator.io.formats; print(sorted(m for m in ('polars', 'torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- the real files in ../shared/data/native ------------------------------------------------------


def _native(path: Path) -> list[tuple[dict, str]]:
    converted = []
    for n, value in iter_array_elements(path):
        assert not isinstance(value, FormatError), f"{path.name}:{n}: {value}"
        shape = detect_format(value)
        converted.append((to_chat(value, shape), shape))
    return converted


def _chat_lines(name: str) -> list[dict]:
    with open(CHAT / name, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.mark.parametrize(
    ("native", "chat", "shape", "count"),
    [
        ("llamafactory/alpaca_en_demo.json", "llamafactory_alpaca_en_demo.jsonl", "alpaca", 999),
        ("codealpaca/code_alpaca_2k.json", "codealpaca_2k.jsonl", "alpaca", 2017),
        ("gpteacher/codegen-instruct.json", "gpteacher_codegen.jsonl", "gpteacher", 4535),
        ("fastchat/dummy_conversation.json", "fastchat_dummy_conversation.jsonl", "sharegpt", 500),
    ],
)
def test_real_files_match_their_chat_conversion(native, chat, shape, count):
    converted = _native(NATIVE / native)
    expected = _chat_lines(chat)
    assert len(converted) == len(expected) == count
    assert {fmt for _, fmt in converted} == {shape}
    for i, ((record, _), line) in enumerate(zip(converted, expected), start=1):
        assert record["messages"] == line["messages"], f"{chat}:{i}"
        # Native fields beyond the conversation (FastChat's id) land in meta like the chat files have them.
        for key, value in (record["meta"] or {}).items():
            assert line["meta"][key] == value, f"{chat}:{i}: meta.{key}"


def test_real_glaive_toolcalls_give_one_representation_from_both_shapes():
    """The ShareGPT file (function_call turns, `tools`) and its chat conversion (calls as the
    assistant's JSON text, tools only in meta) give the same canonical messages; only the ShareGPT
    record has `tools`, since the chat file's meta.tools is the user's and stays in meta."""
    converted = _native(NATIVE / "llamafactory" / "glaive_toolcall_en_demo.json")
    expected = _chat_lines("llamafactory_glaive_toolcall_en_demo.jsonl")
    assert len(converted) == len(expected) == 300
    n_calls = n_tools = 0
    for i, ((record, fmt), line) in enumerate(zip(converted, expected), start=1):
        assert fmt == "sharegpt"
        (ours, ours_problems), (theirs, their_problems) = check_record(record), check_record(line)
        assert ours_problems == their_problems == [], f"line {i}"
        ours, theirs = to_plain(ours), to_plain(theirs)
        assert ours["messages"] == theirs["messages"], f"line {i}"
        assert ours["tools"] == canonical_tools(line["meta"]["tools"]) and theirs["tools"] is None
        assert theirs["meta"]["tools"] == line["meta"]["tools"] and ours["meta"] is None
        ids = [c["id"] for m in ours["messages"] for c in m.get("tool_calls", [])]
        assert ids == [f"call{n:05d}" for n in range(1, len(ids) + 1)]  # numbered within the record
        assert all(m["content"] == "" for m in ours["messages"] if m.get("tool_calls"))
        n_calls += len(ids)
        n_tools += ours["tools"] is not None
    assert n_calls == 211  # every function_call turn of the file
    assert n_tools == 191  # the other 109 records have "tools": "[]"


@pytest.mark.parametrize(
    ("native", "problems"),
    [
        ("llamafactory/alpaca_en_demo.json", {}),
        ("llamafactory/glaive_toolcall_en_demo.json", {}),
        ("fastchat/dummy_conversation.json", {}),
        ("gpteacher/codegen-instruct.json", {}),
        ("codealpaca/code_alpaca_2k.json", {"structure.empty_content": 2}),  # the 2 known empty answers
    ],
)
def test_real_files_pass_the_schema(native, problems):
    found: dict[str, int] = {}
    for record, _ in _native(NATIVE / native):
        _, record_problems = check_record(record)
        for p in record_problems:
            found[p.code] = found.get(p.code, 0) + 1
    assert found == problems


# --- repairs of real ShareGPT captures (input.repairs) ---------------------------------------------


def _sharegpt(*turns):
    return {"conversations": [{"from": f, "value": v} for f, v in turns]}


def test_leading_assistant_turns_of_a_capture_are_dropped_with_a_note():
    record, notes = to_chat_repaired(_sharegpt(("gpt", "...and that is why."), ("human", "Thanks! Now X?"),
                                               ("gpt", "X is Y.")), "sharegpt")
    assert [m["role"] for m in record["messages"]] == ["user", "assistant"]
    assert record["messages"][0]["content"] == "Thanks! Now X?"
    assert notes == [("repair.leading_assistant", "1 assistant turn(s) before the first user turn dropped")]


def test_a_system_turn_stays_before_the_dropped_turns():
    record, _ = to_chat_repaired(_sharegpt(("system", "Be brief."), ("gpt", "Hi"), ("gpt", "again"), ("human", "Q"),
                                           ("gpt", "A")), "sharegpt")
    assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant"]


def test_other_products_speak_as_the_assistant():
    record, notes = to_chat_repaired(_sharegpt(("human", "Q"), ("bing", "A"), ("human", "Q2"), ("chatgpt", "A2")),
                                     "sharegpt")
    assert [m["role"] for m in record["messages"]] == ["user", "assistant", "user", "assistant"]
    assert notes == [("repair.role_alias", "speaker 'bing', 'chatgpt' read as the assistant")]


def test_consecutive_turns_of_one_speaker_are_joined():
    record, notes = to_chat_repaired(_sharegpt(("human", "part 1"), ("human", "part 2"), ("gpt", "A")), "sharegpt")
    assert record["messages"] == [{"role": "user", "content": "part 1\n\npart 2"}, {"role": "assistant", "content": "A"}]
    assert notes == [("repair.merge_turns", "1 turn(s) joined to the turn of the same speaker before")]


def test_repairs_can_be_turned_off():
    raw = _sharegpt(("gpt", "tail"), ("human", "Q"), ("bard", "A"))
    with pytest.raises(FormatError, match="unknown speaker 'bard'"):
        to_chat_repaired(raw, "sharegpt", repairs=())
    record, notes = to_chat_repaired(raw, "sharegpt", repairs=("role_alias",))
    assert [m["role"] for m in record["messages"]] == ["assistant", "user", "assistant"]
    assert [code for code, _ in notes] == ["repair.role_alias"]


def test_the_same_answer_under_response_and_output_is_alpaca_not_ambiguous():
    assert detect_format({"instruction": "i", "output": "o", "response": "o"}) == "alpaca"
    with pytest.raises(FormatError, match="ambiguous"):
        detect_format({"instruction": "i", "output": "o", "response": "other"})


def test_repairs_recover_the_real_sharegpt_captures(tmp_path):
    from curator.config import load_config
    from curator.pipeline import run

    sample = NATIVE / "sharegpt_v3_sample.json"
    on = run(sample, tmp_path / "on", load_config(None, ["gates.min_examples=null", f"skip_stages={HEAVY_STAGES}"]))
    off = run(sample, tmp_path / "off", load_config(None, ["gates.min_examples=null", f"skip_stages={HEAVY_STAGES}",
                                                          "input.repairs=[]"]))
    assert on.counts["read"] == off.counts["read"] == 2000
    def first_reasons(out):
        lines = (tmp_path / out / "rejects.jsonl").read_text(encoding="utf-8").split("\n")  # not at U+2028
        return [json.loads(x)["reasons"][0] for x in lines if x]

    assert first_reasons("off").count("structure.not_alternating") == 751
    assert first_reasons("on").count("structure.not_alternating") == 0
    ann = pl.read_parquet(tmp_path / "on" / "annotations.parquet")
    notes = ann.get_column("warnings").explode().drop_nulls().str.extract(r"^([^:]+)").value_counts(sort=True)
    assert dict(notes.rows()) == {"repair.leading_assistant": 748, "repair.merge_turns": 5, "normalize.hidden_controls": 1}


def test_format_per_file_glob_fixes_one_odd_file_in_a_mixed_folder(tmp_path):
    from click.testing import CliRunner

    from curator.cli import cli

    raw = tmp_path / "raw"
    (raw / "legacy").mkdir(parents=True)
    # instruction + output + response with different texts: ambiguous unless the file's shape is given
    (raw / "legacy" / "old.json").write_text(json.dumps([{"instruction": "Say hi.", "output": "Hi!", "response": "Hello"}]),
                                             encoding="utf-8")
    (raw / "chat.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "Q"},
                                                              {"role": "assistant", "content": "A"}]}) + "\n", encoding="utf-8")
    args = ["run", str(raw), str(tmp_path / "out"), "--no-gate", "-q", "-s", f"skip_stages={HEAVY_STAGES}"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    rejects = (tmp_path / "out" / "rejects.jsonl").read_text(encoding="utf-8")
    assert "format.ambiguous_shape" in rejects
    result = CliRunner().invoke(cli, [*args, "--force", "--input-format", "legacy/*.json=alpaca"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "rejects.jsonl").read_text(encoding="utf-8") == ""
    train_val = [json.loads(x) for name in ("train.jsonl", "val.jsonl")
                 for x in (tmp_path / "out" / name).read_text(encoding="utf-8").splitlines()]
    assert sorted(r["messages"][0]["content"] for r in train_val) == ["Q", "Say hi."]
    # --format, the older name of --input-format in `curate run`, still works
    bad = CliRunner().invoke(cli, [*args, "--force", "--format", "legacy/*.json=csv"])
    assert bad.exit_code == 1 and "--input-format legacy/*.json=csv: 'csv' is not one of auto, chat" in bad.output
