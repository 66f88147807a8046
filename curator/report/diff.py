"""Where two conversations differ, as character spans, and excerpts that keep those spans in view.

A near duplicate differs from its kept copy in a few words; a card that shows the first 300 characters
of each hides exactly that part. `diff_conversations` marks the differing words of each turn (difflib on
word tokens), and `fit` cuts a long text around its marks instead of at its start.
"""

from __future__ import annotations

import difflib
import re

_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")
MAX_DIFF_TOKENS = 6000  # difflib is quadratic at worst; beyond this the tail is compared as one block
CONTEXT = 80  # characters of unchanged text shown on each side of a differing span
SAME_TURN_CHARS = 160  # an identical turn is shown this long: enough to recognise it
DIFF_TURN_CHARS = 700  # a differing turn: its differing spans and their context, up to this long
MAX_TURNS = 12

Span = tuple[int, int]

# Control characters would make report.md binary and report.html invalid; shown as Unicode Control
# Pictures (U+2400 + code). One character for one, so offsets into the text stay valid.
VISIBLE = {c: 0x2400 + c for c in range(32) if c not in (9, 10)} | {0x7F: 0x2421}


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def diff_spans(a: str, b: str) -> tuple[list[Span], list[Span]]:
    """Character spans of `a` and of `b` that are not in their longest common word subsequence.

    A deletion in one text is an empty span at its place in the other, so an excerpt can still centre on it.
    """
    ta, tb = _tokens(a), _tokens(b)
    tail_a, tail_b = ta[MAX_DIFF_TOKENS:], tb[MAX_DIFF_TOKENS:]
    ta, tb = ta[:MAX_DIFF_TOKENS], tb[:MAX_DIFF_TOKENS]
    oa, ob = _offsets(ta), _offsets(tb)
    spans_a: list[Span] = []
    spans_b: list[Span] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ta, tb, autojunk=False).get_opcodes():
        if tag != "equal":
            spans_a.append((oa[i1], oa[i2]))
            spans_b.append((ob[j1], ob[j2]))
    if tail_a != tail_b:
        spans_a.append((oa[-1], len(a)))
        spans_b.append((ob[-1], len(b)))
    return spans_a, spans_b


def _offsets(tokens: list[str]) -> list[int]:
    """Start offset of each token, and the end of the last one."""
    out = [0]
    for t in tokens:
        out.append(out[-1] + len(t))
    return out


def fit(text: str, marks: list[Span], limit: int, context: int = CONTEXT) -> tuple[str, list[list[int]]]:
    """`text` cut to about `limit` characters around its marks ("…" where text was left out), and the
    non-empty marks as [start, end) offsets into the result. Without marks, the start of the text."""
    text = text.translate(VISIBLE)
    shown = [[s, e] for s, e in marks if e > s]
    if len(text) <= limit:
        return text, shown
    if not marks:
        return text[: limit - 1] + "…", []
    out, new, last_end = "", [], 0
    for ws, we in _windows(marks, len(text), context):
        if ws > last_end:
            out += "…"
        room = limit - len(out)
        if room <= 0:
            break
        we = min(we, ws + room)
        shift = len(out) - ws
        out += text[ws:we]
        new += [[max(s, ws) + shift, min(e, we) + shift] for s, e in marks if e > s and s < we and e > ws]
        last_end = we
    if last_end < len(text):
        out += "…"
    return out, new


def _windows(marks: list[Span], n: int, context: int) -> list[Span]:
    """The marks widened by `context` on each side, overlapping ones merged, in order."""
    merged: list[list[int]] = []
    for s, e in sorted(marks):
        ws, we = max(0, s - context), min(n, e + context)
        if merged and ws <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], we)
        else:
            merged.append([ws, we])
    return [(s, e) for s, e in merged]


def turn(role: str | None, text: str, marks: list[Span], limit: int) -> dict:
    """A Turn of report.json: the excerpt, and its marks when there are any."""
    shown, spans = fit(text, marks, limit)
    out = {"role": role, "text": shown, "highlight": bool(spans), "field": None}
    if spans:
        out["marks"] = spans
    return out


def diff_conversations(kept: list[tuple[str, str]], other: list[tuple[str, str]]) -> tuple[list[dict], list[dict]]:
    """Both conversations as Turns, turn i against turn i, differing words marked on each side.

    Identical turns are shown short; after MAX_TURNS turns the rest is one line saying how many differ.
    """
    out_k: list[dict] = []
    out_o: list[dict] = []
    n = max(len(kept), len(other))
    differing_left = 0
    for i in range(n):
        k = kept[i] if i < len(kept) else None
        o = other[i] if i < len(other) else None
        same = k == o
        if i >= MAX_TURNS:
            differing_left += not same
            continue
        if k is not None and o is not None:
            sk, so = diff_spans(k[1], o[1]) if not same else ([], [])
            if not same and k[0] != o[0] and not sk and not so:  # only the role differs
                sk, so = [(0, len(k[1]))], [(0, len(o[1]))]
        else:  # a turn only one side has is different as a whole
            sk = [(0, len(k[1]))] if k is not None else []
            so = [(0, len(o[1]))] if o is not None else []
        limit = SAME_TURN_CHARS if same else DIFF_TURN_CHARS
        if k is not None:
            out_k.append(turn(k[0], k[1], sk, limit))
        if o is not None:
            out_o.append(turn(o[0], o[1], so, limit))
    if n > MAX_TURNS:
        note = {"role": None, "text": f"… {n - MAX_TURNS} more turns, {differing_left} of them different",
                "highlight": False, "field": None}
        out_k.append(dict(note))
        out_o.append(dict(note))
    return out_k, out_o
