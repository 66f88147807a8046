"""Exact dedup: the first occurrence of each normalised conversation is kept.

Reads `content_hash`, `row`, `ref`. Rejects later copies as `dup.exact` with the kept row's
ref in the detail, so a person can find the original.
"""

from __future__ import annotations

import polars as pl

from curator import columns as C
from curator.columns import with_reject
from curator.stages.base import StageContext
from curator.stage_configs import DedupExactConfig as Config  # noqa: F401  (re-exported: the stage's settings)

NAME = "dedup_exact"


def run(df: pl.DataFrame, ctx: StageContext) -> pl.DataFrame:
    if not ctx.config.dedup_exact.enabled:
        ctx.summaries[NAME] = {"enabled": False}  # the report says "disabled", not 0 duplicates found
        return df
    if df.height == 0:
        return df
    first_row = pl.col(C.ROW).min().over(C.CONTENT_HASH)
    first_ref = pl.col(C.REF).sort_by(C.ROW).first().over(C.CONTENT_HASH)
    df = df.with_columns(first_ref.alias("_first_ref"), (pl.col(C.ROW) != first_row).alias("_is_copy"))
    n_copies = int(df.get_column("_is_copy").sum())
    ctx.summaries[NAME] = {"exact_duplicates": n_copies}
    df = with_reject(df, pl.col("_is_copy"), "dup.exact", pl.lit("duplicate of ") + pl.col("_first_ref"))
    return df.drop("_first_ref", "_is_copy")
