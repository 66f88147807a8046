"""Column names and dtypes shared between stages.

The pipeline keeps one Polars frame with one row per input line. Stages only
see the rows that are still alive (no reject reason yet) and return them with
new columns; rows leave the frame once, at the end (DESIGN.md, principle 2).
"""

from __future__ import annotations

import polars as pl

# --- provenance, written by the readers -------------------------------------------------
ROW = "row"  # UInt32/Int64, global input order (0-based), the frame is always sorted by it
SOURCE_FILE = "source_file"  # Utf8, path of the input file as shown to the user
SOURCE_LINE = "source_line"  # Int64, 1-based line (or array index + 1 for .json arrays)
RAW = "raw"  # Utf8, the original line (invalid UTF-8 decoded with replacement characters)
RAW_B64 = "raw_b64"  # Utf8, base64 of the original bytes when they were not valid UTF-8, else null
SOURCE_FORMAT = "source_format"  # Utf8: chat | alpaca | sharegpt | gpteacher

# --- the record, written by validate/normalize ----------------------------------------
MESSAGE = pl.Struct(
    {
        "role": pl.Utf8,  # system | user | assistant | tool
        "content": pl.Utf8,  # text, content parts already joined
        "weight": pl.Int8,  # 0/1 on assistant turns, null when not given
        # JSON text (json.dumps, ensure_ascii=False, default separators) of the assistant's calls in
        # their one form, [{"id", "type": "function", "function": {"name", "arguments": str}}], or null
        # (curator/tool_use.py)
        "tool_calls": pl.Utf8,
        "tool_call_id": pl.Utf8,  # on tool turns: the id of the call answered, or null
    }
)
MESSAGES = "messages"  # List(MESSAGE), null on rows that failed the schema
META = "meta"  # Utf8, JSON text of the record's `meta` object (or null)
# Utf8, JSON text (as tool_calls) of the record's tool definitions in TRL's shape,
# [{"type": "function", "function": {"name", "description", "parameters"}}], or null when it has none
TOOLS = "tools"
CONTENT_HASH = "content_hash"  # Utf8, 32 hex chars (xxh3-128) of the normalised conversation
REF = "ref"  # Utf8, "source_file:source_line", how people and rejects point at a row

# --- the verdict ---------------------------------------------------------------------------
REJECT_REASONS = "reject_reasons"  # List(Utf8) of stable reason codes, empty = alive
REJECT_DETAILS = "reject_details"  # List(Utf8), one human-readable detail per reason
WARNINGS = "warnings"  # List(Utf8) of "code: message" notes that do not reject the row (io.bom, schema.extra_field)

# --- the split -------------------------------------------------------------------------------
SPLIT_KEY = "split_key"  # Utf8, rows with the same key land on the same side (a cluster id)
SPLIT = "split"  # Utf8: train | val


def alive() -> pl.Expr:
    """True for rows no stage has rejected yet."""
    return pl.col(REJECT_REASONS).list.len() == 0


def with_reject(
    df: pl.DataFrame,
    mask: pl.Expr,
    code: str | pl.Expr,
    detail: str | pl.Expr | None = None,
) -> pl.DataFrame:
    """Append reason `code` (and its `detail`) to every row where `mask` is true.

    `code` and `detail` may be expressions, so one call can give each row its own
    reason; a null code on a masked row adds nothing.
    """
    code_expr = pl.lit(code) if isinstance(code, str) else code
    if detail is None:
        detail_expr = pl.lit("")
    elif isinstance(detail, str):
        detail_expr = pl.lit(detail)
    else:
        detail_expr = detail.fill_null("")
    hit = mask.fill_null(False) & code_expr.is_not_null()
    return df.with_columns(
        pl.when(hit)
        .then(pl.col(REJECT_REASONS).list.concat(pl.concat_list(code_expr.cast(pl.Utf8))))
        .otherwise(pl.col(REJECT_REASONS))
        .alias(REJECT_REASONS),
        pl.when(hit)
        .then(pl.col(REJECT_DETAILS).list.concat(pl.concat_list(detail_expr.cast(pl.Utf8))))
        .otherwise(pl.col(REJECT_DETAILS))
        .alias(REJECT_DETAILS),
    )
