"""Validate: parse every input line and check it against the chat record schema.

This is the stage that creates the frame. Reads: the readers' `RawLine`s. Writes: `row`,
`source_file`, `source_line`, `ref`, `source_format`, `raw`, `raw_b64`, `messages`, `meta`,
`warnings`, and `reject_reasons`/`reject_details` with `io.*`, `format.*`, `schema.*` and
`structure.*` codes (see curator/schema.py). Lines in Alpaca, ShareGPT or GPTeacher shape are
converted to chat records first (curator/io/formats.py).
"""

from __future__ import annotations

import json
from typing import Iterable

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curator import columns as C
from curator.io.readers import RawLine
from curator.validation import check_line
from curator.stages.base import StageContext

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
    C.WARNINGS: pl.List(pl.Utf8),
    C.REJECT_REASONS: pl.List(pl.Utf8),
    C.REJECT_DETAILS: pl.List(pl.Utf8),
}


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    extra_fields: str = Field(
        "warn",
        description="unknown top-level or message fields: warn (kept under meta._extra) | reject (schema.extra_field)",
        pattern="^(warn|reject)$",
    )


def _message_row(msg: dict) -> dict:
    calls = msg.get("tool_calls")
    return {
        "role": msg["role"],
        "content": msg["content"],
        "weight": msg.get("weight"),
        "tool_calls": json.dumps(calls, ensure_ascii=False, sort_keys=True) if calls else None,
        "tool_call_id": msg.get("tool_call_id"),
    }


def build_frame(lines: Iterable[RawLine], ctx: StageContext, first_row: int = 0) -> pl.DataFrame:
    """Validate every line and return the run's frame, one row per line, rejects included."""
    cfg = ctx.config
    fmt = cfg.input.format
    extra = cfg.validate_.extra_fields
    rows: dict[str, list] = {name: [] for name in FRAME_SCHEMA}
    for i, line in enumerate(lines, start=first_row):
        record, problems, source_format = check_line(line, fmt, extra)
        errors = [p for p in problems if not p.warning]
        rows[C.ROW].append(i)
        rows[C.SOURCE_FILE].append(line.source_file)
        rows[C.SOURCE_LINE].append(line.source_line)
        rows[C.REF].append(f"{line.source_file}:{line.source_line}")
        rows[C.SOURCE_FORMAT].append(source_format)
        rows[C.RAW].append(line.text)
        rows[C.RAW_B64].append(line.raw_b64)
        if record is not None:
            rows[C.MESSAGES].append([_message_row(m) for m in record["messages"]])
            meta = record["meta"]
            rows[C.META].append(json.dumps(meta, ensure_ascii=False, sort_keys=True) if meta is not None else None)
        else:
            rows[C.MESSAGES].append(None)
            rows[C.META].append(None)
        rows[C.WARNINGS].append([f"{p.code}: {(p.field + ': ') if p.field else ''}{p.message}" for p in problems if p.warning])
        rows[C.REJECT_REASONS].append([p.code for p in errors])
        rows[C.REJECT_DETAILS].append([f"{p.field}: {p.message}" if p.field else p.message for p in errors])
    return pl.DataFrame(rows, schema=FRAME_SCHEMA)


def run(df: pl.DataFrame, ctx: StageContext) -> pl.DataFrame:
    """Validation happens while the frame is built (`build_frame`); nothing more to do here."""
    return df
