"""Normalize: one spelling for the same text, and the content hash that names a conversation.

Reads `messages`; rewrites each turn's `content` to Unicode NFC, LF line ends (CRLF and lone CR),
and no trailing whitespace at the end of a line or of the turn (leading indentation is kept:
it is meaning in code). Writes `content_hash`: xxh3-128 (hex) of the normalised conversation
(roles, contents, weights, tool calls), the identity exact dedup, the split and run-to-run
comparisons use.
"""

from __future__ import annotations

import unicodedata
from typing import Literal

import polars as pl
import xxhash
from pydantic import BaseModel, ConfigDict, Field

from curator import columns as C
from curator.stages.base import StageContext

NAME = "normalize"


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unicode_form: Literal["NFC", "NFKC", "NFD", "NFKD"] | None = Field(
        "NFC", description="NFC | NFKC | NFD | NFKD (upper case) | null (leave as is)"
    )
    strip_trailing_whitespace: bool = Field(True, description="strip spaces/tabs at line ends and the end of a turn")


def _unicode_form(values: pl.Series, form: str) -> pl.Series:
    # CPython's unicodedata has a quick check for already-normalised text, which nearly all
    # text is: about 30x faster than polars' str.normalize here.
    normalize = unicodedata.normalize
    return pl.Series(values.name, [v if v is None else normalize(form, v) for v in values.to_list()], dtype=pl.Utf8)


def normalize_content(expr: pl.Expr, cfg: Config) -> pl.Expr:
    """Line ends and trailing whitespace, as a polars expression (Unicode form is done apart)."""
    expr = expr.str.replace_all("\r\n", "\n", literal=True).str.replace_all("\r", "\n", literal=True)
    if cfg.strip_trailing_whitespace:
        expr = expr.str.replace_all(r"[ \t]+\n", "\n").str.strip_chars_end()
    return expr


def normalize_messages(df: pl.DataFrame, cfg: Config) -> pl.DataFrame:
    """`df` with every turn's content normalised; rows, order and other columns unchanged."""
    fields = [f.name for f in C.MESSAGE.fields]
    flat = df.select(C.ROW, C.MESSAGES).explode(C.MESSAGES).unnest(C.MESSAGES)
    if cfg.unicode_form:
        flat = flat.with_columns(_unicode_form(flat.get_column("content"), cfg.unicode_form))
    flat = flat.with_columns(normalize_content(pl.col("content"), cfg))
    nested = flat.group_by(C.ROW, maintain_order=True).agg(pl.struct(fields).alias(C.MESSAGES))
    return df.drop(C.MESSAGES).join(nested, on=C.ROW, how="left", maintain_order="left").select(df.columns)


def canonical_text() -> pl.Expr:
    """One string per conversation that changes whenever a role, content, weight or tool call does.

    Fields are joined with ASCII unit/record separators, which validation guarantees never
    appear in content (control characters are rejected).
    """
    field = pl.element().struct.field
    turn = pl.concat_str(
        [
            field("role"),
            field("content"),
            field("weight").cast(pl.Utf8).fill_null(""),
            field("tool_calls").fill_null(""),
            field("tool_call_id").fill_null(""),
        ],
        separator="\x1f",
    )
    return pl.col(C.MESSAGES).list.eval(turn).list.join("\x1e")


def hash_texts(texts: list[str]) -> list[str]:
    """xxh3-128 hex of each text: stable across runs, platforms and polars versions."""
    digest = xxhash.xxh3_128_hexdigest
    return [digest(t.encode("utf-8")) for t in texts]


def run(df: pl.DataFrame, ctx: StageContext) -> pl.DataFrame:
    cfg: Config = ctx.config.normalize
    normalized = normalize_messages(df, cfg)
    texts = normalized.select(canonical_text().fill_null("")).to_series().to_list()
    return normalized.with_columns(pl.Series(C.CONTENT_HASH, hash_texts(texts), dtype=pl.Utf8))
