"""A record as the report shows it: chat turns of the normalised messages, never the raw line.

Rejected rows exist only as their raw line (rejects.jsonl). An Alpaca, ShareGPT or GPTeacher line is
converted here with the run's own reader settings (`input.format`, `input.format_by_file`,
`input.repairs`) and its turns normalised with the run's `normalize` settings, so the turns (and the
`messages[i]` a reject's detail names) are those the stages judged. Kept rows come from train/val.jsonl,
already normalised.
"""

from __future__ import annotations

import json
import unicodedata
from types import SimpleNamespace
from typing import Any


# Reasons given before normalize ran: such a row is shown as validate saw it (a whitespace-only turn stays so).
BEFORE_NORMALIZE = ("io.", "format.", "schema.", "structure.")


def as_chat(record: Any, source_file: str | None, config: dict, normalise: bool = True) -> Any:
    """`record` as a chat record `{"messages": [...]}`, with normalised contents when `normalise`; unchanged
    when it is not a dict or cannot be converted (its raw line is then shown)."""
    if not isinstance(record, dict):
        return record
    converted = record if "messages" in record else _converted(record, source_file, config)
    if converted is None or not isinstance(converted.get("messages"), list):
        return record
    converted = _canonical(converted)
    if not normalise:
        return converted
    return {**converted, "messages": [_normalised(m, config) for m in converted["messages"]]}


def _canonical(record: dict) -> dict:
    """Tool calls in the one form the split holds (ids, arguments as a JSON string), as validate writes
    them, so a removed copy differs from its kept copy in its words, not in how its calls were spelled."""
    from curator.schema import check_record, to_plain

    if not any(isinstance(m, dict) and m.get("tool_calls") for m in record["messages"]):
        return record
    checked, _ = check_record(record)
    return to_plain(checked) if checked is not None else record


def _converted(record: dict, source_file: str | None, config: dict) -> dict | None:
    from curator.io.formats import REPAIRS, FormatError, detect_format, to_chat_repaired
    from curator.stages.validate import format_of_file

    inp = config.get("input") or {}
    shape_cfg = SimpleNamespace(format=inp.get("format") or "auto", format_by_file=inp.get("format_by_file") or {})
    try:
        fmt = format_of_file(shape_cfg, source_file or "")
        shape = detect_format(record) if fmt == "auto" else fmt
        repairs = inp.get("repairs")
        converted, _ = to_chat_repaired(record, shape, repairs=REPAIRS if repairs is None else tuple(repairs))
    except (FormatError, ValueError, TypeError):
        return None
    return converted


def _normalised(message: Any, config: dict) -> Any:
    """One turn with the normalize stage's text rules applied to its content."""
    if not isinstance(message, dict) or not isinstance(message.get("content"), str):
        return message
    from curator.stages.normalize import Config, remove_hidden_controls, strip_trailing_whitespace

    try:
        cfg = Config.model_validate(config.get("normalize") or {})
    except ValueError:
        cfg = Config()
    text = message["content"].replace("\r\n", "\n").replace("\r", "\n")
    if cfg.remove_hidden_controls:
        text = remove_hidden_controls(text)
    if cfg.unicode_form:
        text = unicodedata.normalize(cfg.unicode_form, text)
    if cfg.strip_trailing_whitespace:
        text = strip_trailing_whitespace(text)
    return {**message, "content": text}


def turn_texts(record: Any) -> list[tuple[str, str]] | None:
    """[(role, full text)] of a chat record's turns; tool calls shown after the content; None when the
    record has no list of messages."""
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list) or not messages:
        return None
    out = []
    for msg in messages:
        if not isinstance(msg, dict):
            out.append(("?", repr(msg)))
            continue
        role = msg.get("role")
        content = msg.get("content")
        text = content if isinstance(content, str) else ("(null)" if content is None else json.dumps(content))
        calls = msg.get("tool_calls")
        if calls:
            text = (text + "\n\n" if text else "") + json.dumps(calls, ensure_ascii=False)
        role_text = role if isinstance(role, str) else ("(missing)" if role is None else json.dumps(role))
        out.append((role_text, text))
    return out
