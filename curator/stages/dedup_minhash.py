"""Near-duplicate clusters with MinHash LSH (issue 3).

Placeholder: passes rows through until the stage is built.
"""

from __future__ import annotations

import polars as pl
from pydantic import BaseModel, ConfigDict

from curator.stages.base import StageContext

NAME = "dedup_minhash"


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


def run(df: pl.DataFrame, ctx: StageContext) -> pl.DataFrame:
    return df
