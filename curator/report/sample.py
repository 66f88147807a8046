"""A stratified sample of the kept set for human review (`curate sample OUT --n 200`), as CSV and HTML
with empty rating columns (the human evaluation the model-selection guide calls for).

Strata are natural language x quality-score band, plus one stratum of borderline examples whose
score lies within `BORDER` of the high-quality threshold, where a person's verdict says most about
whether the threshold is right. Allocation: the borderline stratum gets up to `BORDER_SHARE` of n;
the rest is shared by the other strata in proportion to their size (largest deficit first), with every
stratum getting at least one example while n allows, so rare languages are seen at all; what the other
strata cannot fill goes back to the borderline stratum, so a sheet has n rows whenever the kept set
has. Within a stratum, examples are taken in the order of a seeded xxh3 hash of their content hash:
deterministic, and independent of input order.

The sheet (CSV and HTML, the same COLUMNS) puts the conversation first, then the score and the quality
rules that fired, which is what put a row in its stratum, then compact rating columns.

Reads: annotations.parquet (`ref`, `split`, `content_hash`, `lang`, `code_langs`, `quality_score`,
`quality_flags` where present), manifest.json (the threshold), train.jsonl/val.jsonl (the text).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import polars as pl
import xxhash

from curator import columns as C
from curator.errors import CurateError
from curator.report.build import KEPT, _quality_threshold
from curator.report.highlight import _clip
from curator.report.load import load_run

RATING_COLUMNS = ("rating_1_to_5", "correct_yes_no", "helpful_yes_no", "safe_yes_no", "reviewer", "notes")
# The sheet's columns, in the CSV and the HTML alike: the conversation first, then what put it in its
# stratum (score and the quality rules that fired), the ratings to fill, and the ids that find it again.
COLUMNS = ("conversation", "stratum", "quality_score", "quality_flags", *RATING_COLUMNS, "lang", "code_langs",
           "split", "ref", "sample_id")
# Short headers of the HTML sheet, so the rating columns stay narrow (the CSV keeps the full names)
HEADERS = {"rating_1_to_5": "1–5", "correct_yes_no": "correct", "helpful_yes_no": "helpful", "safe_yes_no": "safe",
           "quality_score": "score", "quality_flags": "flags", "code_langs": "code", "sample_id": "#"}
FORMATS = ("csv", "html")
BORDER = 0.05  # score within this of the threshold is "borderline"
BORDER_SHARE = 0.2
DEFAULT_THRESHOLD = 0.7  # only when the run recorded none
TURN_CHARS = 4000


def _band(score: float | None, threshold: float) -> str:
    if score is None:
        return "unscored"
    if round(abs(score - threshold), 9) <= BORDER:  # round: 0.75 - 0.7 is 0.05000000000000004
        return "borderline"
    if score < threshold:
        return f"low <{threshold:g}"
    return "high >=0.9" if score >= 0.9 else f"mid {threshold:g}-0.9"


def allocate(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Split n over strata in proportion to size, at least one each while n allows.

    One each first (largest strata first when n is smaller than the number of strata), then each
    remaining unit goes to the stratum furthest below its proportional target n * size / total.
    """
    total = sum(sizes.values())
    if total <= n:
        return dict(sizes)
    order = sorted(sizes, key=lambda k: (-sizes[k], k))
    alloc = {k: 0 for k in sizes}
    for k in order[:n]:
        alloc[k] = 1
    for _ in range(n - sum(alloc.values())):
        open_ = [k for k in order if alloc[k] < sizes[k]]
        k = max(open_, key=lambda k: n * sizes[k] / total - alloc[k])  # ties: the first in `order`
        alloc[k] += 1
    return alloc


def draw_sample(out_dir: str | Path, n: int = 200, seed: int = 0) -> list[dict]:
    """The sampled rows, each with its stratum, text, and empty rating columns (COLUMNS, in order)."""
    return draw(out_dir, n, seed)[0]


def draw(out_dir: str | Path, n: int = 200, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(the sampled rows, the strata: {"stratum", "sampled", "kept"} for each, by name)."""
    if n < 1:
        raise CurateError(f"--n must be at least 1, got {n}")
    run = load_run(out_dir)
    kept = run.ann.filter(KEPT)
    if kept.height == 0:
        raise CurateError(f"{out_dir}: the run kept no example; nothing to sample")
    threshold = _quality_threshold(run)
    if threshold is None:  # 0.0 is a threshold the run recorded, not a missing one
        threshold = DEFAULT_THRESHOLD
    frame = _strata_frame(run, kept, threshold, seed)
    sizes = dict(frame.group_by("stratum").len().iter_rows())
    alloc = _allocation(sizes, n)
    picked = pl.concat([frame.filter(pl.col("stratum") == s).head(k) for s, k in sorted(alloc.items()) if k])
    picked = picked.sort("stratum", "_order")
    texts = run.kept_records(set(picked["ref"].to_list()))
    rows = [_sheet_row(i, r, texts.get(r["ref"], {})) for i, r in enumerate(picked.iter_rows(named=True), 1)]
    strata = [{"stratum": s, "sampled": alloc.get(s, 0), "kept": k} for s, k in sorted(sizes.items())]
    return rows, strata


def _strata_frame(run, kept: pl.DataFrame, threshold: float, seed: int) -> pl.DataFrame:
    """Kept rows with their language, score, flags, stratum and seeded order."""
    lang = kept["lang"].fill_null("und") if run.has("lang") else pl.Series([None] * kept.height, dtype=pl.Utf8)
    score = kept[C.QUALITY_SCORE] if run.has(C.QUALITY_SCORE) else pl.Series([None] * kept.height, dtype=pl.Float64)
    key = kept[C.CONTENT_HASH] if run.has(C.CONTENT_HASH) else kept["ref"]
    frame = kept.select("row", "ref", *[c for c in ("split", C.CODE_LANGS, C.QUALITY_FLAGS) if run.has(c)]).with_columns(
        lang.alias("_lang"), score.alias("_score"),
        pl.Series("_order", [xxhash.xxh3_64_intdigest(f"{seed}:{k}".encode()) for k in key.to_list()], dtype=pl.UInt64),
    )
    return frame.with_columns(
        pl.Series("band", [_band(s, threshold) for s in frame["_score"].to_list()], dtype=pl.Utf8)
    ).with_columns(
        pl.when(pl.col("band") == "borderline").then(pl.lit("borderline"))
        .otherwise(pl.concat_str(pl.col("_lang").fill_null("lang not measured"), pl.lit(" / "), pl.col("band")))
        .alias("stratum")
    ).sort("_order", "row")


def _allocation(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Rows per stratum: the borderline one up to BORDER_SHARE of n, the others in proportion (`allocate`)."""
    sizes = dict(sizes)
    n_border = sizes.pop("borderline", 0)
    border = min(n_border, max(1, round(n * BORDER_SHARE)))
    alloc = allocate(sizes, n - border)
    # what the other strata cannot fill goes back to the borderline one (and the borderline
    # stratum's unused share went to the others above), so n rows come back whenever n exist
    border += min(n_border - border, n - border - sum(alloc.values()))
    if border:
        alloc["borderline"] = border
    return alloc


def _flags_text(flags: list | None) -> str:
    """The quality rules that fired on a row, `rule=value (action)`, as they lowered or flagged its score."""
    return "; ".join(f"{f['rule']}={f['value']:g} ({f['action']})" for f in flags or [] if f)


def _sheet_row(i: int, r: dict, record: dict) -> dict:
    msgs = record.get("messages") or []
    conv = "\n\n".join(f"[{m.get('role')}] {_clip(str(m.get('content') or ''), TURN_CHARS)}" for m in msgs)
    row = {
        "conversation": conv,
        "stratum": r["stratum"],
        "quality_score": "" if r["_score"] is None else round(r["_score"], 4),
        "quality_flags": _flags_text(r.get(C.QUALITY_FLAGS)),
        **{c: "" for c in RATING_COLUMNS},
        "lang": r["_lang"] or "",
        "code_langs": ", ".join(r.get(C.CODE_LANGS) or []),
        "split": r.get("split") or "",
        "ref": r["ref"],
        "sample_id": i,
    }
    return {c: row[c] for c in COLUMNS}


# A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets ("CSV injection",
# OWASP): a leading apostrophe makes it text, as the spreadsheets themselves do.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _inert_cell(value: Any) -> Any:
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _inert_cell(v) for k, v in row.items()} for row in rows)
    return buf.getvalue()


def to_html(rows: list[dict], source: str, strata: list[dict] | None = None) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("curator.report", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    if strata is None:
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["stratum"]] = counts.get(r["stratum"], 0) + 1
        strata = [{"stratum": s, "sampled": k, "kept": None} for s, k in sorted(counts.items())]
    return env.get_template("sample.html.j2").render(
        rows=rows, columns=COLUMNS, headers=HEADERS, ratings=RATING_COLUMNS, strata=strata, source=source)


def write_sample(out_dir: str | Path, n: int = 200, seed: int = 0, dest: str | Path | None = None,
                 formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Write review_sample.csv and/or review_sample.html into `dest` (default: OUT); return their paths."""
    from curator.report import write_text_atomic

    rows, strata = draw(out_dir, n=n, seed=seed)
    dest = Path(dest) if dest is not None else Path(out_dir)
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    if "csv" in formats:
        paths.append(dest / "review_sample.csv")
        write_text_atomic(paths[-1], to_csv(rows))
    if "html" in formats:
        paths.append(dest / "review_sample.html")
        write_text_atomic(paths[-1], to_html(rows, str(out_dir), strata))
    return paths
