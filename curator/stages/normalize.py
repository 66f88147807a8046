"""Normalize: one spelling for the same text, and the content hash that names a conversation.

Reads `messages`; rewrites each turn's `content` to Unicode NFC, LF line ends (CRLF and lone CR),
and no trailing whitespace at the end of a line or of the turn (leading indentation is kept:
it is meaning in code). Writes `content_hash`: xxh3-128 (hex) of the normalised conversation
(roles, contents, weights, tool calls), the identity exact dedup, the split and run-to-run
comparisons use.
"""

from __future__ import annotations

import json

import polars as pl
import xxhash
from pydantic import BaseModel, ConfigDict, Field

from curator import columns as C
from curator.stages.base import StageContext

NAME = "normalize"


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unicode_form: str | None = Field("NFC", description="NFC | NFKC | NFD | NFKD | null (leave as is)")
    strip_trailing_whitespace: bool = Field(True, description="strip spaces/tabs at line ends and the end of a turn")


def normalize_content(expr: pl.Expr, cfg: Config) -> pl.Expr:
    expr = expr.str.replace_all("\r\n", "\n", literal=True).str.replace_all("\r", "\n", literal=True)
    if cfg.unicode_form:
        expr = expr.str.normalize(cfg.unicode_form)
    if cfg.strip_trailing_whitespace:
        expr = expr.str.replace_all(r"[ \t]+\n", "\n").str.strip_chars_end()
    return expr


def conversation_hash(messages: list[dict] | None) -> str | None:
    """xxh3-128 hex of a conversation, stable across runs and platforms."""
    if messages is None:
        return None
    key = json.dumps(
        [[m["role"], m["content"], m.get("weight"), m.get("tool_calls"), m.get("tool_call_id")] for m in messages],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return xxhash.xxh3_128_hexdigest(key.encode("utf-8"))


def run(df: pl.DataFrame, ctx: StageContext) -> pl.DataFrame:
    cfg: Config = ctx.config.normalize
    if df.height == 0:
        return df.with_columns(pl.lit(None, dtype=pl.Utf8).alias(C.CONTENT_HASH))
    normalized = df.with_columns(
        pl.col(C.MESSAGES).list.eval(
            pl.element().struct.with_fields(normalize_content(pl.field("content"), cfg).alias("content"))
        )
    )
    hashes = [conversation_hash(m) for m in normalized.get_column(C.MESSAGES).to_list()]
    return normalized.with_columns(pl.Series(C.CONTENT_HASH, hashes, dtype=pl.Utf8))
