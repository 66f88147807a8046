"""What changed between two runs (`curate report OUT --compare PREVIOUS_OUT`), so a data team can
review a dataset change like a code change: counts, gates, reject reasons, language
distributions, quality and token figures, config and versions, and which kept records were added or
removed, by content hash (the xxh3-128 of the normalised conversation, `content_hash`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from curator import columns as C
from curator.report.build import KEPT, _r, report_from_run
from curator.report.load import Run, load_run

RECORD_SAMPLES = 20


def _delta(prev: float | None, cur: float | None) -> float | None:
    if prev is None or cur is None:
        return None
    if isinstance(prev, int) and isinstance(cur, int):
        return cur - prev
    return _r(cur - prev)


def _by_key(prev: dict[str, float], cur: dict[str, float]) -> list[dict]:
    keys = sorted(set(prev) | set(cur), key=lambda k: (-abs(cur.get(k, 0) - prev.get(k, 0)), k))
    return [{"key": k, "previous": prev.get(k, 0), "current": cur.get(k, 0),
             "delta": cur.get(k, 0) - prev.get(k, 0)} for k in keys]


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def _kept_hashes(run: Run) -> pl.DataFrame | None:
    if not run.has(C.CONTENT_HASH):
        return None
    cols = ["row", "ref", C.CONTENT_HASH] + (["split"] if run.has("split") else [])
    df = run.ann.filter(KEPT).select(cols)
    if "split" not in df.columns:
        df = df.with_columns(pl.lit(None, pl.Utf8).alias("split"))
    return df.unique(C.CONTENT_HASH, keep="first", maintain_order=True)


def _records(cur: Run, prev: Run) -> dict:
    a, b = _kept_hashes(cur), _kept_hashes(prev)
    if a is None or b is None:
        return {"measured": False, "added": 0, "removed": 0, "unchanged": 0, "moved_split": 0,
                "added_samples": [], "removed_samples": []}
    added = a.join(b.select(C.CONTENT_HASH), on=C.CONTENT_HASH, how="anti").sort("row")
    removed = b.join(a.select(C.CONTENT_HASH), on=C.CONTENT_HASH, how="anti").sort("row")
    both = a.join(b.select(C.CONTENT_HASH, pl.col("split").alias("prev_split")), on=C.CONTENT_HASH, how="inner")
    moved = both.filter(pl.col("split") != pl.col("prev_split")).height
    return {
        "measured": True,
        "added": added.height,
        "removed": removed.height,
        "unchanged": both.height,
        "moved_split": moved,
        "added_samples": added.head(RECORD_SAMPLES).select("ref", C.CONTENT_HASH).to_dicts(),
        "removed_samples": removed.head(RECORD_SAMPLES).select("ref", C.CONTENT_HASH).to_dicts(),
    }


def _dist(rep: dict, kind: str) -> dict[str, int]:
    section = rep["languages"][kind]
    return {x["key"]: x["count"] for x in section.get("items", [])} if section["measured"] else {}


def compare_runs(cur: Run, cur_report: dict, previous: Path) -> dict:
    """The `compare` section of the current report against run folder `previous`."""
    prev = load_run(previous)
    prev_report = report_from_run(prev, texts=False)  # figures only: the earlier run's texts are not shown
    counts = [
        {"name": k, "previous": prev_report["counts"][k], "current": cur_report["counts"][k],
         "delta": cur_report["counts"][k] - prev_report["counts"][k]}
        for k in ("read", "kept", "rejected", "train", "val")
    ]
    pg = {g["name"]: g for g in prev_report["gates"]["items"]}
    cg = {g["name"]: g for g in cur_report["gates"]["items"]}
    gates = []
    for name in list(cg) + [n for n in pg if n not in cg]:
        p, c = pg.get(name), cg.get(name)
        gates.append({
            "name": name,
            "previous_passed": p["passed"] if p else None,
            "current_passed": c["passed"] if c else None,
            "previous_value": p["value"] if p else None,
            "current_value": c["value"] if c else None,
            "delta": _delta(p["value"] if p else None, c["value"] if c else None),
        })
    figures = []
    for section, key in (("quality", "kept_high_quality_rate"), ("quality", "kept_mean_score")):
        pv, cv = prev_report[section].get(key), cur_report[section].get(key)
        figures.append({"name": f"{section}.{key}", "previous": pv, "current": cv, "delta": _delta(pv, cv)})
    for key in ("total", "trained", "p50", "p99", "max"):
        pv = (prev_report["tokens"].get("kept") or {}).get(key)
        cv = (cur_report["tokens"].get("kept") or {}).get(key)
        figures.append({"name": f"tokens.kept.{key}", "previous": pv, "current": cv, "delta": _delta(pv, cv)})
    pconf, cconf = _flatten(prev_report["config"]), _flatten(cur_report["config"])
    config_changes = [{"key": k, "previous": pconf.get(k), "current": cconf.get(k)}
                      for k in sorted(set(pconf) | set(cconf)) if pconf.get(k) != cconf.get(k)]
    pver, cver = prev_report["versions"], cur_report["versions"]
    version_changes = [{"key": k, "previous": pver.get(k), "current": cver.get(k)}
                       for k in sorted(set(pver) | set(cver)) if pver.get(k) != cver.get(k)]
    return {
        "previous": str(previous),
        "counts": counts,
        "gates": gates,
        "figures": figures,
        "reasons": _by_key({r["code"]: r["count"] for r in prev_report["rejects"]["items"]},
                           {r["code"]: r["count"] for r in cur_report["rejects"]["items"]}),
        "natural_languages": _by_key(_dist(prev_report, "natural"), _dist(cur_report, "natural")),
        "code_languages": _by_key(_dist(prev_report, "code"), _dist(cur_report, "code")),
        "records": _records(cur, prev),
        "config_changes": config_changes,
        "version_changes": version_changes,
    }
