"""Readers for the shapes public chat data is published in, converted to the chat record.

The chat record is `{"messages": [{"role", "content", ...}], "meta": {...} | None}` (curator/schema.py).
Three other shapes cover most public instruction data:

- **Alpaca** (`instruction`, `input`, `output`, optional `system` and `history`), as documented by
  LLaMA-Factory (data/README.md, "alpaca format"; converter: src/llamafactory/data/converter.py,
  `AlpacaDatasetConverter`). `history` is a list of `[prompt, response]` pairs that come first.
- **ShareGPT** (`conversations`: `[{"from", "value"}]`, optional top-level `system` and `tools`), as
  documented by LLaMA-Factory ("sharegpt format") and used by FastChat: `human`/`user` -> user,
  `gpt`/`assistant` -> assistant, `system` -> system, `function_call` -> an assistant turn with empty
  content and the call(s) as `tool_calls`, `observation` -> a tool turn, `tools` -> the record's
  `tools` (the schema puts calls and tools in their one form, curator/tool_use.py). Turns written
  OpenAI-style (`role`/`content`) are read too.
- **GPTeacher** (`instruction`, `input`, `response`), as published in teknium1/GPTeacher.

What this module guarantees:

- Nothing is dropped. Every field that is not part of the conversation goes under `meta` (a record's
  own `meta` object is kept and the other fields are added beside it); unknown keys on a ShareGPT turn
  stay on the message, where the schema reports them and keeps them (`meta._extra`). Empty strings are
  converted as they are, so the schema, not the reader, rejects an empty turn with its own reason.
- Bad input raises `FormatError(field, message, code)` where `field` is a dotted path in the record as
  the user wrote it (`conversations[2].from`), never a crash and never a guess.

Only the standard library, curator.errors and curator.tool_use are imported here: `curate validate`
(the pre-commit hook) uses it.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import re
import zlib
from typing import Any, BinaryIO, Iterator

from curator import tool_use
from curator.errors import CurateError
from curator.io.strict_json import DECODER, DepthError, NumberError, check_depth, number_field

FORMATS = ("chat", "alpaca", "sharegpt", "gpteacher")

# Stable reason codes of conversion failures; they become reject reasons like any schema code.
CODE_NOT_OBJECT = "schema.not_object"  # same code as curator/schema.py gives a non-object line
CODE_UNKNOWN_SHAPE = "format.unknown_shape"
CODE_AMBIGUOUS_SHAPE = "format.ambiguous_shape"
CODE_MISSING_FIELD = "format.missing_field"
CODE_BAD_TYPE = "format.bad_type"
CODE_UNKNOWN_ROLE = "format.unknown_role"
CODE_FIELD_CONFLICT = "format.field_conflict"
CODE_BAD_FUNCTION_CALL = "format.bad_function_call"  # a function_call turn that holds no call
CODE_BAD_JSON = "io.bad_json"  # an element of a .json array that is not valid JSON
CODE_BAD_UTF8 = "io.bad_utf8"  # an element of a .json array whose bytes are not valid UTF-8
CODE_NOT_ARRAY = "io.not_array"  # a .json file that is not an array of records (e.g. a dataset_info.json)

# Stanford Alpaca's prompt puts the input in its own paragraph below the instruction
# ("{instruction}\n\n### Input:\n{input}"), and the chat-JSONL conversions of Alpaca, CodeAlpaca and
# GPTeacher data in ../shared/data/chat join them with a blank line; LLaMA-Factory joins with a single
# "\n". We follow the blank line so that the same example read from either shape has the same
# content hash (and exact dedup sees it as one).
INPUT_SEPARATOR = "\n\n"

# ShareGPT speaker tags -> chat roles (LLaMA-Factory's default tags: human, gpt, observation,
# function_call, system; FastChat uses human and gpt). OpenAI role names are accepted as themselves.
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "function_call": "assistant",
    "system": "system",
    "observation": "tool",
    "tool": "tool",
}


# Repairs a data team makes by hand to real ShareGPT captures, each switchable (`input.repairs`) and
# noted on the row as a `repair.*` warning, so nothing changes silently:
# - role_alias: the speaker tags of other chat products (`chatgpt`, `bing`, `bard`) read as the assistant;
# - leading_assistant: share links capture conversations mid-way, so the turns before the first user turn
#   are dropped, as FastChat's training code does (fastchat/train/train.py, `preprocess`);
# - merge_turns: consecutive plain turns of the same speaker joined with a blank line, as the
#   reference tokenizer merges them (mistral_common's InstructRequestNormalizer).
REPAIRS = ("role_alias", "leading_assistant", "merge_turns")
ASSISTANT_ALIASES = ("chatgpt", "bing", "bard")


class FormatError(ValueError):
    """A record that cannot be converted: which field, what is wrong, and a stable reason code."""

    def __init__(self, field: str, message: str, code: str = CODE_BAD_TYPE) -> None:
        self.field = field
        self.message = message
        self.code = code
        super().__init__(f"{field}: {message} [{code}]" if field else f"{message} [{code}]")

    def format(self, file: str, line: int) -> str:
        """`file:line: field: message [code]`, the line `curate validate` prints."""
        where = f"{self.field}: " if self.field else ""
        return f"{file}:{line}: {where}{self.message} [{self.code}]"


def _kind(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# --- detection ---------------------------------------------------------------------------------


def detect_format(obj: Any) -> str:
    """Which shape a parsed record is in: chat, alpaca, sharegpt or gpteacher.

    Decided by keys alone (`messages`; `conversations`; `instruction` with `output`; `instruction` with
    `response`); a record matching none or several raises FormatError naming the keys it has.
    """
    if not isinstance(obj, dict):
        raise FormatError("", f"Input should be a JSON object, not {_kind(obj)}", CODE_NOT_OBJECT)
    matches = []
    if "messages" in obj:
        matches.append("chat")
    if "conversations" in obj:
        matches.append("sharegpt")
    if "instruction" in obj and "output" in obj:
        matches.append("alpaca")
    if "instruction" in obj and "response" in obj and not ("output" in obj and obj["output"] == obj["response"]):
        matches.append("gpteacher")  # the same answer under both names (new_codealpaca.json) is Alpaca
    keys = ", ".join(sorted(obj)) or "none"
    if not matches:
        raise FormatError(
            "",
            f"unrecognised record shape (keys: {keys}); expected messages (chat), conversations (sharegpt), "
            "instruction+output (alpaca) or instruction+response (gpteacher)",
            CODE_UNKNOWN_SHAPE,
        )
    if len(matches) > 1:
        raise FormatError(
            "",
            f"ambiguous record shape (keys: {keys}) matches {' and '.join(matches)}; choose one with --format",
            CODE_AMBIGUOUS_SHAPE,
        )
    return matches[0]


# --- conversion --------------------------------------------------------------------------------


def to_chat(obj: Any, fmt: str, *, input_separator: str = INPUT_SEPARATOR) -> dict[str, Any]:
    """Convert one parsed record in shape `fmt` to a chat record dict `{"messages", "meta"}`, unrepaired."""
    return to_chat_repaired(obj, fmt, repairs=(), input_separator=input_separator)[0]


def to_chat_repaired(
    obj: Any, fmt: str, *, repairs: tuple[str, ...] | list[str] = REPAIRS, input_separator: str = INPUT_SEPARATOR
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Convert one parsed record in shape `fmt` to a chat record dict `{"messages", "meta"}`, with the
    `repairs` that apply to it; return it and a (code, message) note per repair made.

    `chat` records are returned as they are (the schema validates them). The result is new dicts;
    `obj` is not modified. Raises FormatError on input that does not have the shape.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not isinstance(obj, dict):
        raise FormatError("", f"Input should be a JSON object, not {_kind(obj)}", CODE_NOT_OBJECT)
    if fmt == "chat":
        return obj, []
    if fmt == "alpaca":
        return _from_instruction(obj, "output", history=True, input_separator=input_separator), []
    if fmt == "gpteacher":
        return _from_instruction(obj, "response", history=False, input_separator=input_separator), []
    notes: list[tuple[str, str]] = []
    turns = _repaired_turns(obj.get("conversations"), repairs, notes)
    return _from_sharegpt({**obj, "conversations": turns}), notes


def _speaker(turn: Any) -> str | None:
    """The chat role of a ShareGPT turn's speaker tag (aliases included), or None."""
    if not isinstance(turn, dict):
        return None
    tag = turn.get("from", turn.get("role"))
    return "assistant" if tag in ASSISTANT_ALIASES else SHAREGPT_ROLES.get(tag) if isinstance(tag, str) else None


def _is_plain(turn: Any) -> bool:
    """A turn of speaker and text only (no call, no id, no weight): safe to merge with its neighbour."""
    return isinstance(turn, dict) and set(turn) <= {"from", "value", "role", "content"} and \
        isinstance(turn.get("value", turn.get("content")), str) and turn.get("from", turn.get("role")) != "function_call"


def _repaired_turns(turns: Any, repairs: tuple[str, ...] | list[str], notes: list[tuple[str, str]]) -> Any:
    """ShareGPT `conversations` with the `repairs` applied (see REPAIRS); a note per repair made."""
    if not isinstance(turns, list):
        return turns
    turns = list(turns)
    if "role_alias" in repairs:
        aliased = sorted({t["from"] for t in turns if isinstance(t, dict) and t.get("from") in ASSISTANT_ALIASES})
        if aliased:
            turns = [{**t, "from": "gpt"} if isinstance(t, dict) and t.get("from") in ASSISTANT_ALIASES else t
                     for t in turns]
            notes.append(("repair.role_alias", f"speaker {', '.join(map(repr, aliased))} read as the assistant"))
    if "leading_assistant" in repairs:
        first = next((i for i, t in enumerate(turns) if _speaker(t) != "system"), None)
        end = first
        while end is not None and end < len(turns) and _speaker(turns[end]) == "assistant" and _is_plain(turns[end]):
            end += 1
        if first is not None and end > first and end < len(turns):  # an answer with no question: captured mid-way
            turns = turns[:first] + turns[end:]
            notes.append(("repair.leading_assistant", f"{end - first} assistant turn(s) before the first user turn dropped"))
    if "merge_turns" in repairs:
        merged: list[Any] = []
        joined = 0
        for turn in turns:
            prev = merged[-1] if merged else None
            if prev is not None and _is_plain(prev) and _is_plain(turn) and _speaker(prev) == _speaker(turn) \
                    and _speaker(turn) in ("user", "assistant"):
                key = "value" if "value" in prev else "content"
                text = turn.get("value", turn.get("content"))
                merged[-1] = {**prev, key: f"{prev[key]}{INPUT_SEPARATOR}{text}"}
                joined += 1
            else:
                merged.append(turn)
        if joined:
            turns = merged
            notes.append(("repair.merge_turns", f"{joined} turn(s) joined to the turn of the same speaker before"))
    return turns


def _string(obj: dict[str, Any], key: str, *, required: bool, path: str | None = None) -> str | None:
    """obj[key] as a string; absent or null is None when not required, anything else a FormatError."""
    where = path or key
    if key not in obj:
        if required:
            raise FormatError(where, "Field required", CODE_MISSING_FIELD)
        return None
    value = obj[key]
    if isinstance(value, str):
        return value
    if value is None and not required:
        return None
    raise FormatError(where, f"Input should be a string, not {_kind(value)}", CODE_BAD_TYPE)


def _meta(obj: dict[str, Any], consumed: tuple[str, ...]) -> dict[str, Any] | None:
    """The record's own `meta` object plus every field that is not part of the conversation."""
    own = obj.get("meta")
    if own is not None and not isinstance(own, dict):
        raise FormatError("meta", f"Input should be an object, not {_kind(own)}", CODE_BAD_TYPE)
    meta = dict(own) if own else {}
    for key, value in obj.items():
        if key in consumed or key == "meta":
            continue
        if key in meta and meta[key] != value:
            raise FormatError(key, "also present in meta with another value; rename one of them", CODE_FIELD_CONFLICT)
        meta[key] = value
    return meta or None


def _from_instruction(obj: dict[str, Any], response_key: str, *, history: bool, input_separator: str) -> dict[str, Any]:
    """Alpaca (`output`, with optional `system`/`history`) and GPTeacher (`response`) records."""
    instruction = _string(obj, "instruction", required=True)
    extra_input = _string(obj, "input", required=False)
    response = _string(obj, response_key, required=True)

    messages: list[dict[str, Any]] = []
    consumed = ("instruction", "input", response_key)
    if history:
        consumed += ("system", "history")
        system = _string(obj, "system", required=False)
        # An empty system prompt means "no system prompt" (LLaMA-Factory's default is "").
        if system:
            messages.append({"role": "system", "content": system})
        past = obj.get("history")
        if past is not None:
            if not isinstance(past, list):
                raise FormatError("history", f"Input should be an array of [prompt, response] pairs, not {_kind(past)}")
            for i, pair in enumerate(past):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise FormatError(f"history[{i}]", "Input should be a [prompt, response] pair")
                for j, text in enumerate(pair):
                    if not isinstance(text, str):
                        raise FormatError(f"history[{i}][{j}]", f"Input should be a string, not {_kind(text)}")
                messages.append({"role": "user", "content": pair[0]})
                messages.append({"role": "assistant", "content": pair[1]})

    # Like LLaMA-Factory, an empty instruction or input adds nothing; if both are empty the user turn
    # is empty and the schema rejects it (structure.empty_content).
    prompt = input_separator.join(part for part in (instruction, extra_input) if part)
    messages.append({"role": "user", "content": prompt})
    messages.append({"role": "assistant", "content": response})
    return {"messages": messages, "meta": _meta(obj, consumed)}


def _tool_calls(value: str, where: str) -> list[dict[str, Any]]:
    """The OpenAI-style calls of a ShareGPT `function_call` turn's value.

    The value is `{"name": ..., "arguments": ...}` (`arguments` may be left out: no arguments) or a
    list of them (parallel calls, as LLaMA-Factory writes them); anything else is a FormatError
    (`format.bad_function_call`), since the turn says it is a call. Arguments are passed on as the
    data has them; the schema makes them canonical and rejects those that are not a JSON object.
    """
    try:
        parsed = tool_use.load_json_text(value)
    except ValueError as exc:
        raise FormatError(where, f"a function_call turn's value is {exc}", CODE_BAD_FUNCTION_CALL) from None
    calls = parsed if isinstance(parsed, list) else [parsed]
    for i, call in enumerate(calls):
        if not isinstance(call, dict) or not isinstance(call.get("name"), str) or set(call) - {"name", "arguments"}:
            which = f"call {i + 1} of " if isinstance(parsed, list) else ""
            message = f'{which}a function_call turn should be {{"name": string, "arguments": ...}}, not {_shape(call)}'
            raise FormatError(where, message, CODE_BAD_FUNCTION_CALL)
    if not calls:
        raise FormatError(where, "a function_call turn holds an empty list of calls", CODE_BAD_FUNCTION_CALL)
    return [
        {"type": "function", "function": {"name": c["name"], "arguments": tool_use.call_arguments(c.get("arguments", {}))}}
        for c in calls
    ]


def _shape(value: Any) -> str:
    """What a value is, for a message: its kind, or an object's keys."""
    if isinstance(value, dict):
        return "an object with keys " + (", ".join(sorted(map(str, value))) or "none")
    return _kind(value)


def _from_sharegpt(obj: dict[str, Any]) -> dict[str, Any]:
    turns = obj.get("conversations")
    if not isinstance(turns, list):
        raise FormatError("conversations", f"Input should be an array of turns, not {_kind(turns)}")
    messages: list[dict[str, Any]] = []
    system = _string(obj, "system", required=False)
    if system:
        messages.append({"role": "system", "content": system})
    for i, turn in enumerate(turns):
        where = f"conversations[{i}]"
        if not isinstance(turn, dict):
            raise FormatError(where, f"Input should be an object with from and value, not {_kind(turn)}")
        # ShareGPT writes from/value; some exports put OpenAI role/content under `conversations`.
        role_key = "from" if "from" in turn or "role" not in turn else "role"
        text_key = "value" if "value" in turn or "content" not in turn else "content"
        tag = _string(turn, role_key, required=True, path=f"{where}.{role_key}")
        text = _string(turn, text_key, required=True, path=f"{where}.{text_key}")
        role = SHAREGPT_ROLES.get(tag)
        if role is None:
            allowed = ", ".join(f"'{t}'" for t in SHAREGPT_ROLES)
            raise FormatError(f"{where}.{role_key}", f"unknown speaker {tag!r}; expected one of {allowed}", CODE_UNKNOWN_ROLE)
        message: dict[str, Any] = {"role": role, "content": text}
        if tag == "function_call":
            message = {"role": role, "content": "", "tool_calls": _tool_calls(text, f"{where}.{text_key}")}
        # Keep whatever else the turn carries (weight, tool_call_id, names ...): the schema checks it.
        for key, value in turn.items():
            if key in (role_key, text_key):
                continue
            if key in message and message[key] != value:
                raise FormatError(f"{where}.{key}", f"conflicts with the turn's {role_key}/{text_key}", CODE_FIELD_CONFLICT)
            message[key] = value
        messages.append(message)
    record: dict[str, Any] = {"messages": messages}
    if obj.get("tools") not in (None, ""):  # LLaMA-Factory writes "" for no tools
        record["tools"] = obj["tools"]
    record["meta"] = _meta(obj, ("conversations", "system", "tools"))
    return record


# --- .json files holding an array of records ---------------------------------------------------
#
# The array is streamed: the file is read in chunks of CHUNK_BYTES and each element is decoded on its
# own, so memory is bounded by the largest element allowed (`max_element_bytes`, input.max_line_bytes
# in a run), never by the size of the file. An element over the limit is walked past without being
# held: only its first PREVIEW_BYTES are kept.

MAX_ELEMENT_BYTES = 4_000_000  # input.max_line_bytes's default
CHUNK_BYTES = 1 << 20
PREVIEW_BYTES = 200
CODE_TOO_LONG = "io.line_too_long"  # the same code as an overlong .jsonl line

_WS = re.compile(r"[ \t\n\r]*")
_LONE_SURROGATE = re.compile(r"[\udc80-\udcff]")  # bytes that were not UTF-8 (surrogateescape)
_OUTSIDE_STRING = re.compile(r'["\[\]{},]')
_INSIDE_STRING = re.compile(r'["\\]')
_NUMBER_TAIL = re.compile(r"[0-9.eE+-]*")
_ESCAPE = "surrogateescape"  # each byte that is not UTF-8 becomes one lone surrogate, and back
_KIND_BY_FIRST = {"{": "object", '"': "string", "t": "boolean", "f": "boolean", "n": "null", "-": "number"}


class _Text:
    """A binary stream as text, read in chunks: `buf[pos:]` has been read and not yet consumed.

    Decoding never fails (bytes that are not UTF-8 become lone surrogates) and a slice encoded back
    gives the exact original bytes. `offset` is the file offset of `buf[0]`.
    """

    def __init__(self, fh: Any) -> None:
        self.read = getattr(fh, "read1", fh.read)  # read1: what one underlying read gives, so a failure loses little
        self.failed: BaseException | None = None
        self.decoder = codecs.getincrementaldecoder("utf-8")(_ESCAPE)
        self.buf = ""
        self.pos = 0
        self.offset = 0
        self.eof = False
        self.newlines = 0  # line breaks before buf[counted]: counted once each, however far the file goes
        self.counted = 0

    def more(self, n: int | None = None) -> bool:
        """Drop what was consumed and read up to `n` more bytes (CHUNK_BYTES); False once the file is read.

        A read that fails (a truncated gzip stream) keeps what it got before failing: the error is
        raised by the next call, once the elements complete before it have been taken.
        """
        if self.failed is not None:
            raise self.failed
        if self.eof:
            return False
        if self.pos:
            self.offset += len(self.buf[: self.pos].encode("utf-8", _ESCAPE))
            self.line_at(self.pos)
            self.buf, self.pos, self.counted = self.buf[self.pos :], 0, self.counted - self.pos
        want = n or CHUNK_BYTES
        parts: list[bytes] = []
        got = 0
        while got < want:
            try:
                data = self.read(want - got)
            except (OSError, EOFError, zlib.error) as exc:
                if not parts:
                    raise
                self.failed = exc
                break
            if not data:
                self.eof = True
                break
            parts.append(data)
            got += len(data)
        before = len(self.buf)
        self.buf += self.decoder.decode(b"".join(parts), final=self.eof)
        return got > 0 or len(self.buf) > before

    def skip_ws(self) -> str | None:
        """Move past whitespace; the next character, or None at the end of the file."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return None

    def file_offset(self, index: int) -> int:
        return self.offset + len(self.buf[:index].encode("utf-8", _ESCAPE))

    def line_at(self, index: int) -> int:
        """The 1-based line of the file `buf[index]` is on; `index` never goes back past what was consumed."""
        if index > self.counted:
            self.newlines += self.buf.count("\n", self.counted, index)
            self.counted = index
        return self.newlines + 1

    def rest(self, limit: int) -> tuple[bytes, int]:
        """Consume the file from `pos` to its end: (its bytes, or its first PREVIEW_BYTES when it is over
        `limit`; its size in bytes)."""
        head = bytearray(self.buf[self.pos :].encode("utf-8", _ESCAPE))
        total = len(head)
        self.pos = len(self.buf)
        while self.more():
            piece = self.buf[self.pos :].encode("utf-8", _ESCAPE)
            self.pos = len(self.buf)
            total += len(piece)
            if len(head) <= limit:
                head += piece
        return bytes(head if total <= limit else head[:PREVIEW_BYTES]), total


class _EndFinder:
    """Finds where an array element ends without decoding it: the ',' or ']' after it, outside
    strings and nested brackets. Fed chunk by chunk; keeps its state between chunks."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False

    def feed(self, text: str, i: int) -> int | None:
        """Index in `text` of the delimiter that ends the element, scanning from `i`; None if not in it."""
        while i < len(text):
            if self.escaped:
                self.escaped, i = False, i + 1
            elif self.in_string:
                m = _INSIDE_STRING.search(text, i)
                if m is None:
                    return None
                i = m.end()
                if m.group() == '"':
                    self.in_string = False
                else:
                    self.escaped = True
            else:
                m = _OUTSIDE_STRING.search(text, i)
                if m is None:
                    return None
                c, i = m.group(), m.end()
                if c == '"':
                    self.in_string = True
                elif c in "[{":
                    self.depth += 1
                elif c == "," and self.depth == 0:
                    return m.start()
                elif c in "]}":
                    if self.depth == 0:
                        return m.start()
                    self.depth -= 1
        return None


def _cut(raw: bytes, total: int) -> str:
    """What a message adds when raw holds only the start of the bytes it stands for."""
    return "" if len(raw) == total else f"; it is {total:,} bytes, raw holds its first {len(raw)} only"


def _rest_of_file(t: _Text, limit: int, message: str, note: str = "; the rest of the file is unreadable") -> tuple[FormatError, bytes]:
    """An error carrying the file from `t.pos` to its end."""
    raw, total = t.rest(limit)
    return FormatError("", message + note + _cut(raw, total), CODE_BAD_JSON), raw


def _not_array(t: _Text, limit: int) -> tuple[FormatError, bytes]:
    """A file that does not hold an array: one error carrying the file (its start, when over `limit`)."""
    t.pos = 0
    raw, total = t.rest(limit)
    text = raw.decode("utf-8", _ESCAPE)
    start = _WS.match(text, 1 if text.startswith("\ufeff") else 0).end()
    if len(raw) == total:
        try:
            kind = _kind(DECODER.raw_decode(text, start)[0])
        except (ValueError, RecursionError):
            kind = "invalid JSON"
    else:
        first = text[start : start + 1]
        kind = "number" if first.isdigit() else _KIND_BY_FIRST.get(first, "invalid JSON")
    message = f"expected a JSON array of records, found {kind}; a file with one record per line should be named .jsonl"
    return FormatError("", message + _cut(raw, total), CODE_NOT_ARRAY), raw


def _too_long(t: _Text, n: int, limit: int, finder: _EndFinder, stop: int | None) -> tuple[FormatError, bytes]:
    """Walk past an element over `limit` bytes, from `t.pos` to `stop` (found by `finder` when None),
    without holding it; keep its first PREVIEW_BYTES."""
    head = bytearray()
    size = trailing_ws = 0
    while True:
        end = len(t.buf) if stop is None else stop
        data = t.buf[t.pos : end].encode("utf-8", _ESCAPE)
        t.pos = end
        size += len(data)
        if len(head) < PREVIEW_BYTES:
            head += data[: PREVIEW_BYTES - len(head)]
        kept = len(data.rstrip(b" \t\n\r"))
        trailing_ws = len(data) - kept if kept else trailing_ws + len(data)
        if stop is not None or not t.more():
            break  # at the end of the file inside the element, the array's own error follows
        stop = finder.feed(t.buf, t.pos)
    size -= trailing_ws
    head = head[:size]
    message = f"array element {n} is {size:,} bytes, over the limit of {limit:,} (input.max_line_bytes); raw holds its first {len(head)} bytes only"
    return FormatError("", message, CODE_TOO_LONG), bytes(head)


def _element(t: _Text, n: int, limit: int) -> tuple[Any, bytes, bool]:
    """Decode the element at `t.pos`: (value or FormatError, its bytes, whether the rest of the file is consumed)."""
    while True:
        start = t.pos
        end: int | None
        try:
            value, end = DECODER.raw_decode(t.buf, start)
        except NumberError as exc:
            field, end = number_field(t.buf, start)
            value = FormatError(field, str(exc), CODE_BAD_JSON)
            failure: Exception | None = None if end is not None else exc
        except json.JSONDecodeError as exc:
            end, failure = None, exc
        except RecursionError:
            err, raw = _rest_of_file(t, limit, f"array element {n} is nested too deeply to parse")
            return err, raw, True
        else:
            failure = None
            try:
                check_depth(t.buf[start:end], value)
            except DepthError as exc:
                value = FormatError("", str(exc), CODE_BAD_JSON)
        # An element that does not decode, or a number that reaches the end of what was read
        # ("12" of "12.5"), may go on in the next chunk: read more.
        held = len(t.buf) - start if end is None else end - start
        cut_short = end is None or _NUMBER_TAIL.fullmatch(t.buf, end) is not None
        if cut_short and not t.eof and (held < limit if end is None else held <= limit):
            t.more(max(CHUNK_BYTES, len(t.buf) - start))
            continue
        if end is None:
            return _unparsable(t, n, limit, failure)
        raw = t.buf[start:end].encode("utf-8", _ESCAPE)
        if len(raw) > limit:  # a number may go on past what was read: let the finder say where it ends
            finder = _EndFinder()
            err, head = _too_long(t, n, limit, finder, finder.feed(t.buf, start))
            return err, head, False
        t.pos = end
        bad = _LONE_SURROGATE.search(t.buf, start, end)
        if bad is not None:
            value = FormatError("", f"invalid UTF-8 at byte offset {t.file_offset(bad.start())} of the file", CODE_BAD_UTF8)
        return value, raw, False


def _unparsable(t: _Text, n: int, limit: int, exc: Exception | None) -> tuple[FormatError, bytes, bool]:
    """An element that does not decode, at the end of the file or with `limit` characters read: a syntax
    error leaves no reliable boundary (the rest of the file is the error), unless the element is simply
    too long, which is walked past."""
    if not t.eof:
        finder = _EndFinder()
        stop = finder.feed(t.buf, t.pos)
        if stop is None or len(t.buf[t.pos : stop].encode("utf-8", _ESCAPE)) > limit:
            err, head = _too_long(t, n, limit, finder, stop)
            return err, head, False
    if isinstance(exc, json.JSONDecodeError):
        where = f"{exc.msg} (at byte {t.file_offset(exc.pos):,} of the file)"
    else:
        where = str(exc)
    err, raw = _rest_of_file(t, limit, f"array element {n} is not valid JSON: {where}")
    return err, raw, True


def _elements(fh: Any, limit: int) -> Iterator[tuple[int, Any, bytes, int]]:
    """(n, value or FormatError, raw bytes, line of the file it starts on) for each element of the array `fh` holds."""
    t = _Text(fh)
    # Leading whitespace stays in the buffer (up to `limit`), so a file that is not an array is carried whole.
    while t.more() and _WS.fullmatch(t.buf.lstrip("\ufeff")) and len(t.buf) <= limit:
        pass
    if t.buf.startswith("\ufeff"):
        t.pos = 1
    first = t.skip_ws()
    if first is None:
        return  # an empty file holds no records, like an empty .jsonl
    if first != "[":
        line = t.line_at(t.pos)
        yield (1, *_not_array(t, limit), line)
        return
    t.pos += 1
    n = 0
    if t.skip_ws() != "]":
        while True:
            n += 1
            line = t.line_at(t.pos)
            value, raw, consumed = _element(t, n, limit)
            yield n, value, raw, line
            if consumed:
                return
            after = t.skip_ws()
            if after == ",":
                t.pos += 1
                t.skip_ws()
                continue
            if after == "]":
                break
            found = "end of file" if after is None else repr(after)
            line = t.line_at(t.pos)
            yield (n + 1, *_rest_of_file(t, limit, f"expected ',' or ']' after array element {n}, found {found}"), line)
            return
    t.pos += 1
    if t.skip_ws() is not None:
        line = t.line_at(t.pos)
        yield (n + 1, *_rest_of_file(t, limit, "unexpected text after the closing ']' of the array", note=""), line)


def iter_array_elements(
    source: str | os.PathLike[str] | bytes | BinaryIO,
    *,
    name: str | None = None,
    with_raw: bool = False,
    with_line: bool = False,
    max_element_bytes: int = MAX_ELEMENT_BYTES,
) -> Iterator[tuple]:
    """Yield `(n, value_or_error)` for each element of a .json file holding a JSON array.

    `source` is a path, the file's bytes, or a binary file object (read in chunks, never whole).
    `n` is the element's index + 1 (what `file:N` points at). A value is whatever JSON the element
    holds (converting a non-object is the caller's FormatError); an element that cannot be used is a
    FormatError instead: `io.bad_utf8` when its bytes are not UTF-8, `io.bad_json` when it is not
    JSON or holds a number that cannot be written back (the field named), `io.line_too_long` when it
    is over `max_element_bytes` (walked past, never held whole). A JSON syntax error leaves no
    reliable element boundary, so that element's FormatError carries the rest of the file and
    iteration ends: nothing is lost and the counts still add up. Text after the closing bracket is
    one more erroneous element. An error carrying more than `max_element_bytes` keeps its first
    PREVIEW_BYTES, as its message says.

    With `with_raw=True` the tuples are `(n, value_or_error, raw)` where `raw` is the element's exact
    bytes, for the rejects file. A file that is not a JSON array (an object, a scalar: a sidecar like
    LLaMA-Factory's dataset_info.json) is one `io.not_array` error, element 1, carrying the file, so
    a run goes on and the file is accounted for; an empty file holds no records. A UTF-8 byte order
    mark is ignored, as RFC 8259 section 8.1 allows.

    With `with_line=True` each tuple ends with the 1-based line of the file the element starts on
    (where an editor should jump; `n` stays the element's number).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        items = _elements(io.BytesIO(bytes(source)), max_element_bytes)
    elif hasattr(source, "read"):
        items = _elements(source, max_element_bytes)
    else:
        items = _elements_of_path(os.fspath(source), name, max_element_bytes)
    for n, value, raw, line in items:
        yield (n, value) + ((raw,) if with_raw else ()) + ((line,) if with_line else ())


def _elements_of_path(path: str, name: str | None, limit: int) -> Iterator[tuple[int, Any, bytes, int]]:
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise CurateError(f"{name or path}: cannot read: {exc.strerror or exc}") from exc
    with fh:
        yield from _elements(fh, limit)
