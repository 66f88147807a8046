"""JSON as the pipeline can write it back: strict numbers, no lone surrogates.

Python's `json` accepts `NaN` and `Infinity` and turns `1e999` into `inf`, none of which it can
write back as JSON, and it decodes an escape like "\\ud800" into a string that cannot be encoded as
UTF-8. Input with either is refused at the door (`io.bad_json`, `io.lone_surrogate`), with the
field named, so that every kept line stays valid JSON on the way out and one odd line cannot
crash a run.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["DECODER", "lone_surrogate", "surrogate_error"]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (RFC 8259 section 6)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range (it would be written back as {value}, which is not JSON)")
    return value


DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)
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
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return path or "(the record)"
        elif isinstance(item, dict):
            for key, sub in reversed(list(item.items())):
                name = key.encode("utf-8", "backslashreplace").decode("utf-8")  # printable, even when bad
                where = f"{path}.{name}" if path else name
                if _SURROGATE.search(key):
                    return where
                stack.append((where, sub))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", sub) for i, sub in reversed(list(enumerate(item))))
    return None


def surrogate_error(field: str) -> tuple[str, str]:
    return ("io.lone_surrogate", f"{field}: a string holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), which is not text")
