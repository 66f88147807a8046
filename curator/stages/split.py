"""Split: train or val, by a seeded hash of each row's split key.

Reads `split_key` (set by near-dup clustering so whole clusters land on one side) or, when it
is null, `content_hash`. Writes `split`. A row's side depends only on its own key and the seed,
so adding data never moves an existing example to the other side; the val share is therefore
close to, not exactly, `val_fraction`.
"""

from __future__ import annotations

import polars as pl
import xxhash

from curator import columns as C
from curator.stages.base import StageContext
from curator.stage_configs import SplitConfig as Config  # noqa: F401  (re-exported: the stage's settings)

NAME = "split"
BUCKETS = 1_000_000


def bucket(key: str, seed: int) -> int:
    """A key's place in [0, BUCKETS), fixed by the key and the seed alone."""
    return xxhash.xxh3_64_intdigest(key.encode("utf-8"), seed=seed) % BUCKETS


def run(df: pl.DataFrame, ctx: StageContext) -> pl.DataFrame:
    cfg: Config = ctx.config.split
    seed = ctx.config.seed
    if C.SPLIT_KEY in df.columns:
        keys = df.select(pl.coalesce(C.SPLIT_KEY, C.CONTENT_HASH)).to_series().to_list()
    else:
        keys = df.get_column(C.CONTENT_HASH).to_list()
    cut = round(cfg.val_fraction * BUCKETS)
    sides = ["val" if bucket(k, seed) < cut else "train" for k in keys]
    df = df.with_columns(pl.Series(C.SPLIT, sides, dtype=pl.Utf8))
    n_val = sides.count("val")
    ctx.summaries[NAME] = {"train": len(sides) - n_val, "val": n_val, "val_fraction": cfg.val_fraction}
    return df
