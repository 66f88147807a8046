"""The split stage: a row's side is fixed by its key and the run's seed alone."""

from __future__ import annotations

import polars as pl

from curator import columns as C
from curator.config import load_config
from curator.stages import split
from curator.stages.base import StageContext

KEYS = [f"k{i}" for i in range(12)]


def sides(keys: list[str], *overrides: str, split_keys: list[str | None] | None = None) -> list[str]:
    df = pl.DataFrame(
        {C.CONTENT_HASH: keys, C.SPLIT_KEY: split_keys or [None] * len(keys)},
        schema={C.CONTENT_HASH: pl.Utf8, C.SPLIT_KEY: pl.Utf8},
    )
    ctx = StageContext(config=load_config(None, ["split.val_fraction=0.5", *overrides]))
    return split.run(df, ctx).get_column(C.SPLIT).to_list()


def test_each_seed_gives_its_own_fixed_assignment():
    t, v = "train", "val"
    assert sides(KEYS, "seed=0") == [v, t, t, t, t, t, v, v, t, v, t, v]
    assert sides(KEYS, "seed=1") == [t, v, v, t, t, v, t, t, t, v, t, v]


def test_the_same_seed_gives_the_same_assignment():
    assert sides(KEYS, "seed=7") == sides(KEYS, "seed=7")


def test_a_split_key_decides_the_side_over_the_content_hash():
    # rows of one near-duplicate cluster share a split key, so they land together whatever their hashes
    by_key = sides(["k0", "k1", "k2"], "seed=0", split_keys=["k1", "k1", None])
    assert by_key == ["train", "train", "train"]
    assert sides(["k0", "k1", "k2"], "seed=0") == ["val", "train", "train"]
