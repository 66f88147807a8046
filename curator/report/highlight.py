"""Reject samples for people: the record as turns, with the offending field marked.

Where the field comes from, first match wins:
1. a JSON path at the start of the reason's detail, as `curate validate` prints it
   (`messages[3].role: Input should be ...`), or a top-level key (`meta: ...`, `messages: ...`);
2. a turn the detail names (`turn 3`, 0-based like `messages[3]`);
3. the turn the reason is about by its code family: `quality.*` and `tokens.no_trainable` judge the
   answer (last assistant turn); `dup.prompt_conflict` is about the prompt (first user turn);
   `tokens.over_budget` points at the longest turn; whole-record reasons (`dup.exact`, `dup.near`)
   mark nothing, their detail names the kept copy;
4. `io.*` and `format.*` reasons (bad UTF-8, bad JSON, a shape that cannot be converted) and lines that
   are not a chat record show the raw line itself, highlighted.

Within the flagged turn, the span that made the reason is marked where the code says how to find it
(the refusal phrase, a redacted secret), and a long turn is cut around it rather than at its start.
"""

from __future__ import annotations

import re
from typing import Any

from curator.report.conversation import turn_texts
from curator.report.diff import VISIBLE, fit
from curator.signals import REFUSAL_PATTERN

EXCERPT_CHARS = 360  # per turn: keeps the report of a 50k run under 5 MB
RAW_CHARS = 600

_PATH_RE = re.compile(r"^\s*(messages)(?:\[(\d+)\])?(?:\.(\w+))?")
_TOP_KEY_RE = re.compile(r"^\s*([A-Za-z_]\w*)\s*:")
_TURN_RE = re.compile(r"\bturn[s]?\s*#?\s*(\d+)\b")


# Control characters (a planted NUL, an escape) would make report.md a "binary" file and report.html
# invalid; they are shown as their Unicode Control Pictures (U+2400 + code), e.g. U+0000 as "␀".
_VISIBLE = VISIBLE
_SPAN_PATTERNS = {"quality.refusal": re.compile(REFUSAL_PATTERN)}
_REDACTED = re.compile(r"\[REDACTED:[a-z_]+\]")


def _clip(text: str, limit: int, center: int | None = None) -> str:
    text = text.translate(_VISIBLE)
    if len(text) <= limit:
        return text
    if center is None or center < limit:
        return text[: limit - 1] + "…"
    start = max(0, min(center - limit // 2, len(text) - limit))
    return "…" + text[start + 1 : start + limit - 1] + "…"


def locate(code: str, detail: str, record: Any) -> dict | None:
    """{"path": "messages[2].content", "turn": 2 or None, "field": "content" or None} or None."""
    messages = record.get("messages") if isinstance(record, dict) else None
    n = len(messages) if isinstance(messages, list) else 0
    m = _PATH_RE.match(detail or "")
    if m:
        turn = int(m.group(2)) if m.group(2) is not None else None
        fld = m.group(3)
        if turn is not None and turn >= n:
            turn = None
        path = "messages" + (f"[{turn}]" if turn is not None else "") + (f".{fld}" if fld and turn is not None else "")
        return {"path": path, "turn": turn, "field": fld if turn is not None else None}
    m = _TOP_KEY_RE.match(detail or "")
    if m and isinstance(record, dict) and m.group(1) in record and m.group(1) != "messages":
        return {"path": m.group(1), "turn": None, "field": None}
    if n == 0:
        return None
    m = _TURN_RE.search(detail or "")
    if m and int(m.group(1)) < n:
        turn = int(m.group(1))
        return {"path": f"messages[{turn}].content", "turn": turn, "field": "content"}
    roles = [msg.get("role") if isinstance(msg, dict) else None for msg in messages]
    turn = None
    if code.startswith(("quality.", "tokens.no_trainable", "secrets.")):
        idx = [i for i, r in enumerate(roles) if r == "assistant"]
        turn = idx[-1] if idx else None
    elif code == "dup.prompt_conflict":
        idx = [i for i, r in enumerate(roles) if r == "user"]
        turn = idx[0] if idx else None
    elif code.startswith("tokens."):
        lengths = [len(str(msg.get("content") or "")) if isinstance(msg, dict) else 0 for msg in messages]
        turn = max(range(n), key=lambda i: lengths[i])
    if turn is None:
        return None
    return {"path": f"messages[{turn}].content", "turn": turn, "field": "content"}


def _known_spans(code: str, text: str) -> list[tuple[int, int]]:
    """The part of a flagged turn that made the reason, where the code says how to find it: the refusal
    phrase of `quality.refusal`, the redacted secret of `secrets.*`."""
    pattern = _SPAN_PATTERNS.get(code) or (_REDACTED if code.startswith("secrets.") else None)
    return [m.span() for m in pattern.finditer(text)] if pattern is not None else []


def excerpt(code: str, detail: str, record: Any, raw: str) -> tuple[dict | None, list[dict]]:
    """(highlight, turns): each turn {"role", "text", "highlight", "field"}, with "marks" (character
    spans of "text") where the offending span is known; unparseable lines come back whole."""
    where = locate(code, detail, record)
    texts = turn_texts(record)
    if code.startswith(("io.", "format.")) or texts is None:
        # Not a chat record (bad JSON, wrong shape): the raw line itself is the offending field.
        return ({"path": where["path"] if where else "(line)", "turn": None, "field": None},
                [{"role": None, "text": _clip(raw, RAW_CHARS), "highlight": True, "field": None}])
    turns = []
    for i, (role, text) in enumerate(texts):
        hit = where is not None and where["turn"] == i
        fld = where["field"] if hit else None
        spans = _known_spans(code, text) if hit and fld in ("content", None) else []
        shown, marks = fit(text, spans, EXCERPT_CHARS)
        t = {"role": role, "text": shown, "highlight": hit, "field": fld}
        if marks:
            t["marks"] = marks
        turns.append(t)
    if where is not None and where["turn"] is None:
        # A top-level field (meta, or messages as a whole): show it highlighted after the turns.
        value = record.get(where["path"]) if where["path"] != "messages" else None
        if where["path"] != "messages":
            turns.append(
                {"role": where["path"], "text": _clip(repr(value), EXCERPT_CHARS), "highlight": True, "field": None}
            )
        else:
            for t in turns:
                t["highlight"] = True
    return where, turns
