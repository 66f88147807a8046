"""report.json as a dict, from the files of a run folder (see `curator.report.load`).

Every figure is either copied from manifest.json (counts, funnel, gates, summaries, config) or counted
from the columns of annotations.parquet; a section whose columns a run did not write is marked
`"measured": false` and listed under `not_measured`, so a report of a partial pipeline is still honest.
Sections: gates, funnel, reject reasons with samples, quality, languages, tokens,
duplicates, split, cost, config and versions.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

import polars as pl

from curator import columns as C
from curator.report.advice import build_advice
from curator.code_langs import TEXT, is_programming, language_counts, language_shares
from curator.report.conversation import BEFORE_NORMALIZE, as_chat, turn_texts
from curator.report.diff import diff_conversations, fit
from curator.report.highlight import _clip, excerpt
from curator.report.load import Run, load_run
from curator.stages.registry import read_summary

SCHEMA_VERSION = 1
SAMPLES_PER_REASON = 3
TOP_CLUSTERS = 10
MEMBERS_PER_CLUSTER = 6
QUALITY_BINS = 20  # 0.05 wide: fine enough to see the mass around the high-quality threshold
TOKEN_BINS = 20
EXAMPLES_PER_LANGUAGE = 3
EXAMPLE_CHARS = 160
GATE_DIGITS = 6  # gate figures: enough that a value just under its threshold does not print as equal
# Gate families the report always lists: a run that did not evaluate one says so instead of leaving it out.
GATE_FAMILIES = {
    "quality": "high-quality rate (default minimum 60%)",
    "language": "programming-language diversity (default minimum 5)",
    "size": "kept examples (default 10,000 minimum, 50,000 target)",
    "tokens": "token budget",
}
_GATE_FAMILY_PREFIXES = {"quality": ("quality",), "language": ("language", "code", "diversity"),
                         "size": ("size",), "tokens": ("tokens", "token")}


def _r(x: float | None, nd: int = 4) -> float | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(float(x), nd) + 0.0  # + 0.0: never -0.0


def _share(a: int | float, b: int | float) -> float:
    return _r(a / b) if b else 0.0


def _first_number(d: Any, keys: tuple[str, ...]) -> float | None:
    if not isinstance(d, dict):
        return None
    for key in keys:
        v = d.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return v
    return None


KEPT = pl.col(C.REJECT_REASONS).list.len() == 0


def _columns(run: Run, *names: str) -> pl.DataFrame:
    """The annotations narrowed to those of `names` the run has, and the verdict: what a section
    filters, so that a filter copies these columns, not every column of every row."""
    return run.ann.select([c for c in dict.fromkeys((*names, C.REJECT_REASONS)) if run.has(c)])


# --- sections ------------------------------------------------------------------------------

def _counts(run: Run) -> dict:
    ann = run.ann
    kept = _columns(run, "split").filter(KEPT)
    figures = {
        "read": ann.height,
        "kept": kept.height,
        "rejected": ann.height - kept.height,
        "train": kept.filter(pl.col("split") == "train").height if run.has("split") else 0,
        "val": kept.filter(pl.col("split") == "val").height if run.has("split") else 0,
    }
    # The manifest's counts are the pipeline's own; they must agree with the columns it wrote.
    manifest_counts = run.manifest.get("counts") or {}
    mismatches = {k: [manifest_counts[k], v] for k, v in figures.items()
                  if k in manifest_counts and manifest_counts[k] != v}
    figures["consistent_with_manifest"] = not mismatches
    return figures


def _gates(run: Run) -> dict:
    out = []
    for g in run.manifest.get("gates") or []:
        value, threshold = g.get("value"), g.get("threshold")
        margin = None
        if isinstance(value, (int, float)) and isinstance(threshold, (int, float)):
            # Signed distance to the threshold: positive by how much it passed, negative by how much it missed.
            margin = _r(abs(value - threshold) * (1 if g.get("passed") else -1), GATE_DIGITS)
        out.append({
            "name": str(g.get("name")),
            "passed": bool(g.get("passed")),
            "value": _r(value, GATE_DIGITS) if isinstance(value, (int, float)) else None,
            "threshold": _r(threshold, GATE_DIGITS) if isinstance(threshold, (int, float)) else None,
            "margin": margin,
            "message": str(g.get("message") or ""),
        })
    names = [g["name"].lower() for g in out]
    missing = [
        {"family": fam, "what": what}
        for fam, what in GATE_FAMILIES.items()
        if not any(n.startswith(_GATE_FAMILY_PREFIXES[fam]) for n in names)
    ]
    return {
        "all_passed": all(g["passed"] for g in out),
        "n_failed": sum(not g["passed"] for g in out),
        "items": out,
        "not_measured": missing,
    }


def _funnel(run: Run, counts: dict) -> list[dict]:
    read = counts["read"]
    steps = [{"step": "read", "count": read, "removed": None, "share_of_read": 1.0 if read else 0.0}]
    prev = read
    for item in run.manifest.get("funnel") or []:
        if item.get("stage") == "read":  # the pipeline's own first entry; "read" is already the first step
            continue
        alive = int(item.get("alive_after", 0))
        steps.append({"step": str(item.get("stage")), "count": alive, "removed": prev - alive,
                      "share_of_read": _share(alive, read)})
        prev = alive
    steps.append({"step": "kept", "count": counts["kept"], "removed": prev - counts["kept"],
                  "share_of_read": _share(counts["kept"], read)})
    for split in ("train", "val"):
        steps.append({"step": split, "count": counts[split], "removed": None,
                      "share_of_read": _share(counts[split], read)})
    return steps


def _reasons(run: Run, counts: dict) -> dict:
    ann = run.ann
    rejected = ann.select("row", "ref", C.REJECT_REASONS,
                          pl.col(C.REJECT_DETAILS) if run.has(C.REJECT_DETAILS) else
                          pl.lit(None, pl.List(pl.Utf8)).alias(C.REJECT_DETAILS),
                          *[(pl.col(c) if run.has(c) else pl.lit(None, t)).alias(c)
                            for c, t in ((C.NEAR_DUP_OF, pl.Utf8), (C.NEAR_DUP_JACCARD, pl.Float64))]).filter(~KEPT)
    long = (
        rejected.with_columns(pl.int_ranges(pl.col(C.REJECT_REASONS).list.len()).alias("i"))
        .explode(C.REJECT_REASONS, "i")
        .with_columns(pl.col(C.REJECT_DETAILS).list.get(pl.col("i"), null_on_oob=True).alias("detail"))
        .rename({"reject_reasons": "code", "near_dup_jaccard": "jaccard"})
        .unique(["row", "code"], keep="first", maintain_order=True)
    )
    first = rejected.select(pl.col(C.REJECT_REASONS).list.first().alias("code")).group_by("code").len("first")
    per_code = (
        long.group_by("code").len("count").join(first, on="code", how="left")
        .with_columns(pl.col("first").fill_null(0))
        .sort(["count", "code"], descending=[True, False])
    )
    # A few real rows per reason, the earliest in input order.
    picks = long.sort("row").group_by("code", maintain_order=True).head(SAMPLES_PER_REASON)
    originals = _originals(run, picks)
    records = _chat_rows(run, set(picks["ref"].to_list()) | set(originals.values()))
    samples: dict[str, list] = {}
    for p in picks.iter_rows(named=True):
        rec = records.get(p["ref"])
        detail = p["detail"] or ""
        if rec is None:
            where, turns = None, []
        else:
            where, turns = excerpt(p["code"], detail, rec["record"], rec["raw"])
        sample = {
            "ref": p["ref"],
            "detail": _clip(detail, 400),
            "highlight": where["path"] if where else None,
            "turns": turns,
        }
        if p["ref"] in originals:
            sample.update(_duplicate_sample(rec, originals[p["ref"]], records, p["jaccard"]))
        samples.setdefault(p["code"], []).append(sample)
    items = [
        {
            "code": r["code"],
            "stage": r["code"].split(".", 1)[0],
            "count": r["count"],
            "first_reason": r["first"],
            "share_of_read": _share(r["count"], counts["read"]),
            "samples": samples.get(r["code"], []),
        }
        for r in per_code.iter_rows(named=True)
    ]
    return {"rows_rejected": counts["rejected"], "items": items}


# --- records as chat turns ------------------------------------------------------------------------

_DUP_OF = re.compile(r"duplicate of (.+?)(?: \(jaccard [^)]*\))?$")


def _chat_rows(run: Run, refs: set[str]) -> dict[str, dict]:
    """{ref: {"record": chat record with normalised turns, "raw": line}} of kept and rejected rows."""
    config = run.manifest.get("config") or {}
    out = {ref: {"record": rec, "raw": ""} for ref, rec in run.kept_records(refs).items()}
    for ref, rec in run.rejected_records(refs - set(out)).items():
        normalise = not any(code.startswith(BEFORE_NORMALIZE) for code in rec["reasons"])
        out[ref] = {"record": as_chat(rec["record"], rec[C.SOURCE_FILE], config, normalise), "raw": rec["raw"]}
    return out


def _originals(run: Run, picks: pl.DataFrame) -> dict[str, str]:
    """{ref of a dup.exact / dup.near sample: ref of the record it duplicates}: the near_dup_of column,
    else the ref the reason's detail names."""
    out = {}
    for p in picks.filter(pl.col("code").is_in(["dup.exact", "dup.near"])).iter_rows(named=True):
        m = _DUP_OF.search(p["detail"] or "")
        of = (p[C.NEAR_DUP_OF] if p["code"] == "dup.near" else None) or (m.group(1) if m else None)
        if of:
            out[p["ref"]] = of
    return out


def _duplicate_sample(rec: dict | None, of: str, records: dict, jaccard: float | None) -> dict:
    """The duplicated record beside a duplicate sample: its ref and turns, the differing words marked
    on both sides (the sample's own turns are replaced by the marked ones)."""
    mine = turn_texts(rec["record"]) if rec else None
    theirs = turn_texts((records.get(of) or {}).get("record"))
    if mine is None or theirs is None:
        return {"duplicate_of": {"ref": of, "jaccard": _r(jaccard), "turns": []}}
    kept_turns, my_turns = diff_conversations(theirs, mine)
    return {"turns": my_turns, "duplicate_of": {"ref": of, "jaccard": _r(jaccard), "turns": kept_turns}}


def _warnings(run: Run) -> dict:
    """Rows per warning code (the repairs made, unknown fields kept, markers removed): what changed without
    rejecting anything."""
    if not run.has("warnings"):
        return {"rows_with_warnings": 0, "items": []}
    notes = (
        run.ann.select("row", KEPT.alias("_kept"), pl.col("warnings"))
        .explode("warnings")
        .drop_nulls("warnings")
        .with_columns(pl.col("warnings").str.extract(r"^([^:]+)").alias("code"))
        .unique(["row", "code"])
    )
    per_code = notes.group_by("code").agg(pl.len().alias("count"), pl.col("_kept").sum().alias("kept"))
    items = [{"code": r["code"], "count": int(r["count"]), "kept": int(r["kept"])}
             for r in per_code.sort(["count", "code"], descending=[True, False]).iter_rows(named=True)]
    return {"rows_with_warnings": int(notes.get_column("row").n_unique()), "items": items}


def _summary(run: Run, stage: str) -> Any:
    """The stage's summary in the run's manifest, typed (curator/stage_summaries.py), or None."""
    return read_summary(run.manifest, stage)


def _quality_threshold(run: Run) -> float | None:
    summary = _summary(run, "quality")
    if summary is not None and summary.high_quality_threshold is not None:  # 0.0 is a threshold too
        return summary.high_quality_threshold
    conf = (run.manifest.get("config") or {}).get("quality") or {}
    return _first_number(conf, ("high_quality_threshold",))


def _histogram(values: pl.Series, edges: list[float]) -> list[int]:
    """Counts per [edges[i], edges[i+1]); the last bin also holds values equal to its upper edge.

    The bin position is rounded to 9 places before the floor, as quality scores are (rules.score_expr):
    a value on an edge belongs to the bin the edge opens, also when floating point puts it an ulp
    below (0.6999999999999999, an unrounded product of rule weights in an older run folder; 0.35 / 0.05
    is 6.999999999999999 in true division).
    """
    if values.len() == 0:
        return [0] * (len(edges) - 1)
    n = len(edges) - 1
    lo, width = edges[0], edges[1] - edges[0]
    idx = ((values.cast(pl.Float64) - lo) / width).round(9).floor().clip(0, n - 1).cast(pl.Int64)
    vc = idx.value_counts()
    got = dict(zip(vc[idx.name].to_list(), vc["count"].to_list()))
    return [int(got.get(i, 0)) for i in range(n)]


def _quality(run: Run) -> dict:
    if not run.has(C.QUALITY_SCORE):
        return {"measured": False}
    ann = _columns(run, "row", C.QUALITY_SCORE, C.HIGH_QUALITY, C.QUALITY_FLAGS).with_columns(KEPT.alias("_kept"))
    scored = ann.filter(pl.col(C.QUALITY_SCORE).is_not_null())
    kept = scored.filter(pl.col("_kept"))
    edges = [_r(i / QUALITY_BINS) for i in range(QUALITY_BINS + 1)]
    hq_rate = None
    if run.has(C.HIGH_QUALITY):
        kept_all = ann.filter(pl.col("_kept"))
        # no kept example: the rate is undefined (n/a), not 0%
        hq_rate = _r(kept_all[C.HIGH_QUALITY].fill_null(False).sum() / kept_all.height) if kept_all.height else None
    # Rows each rule fired on, counted from `quality_flags`; the pipeline's own per-rule figures
    # (summaries.quality.rules, which also list rules that never fired) take precedence.
    counted: dict[str, dict] = {}
    if run.has(C.QUALITY_FLAGS) and scored.height:
        flags = (
            scored.select("row", "_kept", C.QUALITY_FLAGS).explode(C.QUALITY_FLAGS)
            .filter(pl.col(C.QUALITY_FLAGS).is_not_null()).unnest(C.QUALITY_FLAGS)
        )
        if flags.height:
            per_rule = flags.group_by("rule").agg(
                pl.col("action").mode().sort().first().alias("action"),
                pl.col("row").n_unique().alias("hits"),
                pl.col("row").filter(pl.col("_kept")).n_unique().alias("kept_hits"),
            )
            counted = {r["rule"]: r for r in per_rule.iter_rows(named=True)}
    quality = _summary(run, "quality")
    summary_rules = quality.rules if quality is not None else None
    rules: list[dict] = []
    if isinstance(summary_rules, list) and all("rule" in r for r in summary_rules):
        for r in summary_rules:
            c = counted.get(r["rule"], {})
            hits = r.get("hits", c.get("hits", 0))
            rate = r.get("rate")
            rules.append({"rule": str(r["rule"]), "action": r.get("action", c.get("action")), "hits": int(hits),
                          "hit_rate": _r(rate) if rate is not None else _share(hits, scored.height),
                          "kept_hits": int(c.get("kept_hits", 0))})
    else:
        rules = [{"rule": k, "action": c["action"], "hits": c["hits"], "hit_rate": _share(c["hits"], scored.height),
                  "kept_hits": c["kept_hits"]} for k, c in counted.items()]
    rules.sort(key=lambda r: (-r["hits"], r["rule"]))
    return {
        "measured": True,
        "scored_rows": scored.height,
        "kept_high_quality_rate": hq_rate,
        "high_quality_threshold": _quality_threshold(run),
        "kept_mean_score": _r(kept[C.QUALITY_SCORE].mean()) if kept.height else None,
        "histogram": {
            "edges": edges,
            "kept": _histogram(kept[C.QUALITY_SCORE], edges),
            "rejected": _histogram(scored.filter(~pl.col("_kept"))[C.QUALITY_SCORE], edges),
        },
        "rules": rules,
    }


def _distribution(values: pl.Series, total: int) -> list[dict]:
    vc = values.value_counts().sort(["count", values.name], descending=[True, False])
    return [{"key": str(k), "count": int(c), "share": _share(c, total)}
            for k, c in zip(vc[values.name].to_list(), vc["count"].to_list())]


def _languages(run: Run, texts: bool = True) -> dict:
    kept = _columns(run, "row", "ref", "lang", C.CODE_LANGS, C.CODE_BLOCKS).filter(KEPT)
    natural: dict[str, Any] = {"measured": run.has("lang")}
    if natural["measured"]:
        natural["items"] = _distribution(kept["lang"].fill_null("und"), kept.height)
    code: dict[str, Any] = {"measured": run.has(C.CODE_LANGS)}
    if code["measured"]:
        # The diversity gate's own figures (code_langs.language_shares): programming languages only,
        # as shares of the examples with at least one programming-language block.
        rows = kept[C.CODE_LANGS].to_list()
        n_code, counts = language_counts(rows)
        _, shares = language_shares(rows)
        code["examples_with_code"] = n_code
        code["share_with_code"] = _share(n_code, kept.height)
        code["items"] = [{"key": k, "count": counts[k], "share": _r(share)} for k, share in shares.items()]
        other = Counter(lang for row in rows for lang in set(row or ())
                        if lang is not None and lang != TEXT and not is_programming(lang))
        code["other_items"] = [{"key": k, "count": c, "share": _share(c, kept.height)}
                               for k, c in sorted(other.items(), key=lambda kv: (-kv[1], kv[0]))]
    if texts:
        _add_language_examples(run, kept, natural, code)
    return {"natural": natural, "code": code}


def _add_language_examples(run: Run, kept: pl.DataFrame, natural: dict, code: dict) -> None:
    """Give every language row the first EXAMPLES_PER_LANGUAGE kept examples of it (ref and an excerpt:
    the first prompt for a natural language, the turn holding the block for a programming one), so a
    reader can check what the detector called, say, Welsh or Groovy."""
    wanted: dict[tuple[str, str], list[tuple[str, int | None, str | None]]] = {}
    if natural["measured"]:
        for key, refs in _first_refs(kept.select("ref", pl.col("lang").fill_null("und").alias("k"))).items():
            wanted[("natural", key)] = [(r, None, None) for r in refs]
    if code["measured"] and run.has(C.CODE_BLOCKS):
        blocks = (kept.select("row", "ref", C.CODE_BLOCKS).explode(C.CODE_BLOCKS).drop_nulls(C.CODE_BLOCKS)
                  .unnest(C.CODE_BLOCKS).filter(pl.col("lang").is_not_null())
                  .unique(["row", "lang"], keep="first", maintain_order=True).sort("row"))
        for b in blocks.group_by("lang", maintain_order=True).head(EXAMPLES_PER_LANGUAGE).iter_rows(named=True):
            wanted.setdefault(("code", b["lang"]), []).append((b["ref"], b["turn"], b["label"]))
    records = run.kept_records({ref for picks in wanted.values() for ref, _, _ in picks})
    for section, lists in (("natural", [natural.get("items")]), ("code", [code.get("items"), code.get("other_items")])):
        for item in (x for items in lists if items for x in items):
            picks = wanted.get((section, item["key"]), [])
            item["examples"] = [{"ref": ref, "text": _example_text(records.get(ref), turn, label)}
                                for ref, turn, label in picks]


def _first_refs(frame: pl.DataFrame) -> dict[str, list[str]]:
    """{key: the first EXAMPLES_PER_LANGUAGE refs of it}, from a (ref, k) frame in row order."""
    firsts = frame.group_by("k", maintain_order=True).head(EXAMPLES_PER_LANGUAGE)
    out: dict[str, list[str]] = {}
    for r in firsts.iter_rows(named=True):
        out.setdefault(r["k"], []).append(r["ref"])
    return out


def _example_text(record: dict | None, turn: int | None, label: str | None) -> str:
    """A short excerpt: turn `turn` from its fence (labelled `label` when it has one), else the first prompt."""
    texts = turn_texts(record) or []
    if turn is None or turn >= len(texts):
        text = next((t for r, t in texts if r == "user"), texts[0][1] if texts else "")
        return fit(text, [], EXAMPLE_CHARS)[0]
    text = texts[turn][1]
    at = text.find("```" + label) if label else -1
    at = at if at >= 0 else max(text.find("```"), 0)
    return ("…" if at else "") + fit(text[at:], [], EXAMPLE_CHARS)[0]


def _token_budget(run: Run) -> int | None:
    # The context the token stage enforced (its summary resolves the profile's default); never
    # `max_tokens`, which is the longest example seen.
    summary = _summary(run, "tokens")
    if summary is not None and summary.context_length is not None:
        return summary.context_length
    value = _first_number((run.manifest.get("config") or {}).get("tokens") or {}, ("context_length",))
    return int(value) if value is not None else None


def _token_stats(df: pl.DataFrame) -> dict:
    if df.height == 0:
        return {"examples": 0, "total": 0, "trained": None, "mean": None, "p50": None, "p90": None,
                "p99": None, "max": None}
    n = df[C.N_TOKENS].drop_nulls()
    q = {p: n.quantile(p / 100, interpolation="nearest") for p in (50, 90, 99)}
    return {
        "examples": df.height,
        "total": int(n.sum()),
        "trained": int(df[C.N_ASSISTANT_TOKENS].sum()) if C.N_ASSISTANT_TOKENS in df.columns else None,
        "mean": _r(n.mean(), 1),
        "p50": int(q[50]) if q[50] is not None else None,
        "p90": int(q[90]) if q[90] is not None else None,
        "p99": int(q[99]) if q[99] is not None else None,
        "max": int(n.max()) if n.len() else None,
    }


def _tokens(run: Run) -> dict:
    if not run.has(C.N_TOKENS):
        return {"measured": False}
    ann = _columns(run, "split", C.N_TOKENS, C.N_ASSISTANT_TOKENS, C.TRUNCATED_TURNS).with_columns(KEPT.alias("_kept"))
    measured = ann.filter(pl.col(C.N_TOKENS).is_not_null())
    kept = ann.filter(pl.col("_kept"))
    budget = _token_budget(run)
    top = max(budget * 1.25 if budget else 0, float(measured[C.N_TOKENS].max() or 1) if not budget else 0, 1)
    width = max(1, math.ceil(top / TOKEN_BINS))
    edges = [i * width for i in range(TOKEN_BINS + 1)]
    over_edge = measured.filter(pl.col(C.N_TOKENS) >= edges[-1])
    by_split = {}
    for split in ("train", "val"):
        by_split[split] = _token_stats(kept.filter(pl.col("split") == split)) if run.has("split") else None
    # What the over-budget policy did, from the tokens stage's summary: `over_budget` rows were over
    # the context before the policy; `truncate` cut `truncated_examples` of them to fit, dropping
    # `truncated_turns` messages in all (the token figures above are those of the cut examples).
    summary = _summary(run, "tokens")
    policy = summary.policy if summary is not None else None

    def count(key: str) -> int | None:
        return getattr(summary, key) if summary is not None else None

    return {
        "measured": True,
        "budget": budget,
        "kept": _token_stats(kept),
        "train": by_split["train"],
        "val": by_split["val"],
        "over_budget_rows": int((measured[C.N_TOKENS] > budget).sum()) if budget is not None else None,
        "policy": policy if isinstance(policy, str) else None,
        "over_budget": count("over_budget"),
        "truncated_examples": count("truncated_examples"),
        "truncated_turns": count(C.TRUNCATED_TURNS),
        "kept_truncated": int((kept[C.TRUNCATED_TURNS].fill_null(0) > 0).sum()) if run.has(C.TRUNCATED_TURNS) else None,
        "histogram": {
            "edges": edges,
            "kept": _histogram(kept[C.N_TOKENS].drop_nulls().filter(kept[C.N_TOKENS].drop_nulls() < edges[-1]),
                               edges),
            "rejected": _histogram(
                measured.filter(~pl.col("_kept") & (pl.col(C.N_TOKENS) < edges[-1]))[C.N_TOKENS], edges),
            "overflow_kept": int(over_edge["_kept"].sum()),
            "overflow_rejected": int((~over_edge["_kept"]).sum()),
        },
    }


def _member_text(record: dict | None, raw: str) -> dict:
    texts = turn_texts(record)
    if texts is None:
        return {"prompt": _clip(raw, 200), "answer": ""}

    def pick(role: str, last: bool) -> str:
        got = [t for r, t in texts if r == role]
        return (got[-1] if last else got[0]) if got else ""
    return {"prompt": _clip(pick("user", False), 200), "answer": _clip(pick("assistant", True), 300)}


def _clusters(run: Run, key: str, top: int, with_text: bool) -> tuple[int, list[dict]]:
    """Groups of rows sharing `key` (content_hash or near_dup_cluster), largest first; with `with_text`,
    each removed member shown beside the copy it was removed for (`pairs`)."""
    ann = (_columns(run, "row", "ref", key, "split", C.NEAR_DUP_JACCARD, C.NEAR_DUP_OF)
           .filter(pl.col(key).is_not_null()).with_columns(KEPT.alias("_kept")))
    with_min = key == C.NEAR_DUP_CLUSTER and run.has(C.NEAR_DUP_JACCARD)
    lowest = [pl.col(C.NEAR_DUP_JACCARD).min().alias("min_jaccard")] if with_min else []
    sizes = ann.group_by(key).agg(pl.len().alias("size"), pl.col("row").min().alias("first"), *lowest)
    sizes = sizes.filter(pl.col("size") > 1).sort(["size", "first"], descending=[True, False])
    n = sizes.height
    chosen = sizes.head(top)
    cols = ["row", "ref", "_kept", key] + [c for c in ("split", C.NEAR_DUP_JACCARD, C.NEAR_DUP_OF) if run.has(c)]
    members = ann.filter(pl.col(key).is_in(chosen[key].implode())).select(cols).sort("row")
    out = []
    for c in chosen.iter_rows(named=True):
        rows = members.filter(pl.col(key) == c[key]).head(MEMBERS_PER_CLUSTER).to_dicts()
        out.append({
            "id": str(c[key]),
            "size": c["size"],
            **({"min_jaccard": _r(c["min_jaccard"])} if with_min else {}),
            "members": [
                {"ref": m["ref"], "kept": bool(m["_kept"]), "split": m.get("split"), "jaccard": _r(m.get(C.NEAR_DUP_JACCARD))}
                for m in rows
            ],
        })
    if with_text:
        _add_pairs(run, out, members)
    return n, out


def _kept_copy(member: dict, cluster_rows: pl.DataFrame) -> str | None:
    """The ref a removed member was removed for: near_dup_of, else the cluster's first kept row."""
    if member.get(C.NEAR_DUP_OF):
        return member[C.NEAR_DUP_OF]
    kept = cluster_rows.filter(pl.col("_kept"))["ref"]
    return kept[0] if kept.len() else None


def _add_pairs(run: Run, clusters: list[dict], members: pl.DataFrame) -> None:
    """Give each shown removed member of `clusters` its kept copy's turns beside its own, the differing
    words marked, and its verified Jaccard; members get the conversation's first prompt and last answer."""
    key = C.NEAR_DUP_CLUSTER
    of: dict[str, str | None] = {}
    for cl in clusters:
        rows = members.filter(pl.col(key).cast(pl.Utf8) == cl["id"])
        by_ref = {r["ref"]: r for r in rows.to_dicts()}
        for m in cl["members"]:
            if not m["kept"]:
                of[m["ref"]] = _kept_copy(by_ref[m["ref"]], rows)
    shown = {m["ref"] for cl in clusters for m in cl["members"]}
    records = _chat_rows(run, shown | {r for r in of.values() if r})
    for cl in clusters:
        for m in cl["members"]:
            rec = records.get(m["ref"])
            m.update(_member_text(rec["record"], rec["raw"]) if rec else {"prompt": "", "answer": ""})
        cl["pairs"] = [_pair(m, of[m["ref"]], records) for m in cl["members"] if not m["kept"]]


def _pair(member: dict, kept_ref: str | None, records: dict) -> dict:
    mine = turn_texts((records.get(member["ref"]) or {}).get("record")) or []
    theirs = (turn_texts((records.get(kept_ref) or {}).get("record")) or []) if kept_ref else []
    kept_turns, removed_turns = diff_conversations(theirs, mine)
    return {"removed": member["ref"], "kept": kept_ref, "jaccard": member["jaccard"],
            "kept_turns": kept_turns, "removed_turns": removed_turns}


def _disabled(run: Run, stage: str) -> bool:
    """The stage ran with `enabled: false` (it looked for nothing): its summary says so, or, in a run folder
    written before summaries did, the resolved config (unless the stage was skipped, which is "not measured")."""
    summary = _summary(run, stage)
    if summary is not None and getattr(summary, "enabled", None) is not None:
        return summary.enabled is False
    config = run.manifest.get("config") or {}
    if stage in (config.get("skip_stages") or []):
        return False
    return (config.get(stage) or {}).get("enabled") is False


def _duplicates(run: Run, reasons: dict, texts: bool = True) -> dict:
    by_code = {r["code"]: r["count"] for r in reasons["items"]}
    near_off = _disabled(run, "dedup_minhash")
    out: dict[str, Any] = {
        "exact_rejected": by_code.get("dup.exact", 0),
        "near_rejected": by_code.get("dup.near", 0),
        "prompt_conflicts": int(run.ann[C.PROMPT_CONFLICT].fill_null(False).sum())
        if run.has(C.PROMPT_CONFLICT) and not near_off else None,
        "prompt_conflict_groups": None if near_off else _int_or_none(
            getattr(_summary(run, "dedup_minhash"), "prompt_conflict_groups", None)),
        "exact_disabled": _disabled(run, "dedup_exact"),
        "near_disabled": near_off,
    }
    if run.has(C.CONTENT_HASH):
        n, groups = _clusters(run, C.CONTENT_HASH, TOP_CLUSTERS, with_text=False)
        out["exact_groups"] = n
        out["largest_exact"] = groups
    else:
        out["exact_groups"] = None
        out["largest_exact"] = []
    out["near_measured"] = run.has(C.NEAR_DUP_CLUSTER) and not near_off
    if out["near_measured"]:
        n, clusters = _clusters(run, C.NEAR_DUP_CLUSTER, TOP_CLUSTERS, with_text=texts)
        out["near_clusters"] = n
        out["largest_near"] = clusters
        out["near_min_jaccard"] = _r(run.ann[C.NEAR_DUP_JACCARD].min()) if run.has(C.NEAR_DUP_JACCARD) else None
    else:
        out["near_clusters"] = None
        out["largest_near"] = []
    return out


def _split(run: Run, counts: dict, near_measured: bool) -> dict:
    if not run.has("split"):
        return {"measured": False}
    kept = _columns(run, "split", C.CONTENT_HASH, C.NEAR_DUP_CLUSTER, "lang").filter(KEPT)
    out: dict[str, Any] = {
        "measured": True,
        "train": counts["train"],
        "val": counts["val"],
        "val_share": _share(counts["val"], counts["train"] + counts["val"]),
    }
    # Leakage checks: no exact or near duplicate may sit on both sides (the split keeps near-duplicate clusters whole; this shows it held).
    if run.has(C.CONTENT_HASH):
        out["content_hash_in_both"] = (
            kept.group_by(C.CONTENT_HASH).agg(pl.col("split").n_unique().alias("n")).filter(pl.col("n") > 1).height
        )
    else:
        out["content_hash_in_both"] = None
    if near_measured:
        out["near_clusters_in_both"] = (
            kept.filter(pl.col(C.NEAR_DUP_CLUSTER).is_not_null()).group_by(C.NEAR_DUP_CLUSTER)
            .agg(pl.col("split").n_unique().alias("n")).filter(pl.col("n") > 1).height
        )
    else:
        out["near_clusters_in_both"] = None
    if run.has("lang"):
        tab = (
            kept.group_by(pl.col("lang").fill_null("und"))
            .agg((pl.col("split") == "train").sum().alias("train"), (pl.col("split") == "val").sum().alias("val"))
            .sort(["train", "lang"], descending=[True, False])
        )
        out["by_lang"] = [{"key": r["lang"], "train": r["train"], "val": r["val"]} for r in tab.iter_rows(named=True)]
    return out


def _sources(run: Run) -> list[dict]:
    if not run.has(C.SOURCE_FILE):
        return []
    ann = run.ann.with_columns(KEPT.alias("_kept"))
    split = pl.col("split") if run.has("split") else pl.lit(None, pl.Utf8)
    tab = ann.group_by(C.SOURCE_FILE).agg(
        pl.len().alias("read"),
        pl.col("_kept").sum().alias("kept"),
        (split == "train").sum().alias("train"),
        (split == "val").sum().alias("val"),
    ).sort(C.SOURCE_FILE)
    return [
        {"source_file": r[C.SOURCE_FILE], "read": r["read"], "kept": r["kept"], "rejected": r["read"] - r["kept"],
         "train": r["train"], "val": r["val"], "kept_share": _share(r["kept"], r["read"])}
        for r in tab.iter_rows(named=True)
    ]


def _int_or_none(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _cost(run: Run, tokens: dict) -> dict:
    """The training cost estimate of the kept set.

    `cost_kept` (written by the tokens gate for the final kept set) wins; `cost` is the tokens
    stage's estimate of the rows alive when it ran, before quality and near-duplicate removal, and
    is shown only when it covers as many tokens as the kept set (older run folders), so the cost
    and the Tokens section always describe the same examples.
    """
    summary = _summary(run, "tokens")
    if summary is not None and summary.cost_kept is not None:
        return {"measured": True, "estimate": summary.cost_kept}
    kept_total = (tokens.get("kept") or {}).get("total") if tokens.get("measured") else None
    if summary is None or summary.cost is None:
        return {"measured": False}
    est = summary.cost
    seen = est.get("tokens_seen_per_epoch")
    if seen is None or kept_total is None or seen == kept_total:
        return {"measured": True, "estimate": est}
    return {"measured": False,
            "note": f"the only estimate covers {seen:,} tokens per epoch, the rows alive at the tokens "
                    f"stage, not the {kept_total:,} of the kept set"}


def report_from_run(out_dir_or_run: Any, texts: bool = True) -> dict:
    """The report dict of a run folder (a path or an already loaded `Run`); without `texts`, the figures
    only (no language examples, no near-duplicate pairs: what a comparison with an earlier run needs)."""
    run = out_dir_or_run if isinstance(out_dir_or_run, Run) else load_run(out_dir_or_run)
    counts = _counts(run)
    reasons = _reasons(run, counts)
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "counts": counts,
        "gates": _gates(run),
        "funnel": _funnel(run, counts),
        "rejects": reasons,
        "warnings": _warnings(run),
        "quality": _quality(run),
        "languages": _languages(run, texts),
        "tokens": (tokens := _tokens(run)),
        "duplicates": (duplicates := _duplicates(run, reasons, texts)),
        "split": _split(run, counts, duplicates["near_measured"]),
        "sources": _sources(run),
        "cost": _cost(run, tokens),
        "summaries": run.manifest.get("summaries") or {},
        "config": run.manifest.get("config") or {},
        "versions": run.manifest.get("versions") or {},
        "inputs": run.manifest.get("inputs") or {},
        "outputs": run.manifest.get("outputs") or {},
    }
    report["advice"] = build_advice(report["gates"], reasons, counts["read"], run.manifest.get("config") or {})
    missing = [name for name in ("quality", "tokens", "split", "cost") if not report[name]["measured"]]
    missing += [f"languages.{k}" for k in ("natural", "code") if not report["languages"][k]["measured"]]
    if report["duplicates"]["exact_disabled"]:
        missing.append("duplicates.exact")
    if not report["duplicates"]["near_measured"]:
        missing.append("duplicates.near")
    if not [f for f in run.manifest.get("funnel") or [] if f.get("stage") != "read"]:
        missing.append("funnel.stages")
    missing += [f"gates.{g['family']}" for g in report["gates"]["not_measured"]]
    report["not_measured"] = missing
    return report
