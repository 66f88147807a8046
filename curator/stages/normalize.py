"""(being written by the lead)"""

from __future__ import annotations

import polars as pl
from pydantic import BaseModel, ConfigDict

from curator.stages.base import StageContext

NAME = "normalize"


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


def run(df: pl.DataFrame, ctx: StageContext) -> pl.DataFrame:
    return df
