"""JSON as the pipeline can write it back: strict numbers, no lone surrogates.

Python's `json` accepts `NaN` and `Infinity`, turns `1e999` into `inf` and `1e-400` into `0.0`, and
refuses (with a bare ValueError) to convert an integer of more than 4,300 digits; it decodes an escape
like "\\ud800" into a string that cannot be encoded as UTF-8. Input with any of these is refused at
the door (`io.bad_json`, `io.lone_surrogate`), with the field named, so that every kept line stays
valid JSON with the values it was written with, and one odd line cannot crash a run.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any, Iterator

__all__ = ["DECODER", "DepthError", "NumberError", "check_depth", "decode", "lone_surrogate", "number_field", "surrogate_error"]


class NumberError(ValueError):
    """A number JSON allows but the pipeline cannot keep as written (out of range, NaN, too many digits)."""


def _shown(text: str) -> str:
    """A number's text for a message: a long one is cut, with its length."""
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text):,} characters)"


def _no_constant(name: str) -> Any:
    raise NumberError(f"{name} is not a JSON number (RFC 8259 section 6)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NumberError(f"number {_shown(text)} is out of range (it would be written back as {value}, which is not JSON)")
    # An underflow reads as 0.0: the value would change silently. The mantissa tells a true zero apart.
    if value == 0.0 and re.search(r"[1-9]", text.lower().partition("e")[0]):
        raise NumberError(f"number {_shown(text)} is out of range (too small: it would be written back as 0.0)")
    return value


def _integer(text: str) -> int:
    # Python refuses to convert (and to write back) integers longer than its digit limit.
    limit = sys.get_int_max_str_digits()
    digits = len(text) - text.startswith("-")
    if limit and digits > limit:
        raise NumberError(f"integer of {digits:,} digits is out of range (more than {limit:,} digits cannot be written back)")
    return int(text)


DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite, parse_int=_integer)


class _Bad:
    """Stands for a refused number, so a second, lenient pass can find where it is."""


def _lenient(check):
    def parse(text: str) -> Any:
        try:
            return check(text)
        except NumberError:
            return _Bad()

    return parse


_MARKING = json.JSONDecoder(parse_constant=_lenient(_no_constant), parse_float=_lenient(_finite), parse_int=_lenient(_integer))


def _walk(value: Any) -> Iterator[tuple[str, str | None, Any]]:
    """(field path, object key or None, value) of `value` and everything in it, in document order."""
    stack: list[tuple[str, str | None, Any]] = [("", None, value)]
    while stack:
        path, key, item = stack.pop()
        yield path, key, item
        if isinstance(item, dict):
            children = []
            for k, sub in item.items():
                name = k.encode("utf-8", "backslashreplace").decode("utf-8")  # printable, even when bad
                children.append((f"{path}.{name}" if path else name, k, sub))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", None, sub) for i, sub in reversed(list(enumerate(item))))


def number_field(text: str, pos: int = 0) -> tuple[str, int | None]:
    """After DECODER refused a number decoding `text` from `pos`: that number's field path, and where
    the value ends (None when the lenient pass cannot parse it either)."""
    try:
        value, end = _MARKING.raw_decode(text, pos)
    except (ValueError, RecursionError):
        return "(the record)", None
    path = next((p for p, _, item in _walk(value) if isinstance(item, _Bad)), "")
    return path or "(the record)", end


# Arrays and objects inside each other: a chat record needs a handful. The reader's own stack is
# shallow, so deeper values decode here and then overflow the stack of a later stage's json.loads or
# walk (a 6 KB line of 976 nested objects stopped a run), so they are refused at the door.
MAX_DEPTH = 100


class DepthError(ValueError):
    """A value nested deeper than MAX_DEPTH."""


def nesting_depth(value: Any) -> int:
    """How many arrays and objects deep `value` goes (iteratively: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def check_depth(text: str, value: Any) -> None:
    """Raise DepthError when `value` (decoded from `text`) is nested deeper than MAX_DEPTH."""
    if text.count("[") + text.count("{") > MAX_DEPTH and nesting_depth(value) > MAX_DEPTH:
        raise DepthError(f"JSON nested deeper than {MAX_DEPTH} levels")


def decode(text: str) -> Any:
    """`text` as JSON, strictly; a refused number raises NumberError whose message starts with its field,
    a value nested too deep DepthError."""
    try:
        value = DECODER.decode(text)
    except NumberError as exc:
        field, _ = number_field(text)
        raise NumberError(f"{field}: {exc}") from None
    check_depth(text, value)
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(text: str, value: Any) -> str | None:
    """The field path of the first string in `value` holding a lone UTF-16 surrogate, or None.

    JSON allows escapes like "\\ud800" that decode to no character; such a string cannot be written
    as UTF-8, so the line is rejected (io.lone_surrogate) rather than crashing the run. `text` is the
    line's JSON: only lines with a surrogate escape in it are walked.
    """
    if "\\u" not in text or not _SURROGATE_ESCAPE.search(text):
        return None
    for path, key, item in _walk(value):
        if key is not None and _SURROGATE.search(key):
            return path
        if isinstance(item, str) and _SURROGATE.search(item):
            return path or "(the record)"
    return None


def surrogate_error(field: str) -> tuple[str, str]:
    return ("io.lone_surrogate", f"{field}: a string holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), which is not text")
