"""Selection: best by score within (programming language, natural language) strata, shares kept by
largest remainders, ties by content hash, the rest rejected as select.over_target."""

from __future__ import annotations

import polars as pl
import pytest

from curator.config import load_config
from curator.errors import CurateError
from curator.stage_configs import select_problem
from curator.stages import select
from curator.stages.base import StageContext


def frame(rows: list[tuple[str, list[str], str, float]]) -> pl.DataFrame:
    """rows of (content_hash, code_langs, lang, quality_score)."""
    n = len(rows)
    return pl.DataFrame(
        {
            "content_hash": [r[0] for r in rows],
            "code_langs": [r[1] for r in rows],
            "lang": [r[2] for r in rows],
            "quality_score": [r[3] for r in rows],
            "reject_reasons": [[] for _ in range(n)],
            "reject_details": [[] for _ in range(n)],
        },
        schema={"content_hash": pl.Utf8, "code_langs": pl.List(pl.Utf8), "lang": pl.Utf8, "quality_score": pl.Float64,
                "reject_reasons": pl.List(pl.Utf8), "reject_details": pl.List(pl.Utf8)},
    )


def run(df, target):
    ctx = StageContext(config=load_config(None, [f"select.target={target}"]))
    return select.run(df, ctx), ctx


def kept(out: pl.DataFrame) -> list[str]:
    return out.filter(pl.col("reject_reasons").list.len() == 0)["content_hash"].to_list()


def test_apportion_is_largest_remainder():
    assert select.apportion({"a": 6, "b": 3, "c": 1}, 5) == {"a": 3, "b": 2, "c": 0}
    assert select.apportion({"a": 5, "b": 5}, 3) == {"a": 2, "b": 1}  # tie on remainder and size: by name
    assert select.apportion({"a": 2, "b": 1}, 10) == {"a": 2, "b": 1}
    assert sum(select.apportion({"x": 7, "y": 11, "z": 13}, 17).values()) == 17


def test_under_target_keeps_everything():
    df = frame([("a", [], "en", 0.1), ("b", ["python"], "en", 0.9)])
    out, ctx = run(df, 2)
    assert out.equals(df)
    assert ctx.summaries["select"]["rejected"] == 0


def test_best_by_score_within_strata_and_mix_preserved():
    df = frame([
        ("p1", ["python"], "en", 0.9), ("p2", ["python"], "en", 0.5), ("p3", ["python", "sql"], "en", 0.7),
        ("p4", ["python"], "en", 0.2),
        ("n1", [], "en", 1.0), ("n2", [], "en", 0.95),
        ("d1", [], "de", 0.1), ("d2", [], "de", 0.3),
    ])
    out, ctx = run(df, 4)
    # python|en 4 rows -> 2 seats, none|en 2 -> 1, none|de 2 -> 1: the low-scoring German rows still get a seat
    assert kept(out) == ["p1", "p3", "n1", "d2"]
    rejected = out.filter(pl.col("reject_reasons").list.len() > 0)
    assert rejected["reject_reasons"].to_list() == [["select.over_target"]] * 4
    assert rejected.filter(pl.col("content_hash") == "p4")["reject_details"].item().to_list() == [
        "rank 4 of 4 in stratum python|en (keeps 2)"
    ]
    assert out["content_hash"].to_list() == df["content_hash"].to_list()  # same rows, same order
    assert ctx.summaries["select"]["strata"] == [
        {"stratum": "python|en", "available": 4, "kept": 2},
        {"stratum": "none|de", "available": 2, "kept": 1},
        {"stratum": "none|en", "available": 2, "kept": 1},
    ]


def test_ties_break_by_content_hash_whatever_the_input_order():
    rows = [(h, [], "en", 0.5) for h in ["c", "a", "d", "b"]]
    out, _ = run(frame(rows), 2)
    out_rev, _ = run(frame(rows[::-1]), 2)
    assert sorted(kept(out)) == sorted(kept(out_rev)) == ["a", "b"]


def test_missing_language_columns_fall_back_and_missing_score_is_an_error():
    df = frame([("a", [], "en", 0.4), ("b", [], "en", 0.6), ("c", [], "en", 0.5)]).drop("code_langs", "lang")
    out, ctx = run(df, 1)
    assert kept(out) == ["b"]
    assert ctx.summaries["select"]["strata"] == [{"stratum": "none|und", "available": 3, "kept": 1}]
    with pytest.raises(CurateError, match="select: column quality_score is missing"):
        run(df.drop("quality_score"), 1)


def test_missing_score_error_names_the_settings_behind_it():
    df = frame([("a", [], "en", 0.4), ("b", [], "en", 0.6), ("c", [], "en", 0.5)]).drop("quality_score")
    # load_config refuses this pair (tests/test_config.py); a config built in code can still hold it
    cfg = load_config(None, ["skip_stages=[quality]"])
    cfg = cfg.model_copy(update={"select": select.Config(target=1)})
    with pytest.raises(CurateError, match=r"^select: column quality_score is missing; select.target=1 ranks by it "
                                          r"and skip_stages leaves out quality"):
        select.run(df, StageContext(config=cfg))
    assert select_problem(cfg.skip_stages, cfg.select) == (
        "select.target=1 ranks examples by quality_score, which the skipped stage quality writes; remove quality "
        "from skip_stages, set select.target to null, or skip select too")
    for ok in ([], ["skip_stages=[quality]", "select.target=null"], ["skip_stages=[quality, select]"]):
        cfg = load_config(None, ok)
        assert select_problem(cfg.skip_stages, cfg.select) is None
