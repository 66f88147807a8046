"""Validate: parse every input line and check it against the chat record schema.

This is the stage that creates the frame. Reads: the readers' `RawLine`s. Writes: `row`,
`source_file`, `source_line`, `ref`, `source_format`, `raw`, `raw_b64`, `messages`, `meta`,
`tools`, `warnings`, and `reject_reasons`/`reject_details` with `io.*`, `format.*`, `schema.*` and
`structure.*` codes (see curator/schema.py). Lines in Alpaca, ShareGPT or GPTeacher shape are
converted to chat records first (curator/io/formats.py).
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any, Iterable

import polars as pl

from curator import columns as C
from curator.io.readers import RawLine
from curator.tool_use import dumps
from curator.validation import check_line
from curator.stages.base import StageContext
from curator.stage_configs import ValidateConfig as Config  # noqa: F401  (re-exported: the stage's settings)

NAME = "validate"

FRAME_SCHEMA = {
    C.ROW: pl.Int64,
    C.SOURCE_FILE: pl.Utf8,
    C.SOURCE_LINE: pl.Int64,
    C.REF: pl.Utf8,
    C.SOURCE_FORMAT: pl.Utf8,
    C.RAW: pl.Utf8,
    C.RAW_B64: pl.Utf8,
    C.MESSAGES: pl.List(C.MESSAGE),
    C.META: pl.Utf8,
    C.TOOLS: pl.Utf8,
    C.WARNINGS: pl.List(pl.Utf8),
    C.REJECT_REASONS: pl.List(pl.Utf8),
    C.REJECT_DETAILS: pl.List(pl.Utf8),
}


def format_of_file(cfg: Any, source: str) -> str:
    """The record shape for input file `source`: its first matching input.format_by_file glob, else input.format
    (`cfg` is the run's InputConfig)."""
    path = PurePosixPath(source)
    return next((fmt for glob, fmt in cfg.format_by_file.items() if path.match(glob)), cfg.format)


def build_frame(lines: Iterable[RawLine], ctx: StageContext, first_row: int = 0) -> pl.DataFrame:
    """Validate every line and return the run's frame, one row per line, rejects included."""
    cfg = ctx.config
    formats: dict[str, str] = {}  # per input file, from input.format / input.format_by_file
    extra = cfg.validate_.extra_fields
    nested_cols = (C.MESSAGES, C.WARNINGS, C.REJECT_REASONS, C.REJECT_DETAILS)
    rows: dict[str, list] = {name: [] for name in FRAME_SCHEMA if name not in nested_cols}
    notes: dict[str, list] = {C.ROW: [], "warning": [], "code": [], "detail": []}  # one entry per problem
    # Messages are collected flat (one entry per turn) and nested once by polars: building a
    # List(Struct) column from Python dicts row by row is an order of magnitude slower.
    turns: dict[str, list] = {C.ROW: [], "role": [], "content": [], "weight": [], "tool_calls": [], "tool_call_id": []}
    for i, line in enumerate(lines, start=first_row):
        fmt = formats.get(line.source_file) or formats.setdefault(line.source_file, format_of_file(cfg.input, line.source_file))
        record, problems, source_format = check_line(line, fmt, extra, repairs=tuple(cfg.input.repairs))
        rows[C.ROW].append(i)
        rows[C.SOURCE_FILE].append(line.source_file)
        rows[C.SOURCE_LINE].append(line.source_line)
        rows[C.REF].append(f"{line.source_file}:{line.source_line}")
        rows[C.SOURCE_FORMAT].append(source_format)
        rows[C.RAW].append(line.text)
        rows[C.RAW_B64].append(line.raw_b64)
        if record is not None:
            for m in record["messages"]:
                calls = m.get("tool_calls")
                turns[C.ROW].append(i)
                turns["role"].append(m["role"])
                turns["content"].append(m["content"])
                turns["weight"].append(m.get("weight"))
                turns["tool_calls"].append(dumps(calls) if calls else None)
                turns["tool_call_id"].append(m.get("tool_call_id"))
            meta = record["meta"]
            rows[C.META].append(json.dumps(meta, ensure_ascii=False, sort_keys=True, separators=(",", ":")) if meta is not None else None)
            rows[C.TOOLS].append(dumps(record["tools"]) if record["tools"] else None)
        else:
            rows[C.META].append(None)
            rows[C.TOOLS].append(None)
        for p in problems:
            notes[C.ROW].append(i)
            notes["warning"].append(p.warning)
            notes["code"].append(p.code)
            notes["detail"].append(f"{p.field}: {p.message}" if p.field else p.message)
    base = pl.DataFrame(rows, schema={k: v for k, v in FRAME_SCHEMA.items() if k not in nested_cols})
    notes_df = pl.DataFrame(notes, schema={C.ROW: pl.Int64, "warning": pl.Boolean, "code": pl.Utf8, "detail": pl.Utf8})
    by_row = notes_df.group_by(C.ROW, maintain_order=True).agg(
        (pl.col("code") + ": " + pl.col("detail")).filter(pl.col("warning")).alias(C.WARNINGS),
        pl.col("code").filter(~pl.col("warning")).alias(C.REJECT_REASONS),
        pl.col("detail").filter(~pl.col("warning")).alias(C.REJECT_DETAILS),
    )
    fields = [f.name for f in C.MESSAGE.fields]
    flat = pl.DataFrame(turns, schema={C.ROW: pl.Int64, **{f.name: f.dtype for f in C.MESSAGE.fields}})
    nested = flat.group_by(C.ROW, maintain_order=True).agg(pl.struct(fields).alias(C.MESSAGES))
    frame = base.join(nested, on=C.ROW, how="left", maintain_order="left").join(
        by_row, on=C.ROW, how="left", maintain_order="left"
    )
    empty = pl.lit([], dtype=pl.List(pl.Utf8))
    return frame.with_columns(pl.col(c).fill_null(empty) for c in (C.WARNINGS, C.REJECT_REASONS, C.REJECT_DETAILS)).select(
        list(FRAME_SCHEMA)
    )
