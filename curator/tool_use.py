"""Tool use in one representation, whatever shape it came in.

Every tool call, from every input shape, becomes the OpenAI list

    [{"id": str, "type": "function", "function": {"name": str, "arguments": str}}]

with the keys in exactly that order, and `arguments` the canonical JSON text of an object:
`json.dumps(json.loads(s), ensure_ascii=False)` for a string, `json.dumps(obj, ensure_ascii=False)`
for an object (default separators, keys in the order the data has them). A string keeps the form
the OpenAI API sends, and every row of the split has the same JSON type at `arguments`, so Arrow
(`datasets.load_dataset("json")`) reads the split; an object would give each function's arguments
its own struct and fail as soon as two calls disagree on a type.

A call without an `id` gets `call` + its 1-based position among the record's calls, five digits
(`call00001`), or the next number no call of the record uses: nine letters and digits, the form
Mistral's tokenizers require of a call id, and stable across runs (it depends on the record only).

Tool definitions become TRL's (and the OpenAI request's) list
`[{"type": "function", "function": {"name", "description", "parameters"}}]`; a bare function
definition (`{"name", "description", "parameters"}`, as LLaMA-Factory's ShareGPT data has them,
often as a JSON string of the list) is wrapped. An empty list is no tools.

Only the standard library is imported here: `curate validate` (the pre-commit hook) uses it.
"""

from __future__ import annotations

import json
from typing import Any

from curator.io.strict_json import DECODER, lone_surrogate

BAD_ARGUMENTS = "structure.bad_tool_arguments"
BAD_TOOLS = "schema.bad_tools"
TOOL_WITHOUT_CALL = "structure.tool_without_call"
UNKNOWN_CALL_ID = "structure.unknown_tool_call_id"
UNANSWERED_CALL = "structure.unanswered_tool_call"

_FUNCTION_KEYS = ("name", "description", "parameters")


class ToolUseError(ValueError):
    """Tool use that cannot be made canonical: where (a dotted path), what, and the reason code."""

    def __init__(self, field: str, message: str, code: str) -> None:
        self.field = field
        self.message = message
        self.code = code
        super().__init__(f"{field}: {message} [{code}]")


def dumps(value: Any) -> str:
    """The JSON text the frame and the split hold for calls, arguments and tool lists."""
    return json.dumps(value, ensure_ascii=False)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}" if kind != "null" else "null"


def load_json_text(text: str) -> Any:
    """`text` decoded as strict JSON: no NaN or Infinity, no lone surrogate (neither can be
    written back as JSON); raises ValueError saying what the text is ("not valid JSON (...)")."""
    try:
        value = DECODER.decode(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if lone_surrogate(text, value) is not None:
        raise ValueError("JSON with a lone UTF-16 surrogate escape (\\ud800-\\udfff), which is not text")
    return value


def canonical_arguments(value: Any) -> str:
    """The canonical JSON text of a call's arguments (a JSON string of an object, or an object);
    raises ValueError when it is not JSON or not an object."""
    parsed = load_json_text(value) if isinstance(value, str) else value
    if not isinstance(parsed, dict):
        raise ValueError(f"not a JSON object (or a string of one) but {_article(_kind(parsed))}")
    return dumps(parsed)


def call_id(n: int) -> str:
    """The id given to the record's n-th call (1-based) when it has none."""
    return f"call{n:05d}"


def fill_call_ids(ids: list[str | None]) -> list[str]:
    """`ids` (one per call of a record, in order) with every missing one filled by `call_id`,
    never one the record already uses."""
    used = {i for i in ids if i is not None}
    out = []
    for position, given in enumerate(ids, start=1):
        if given is None:
            n = position
            while call_id(n) in used:
                n += 1
            given = call_id(n)
            used.add(given)
        out.append(given)
    return out


def calls_in_text(text: str | None) -> tuple[list[dict[str, Any]], bool] | None:
    """The calls an assistant's text is made of, `{"name": str, "arguments": ...}` or a non-empty
    list of them (Glaive and LLaMA-Factory write calls so), and whether it was a list; None when the
    whole text is anything else (a call object with more keys than these is text too)."""
    if not text or text.lstrip()[:1] not in ("{", "["):
        return None
    try:
        value = load_json_text(text)
    except ValueError:
        return None
    calls = value if isinstance(value, list) else [value]
    if not calls or not all(_is_call(c) for c in calls):
        return None
    return calls, isinstance(value, list)


def _is_call(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"name", "arguments"} and isinstance(value["name"], str)


def call_arguments(arguments: Any) -> str | dict[str, Any]:
    """A call's arguments as the chat record takes them (a string or an object): any other JSON
    value is passed on as its JSON text, so it is refused by `canonical_arguments` like any
    string that does not hold an object, with the same code."""
    return arguments if isinstance(arguments, (str, dict)) else dumps(arguments)


def canonical_tools(value: Any, field: str = "tools") -> list[dict[str, Any]] | None:
    """Tool definitions in TRL's shape, or None when there are none (null, "", []).

    `value` is a list of definitions or a JSON string of one; each is `{"type": "function",
    "function": {...}}` or a bare function `{"name", "description", "parameters"}`. Function keys
    come in the order name, description, parameters, then any others as given. Raises ToolUseError
    (schema.bad_tools) naming the element at fault.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = load_json_text(value)
        except ValueError as exc:
            raise ToolUseError(field, f"should hold tool definitions, but the string is {exc}", BAD_TOOLS) from None
    if not isinstance(value, list):
        raise ToolUseError(field, f"should be an array of tool definitions, not {_kind(value)}", BAD_TOOLS)
    return [_canonical_tool(tool, f"{field}[{i}]") for i, tool in enumerate(value)] or None


def _canonical_tool(tool: Any, where: str) -> dict[str, Any]:
    if not isinstance(tool, dict):
        raise ToolUseError(where, f"should be an object, not {_kind(tool)}", BAD_TOOLS)
    if "function" in tool or "type" in tool:  # already {"type": "function", "function": {...}}
        if tool.get("type") != "function":
            raise ToolUseError(f"{where}.type", f"should be 'function', not {tool.get('type')!r}", BAD_TOOLS)
        function, fwhere = tool.get("function"), f"{where}.function"
        rest = {k: v for k, v in tool.items() if k not in ("type", "function")}
    else:  # a bare function definition
        function, fwhere, rest = tool, where, {}
    if not isinstance(function, dict):
        raise ToolUseError(fwhere, f"should be an object, not {_kind(function)}", BAD_TOOLS)
    if not isinstance(function.get("name"), str) or not function["name"]:
        raise ToolUseError(f"{fwhere}.name", "a tool definition needs a name (a non-empty string)", BAD_TOOLS)
    ordered = {k: function[k] for k in _FUNCTION_KEYS if k in function}
    ordered.update((k, v) for k, v in function.items() if k not in ordered)
    return {"type": "function", "function": ordered, **rest}
