"""Selection of the best examples up to the target size, stratified by language.

Reads: `quality_score` (quality), `content_hash`, `code_langs` (code_language; its first element,
or "none" for an example without code), `lang` (language; "und" when missing).
Writes no column; when more rows are alive than `target`, the rows not selected get reason
`select.over_target` (they are reported in rejects.jsonl, not lost).

How: every (programming language, natural language) stratum keeps its share of the target, by
the largest-remainder method (Hamilton apportionment), so the mix of languages the data came with
is kept rather than drifting toward whichever language scores highest; within a stratum the rows
with the highest `quality_score` are kept, ties broken by `content_hash`, so the choice is
deterministic and independent of input order. Stratified sampling to preserve a mixture is what
data-juicer's and NeMo Curator's blending/sampling steps do; here the sample is the top of each
stratum instead of a random draw, since the score is the point of the stage.
"""

from __future__ import annotations

from curator import columns as C

import polars as pl

from curator.columns import CONTENT_HASH, with_reject
from curator.errors import CurateError
from curator.stages.base import StageContext
from curator.stage_configs import SelectConfig as Config  # noqa: F401  (re-exported: the stage's settings)

NAME = "select"
REASON = "select.over_target"


def stratum_expr(columns: list[str]) -> pl.Expr:
    """'<programming language>|<natural language>' of each row."""
    code = (
        pl.col(C.CODE_LANGS).list.first().fill_null("none") if C.CODE_LANGS in columns else pl.lit("none")
    )
    lang = pl.col("lang").fill_null("und") if "lang" in columns else pl.lit("und")
    return pl.concat_str([code, lang], separator="|")


def apportion(sizes: dict[str, int], target: int) -> dict[str, int]:
    """Seats per stratum by the largest-remainder method: floor of each exact share, then one more
    to the strata with the largest remainders (ties: larger stratum, then name)."""
    total = sum(sizes.values())
    if total <= target:
        return dict(sizes)
    exact = {k: target * n / total for k, n in sizes.items()}
    seats = {k: int(v) for k, v in exact.items()}
    left = target - sum(seats.values())
    order = sorted(sizes, key=lambda k: (-(exact[k] - seats[k]), -sizes[k], k))
    for k in order[:left]:
        seats[k] += 1
    return seats


def run(df: pl.DataFrame, ctx: StageContext) -> pl.DataFrame:
    cfg: Config = ctx.config.select
    n = df.height
    summary: dict = {"target": cfg.target, "available": n, "kept": n, "rejected": 0, "strata": []}
    ctx.summaries[NAME] = summary
    if cfg.target is None or n <= cfg.target:
        return df
    for col in (C.QUALITY_SCORE, CONTENT_HASH):
        if col not in df.columns:
            why = "run the quality stage before select"
            if col == C.QUALITY_SCORE and "quality" in ctx.config.skip_stages:
                why = (f"select.target={cfg.target} ranks by it and skip_stages leaves out quality, which writes it; "
                       "remove quality from skip_stages or set select.target to null")
            raise CurateError(f"select: column {col} is missing; {why}")
    keyed = df.with_columns(stratum_expr(df.columns).alias("__stratum"))
    sizes = dict(keyed.group_by("__stratum").len().iter_rows())
    seats = apportion(sizes, cfg.target)
    quota = pl.col("__stratum").replace_strict(seats, return_dtype=pl.Int64)
    # rank inside the stratum: best score first, then content hash (deterministic, order-free)
    ranked = (
        keyed.with_row_index("__i")
        .sort(["__stratum", C.QUALITY_SCORE, CONTENT_HASH], descending=[False, True, False], nulls_last=True)
        .with_columns(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over("__stratum").alias("__rank"))
        .sort("__i")
        .drop("__i")
    )
    over = pl.col("__rank") > quota
    detail = pl.format("rank {} of {} in stratum {} (keeps {})", pl.col("__rank"), pl.len().over("__stratum"), pl.col("__stratum"), quota)
    out = with_reject(ranked, over, REASON, detail)
    kept = sum(min(seats[k], sizes[k]) for k in sizes)
    summary.update(
        kept=kept,
        rejected=n - kept,
        strata=[
            {"stratum": k, "available": sizes[k], "kept": seats[k]}
            for k in sorted(sizes, key=lambda k: (-sizes[k], k))
        ],
    )
    return out.drop("__stratum", "__rank")
