"""Quality score from declarative rules, and the high-quality gate.

Reads: `messages`, and the columns the enabled rules need from earlier stages:
`n_assistant_tokens` (tokens), `user_lang`/`assistant_lang` (language), `code_parse_error_frac`
(code_language), `secret_findings` (secrets).
Writes: `quality_score` Float64 in [0, 1], `quality_flags` List(Struct{rule, value, action}) (every
rule that fired, with its measured value and action), `high_quality` Boolean
(`quality_score >= high_quality_threshold`); rejects `quality.<rule>` for rules whose action is
`reject`.

The rules live in a YAML file (rules/default.yaml unless `quality.rules` / `--rules` names another;
curator/rules.py documents the format and how the score is formed). ctx.summaries["quality"] holds
each rule's hit count and rate, the score histogram and the high-quality rate; ctx.manifest["quality"]
holds the resolved rule file and its sha256.

The gate (`gates`): the high-quality rate of the kept set must be at least `min_high_quality_rate`
(default 0.60: at least 60% of the dataset is high quality).
"""

from __future__ import annotations

import math

import polars as pl

from curator import columns as C
from curator.columns import with_reject
from curator.errors import CurateError
from curator.gates import Gate
from curator.rules import CompiledRules, RuleSet, compile_rules, load_rules
from curator.signals import SIGNALS
from curator.stages.base import StageContext
from curator.stage_configs import QualityConfig as Config  # noqa: F401  (re-exported: the stage's settings)

NAME = "quality"


HISTOGRAM_BINS = 10


def preflight(config) -> None:
    """Read the rule file before RAW is read, so a bad `--rules` fails at once."""
    load_rules(config.quality.rules)


def evaluate(df: pl.DataFrame, rules: RuleSet | CompiledRules, *, keep_signals: bool = False) -> pl.DataFrame:
    """Add `quality_score` and `quality_flags` to `df` (no rejects, no `high_quality`).

    With `keep_signals`, the measured value of every rule (`__value_<signal>__<turns>`) and its
    fired flag (`__fired_<rule>`) stay in the frame (benchmarks and tuning read them).
    """
    compiled = rules if isinstance(rules, CompiledRules) else compile_rules(rules)
    missing = sorted({c for r in compiled.rules for c in SIGNALS[r.signal].needs} - set(df.columns))
    if missing:
        raise CurateError(
            f"quality: rules need column(s) {', '.join(missing)} from an earlier stage; "
            "run language, code_language, tokens and secrets before quality, or disable the rules reading them"
        )
    helpers = dict(compiled.scope.columns)
    out = df.with_columns(**helpers) if helpers else df
    # whole-frame passes: the fence parser (Python, on rows with fences only), turn pairs
    for name, compute in compiled.scope.frame.items():
        out = out.with_columns(compute(out).alias(name))
    if compiled.scope.derived:
        out = out.with_columns(**compiled.scope.derived)
    out = out.with_columns(**compiled.values)
    out = out.with_columns(compiled.fired_exprs())
    out = out.with_columns(compiled.score_expr().alias(C.QUALITY_SCORE))
    out = out.with_columns(compiled.flags(out))
    if keep_signals:
        return out.drop([c for c in out.columns if c.startswith("__") and not c.startswith(("__value_", "__fired_"))])
    return out.drop([c for c in out.columns if c.startswith("__")])


def run(df: pl.DataFrame, ctx: StageContext) -> pl.DataFrame:
    cfg: Config = ctx.config.quality
    ruleset = load_rules(cfg.rules)
    # a rule whose input column no earlier stage wrote (its stage disabled) is skipped and reported,
    # rather than failing the run or firing on made-up values
    skipped = {
        r.id: sorted(set(SIGNALS[r.signal].needs) - set(df.columns))
        for r in ruleset.enabled
        if set(SIGNALS[r.signal].needs) - set(df.columns)
    }
    compiled = compile_rules([r for r in ruleset.enabled if r.id not in skipped])
    with ctx.progress.task("quality", total=df.height) as advance:
        out = _evaluate_in_batches(df, compiled, advance)
    out = out.with_columns((pl.col(C.QUALITY_SCORE) >= cfg.high_quality_threshold).alias(C.HIGH_QUALITY))
    for r in compiled.rules:
        if r.action == "reject":
            value = pl.col(compiled.value_col(r))
            detail = pl.format(f"{r.signal}={{}} ({r.threshold_text()}, turns={r.turns})", value.round(4))
            out = with_reject(out, pl.col(compiled.fired_col(r)), f"quality.{r.id}", detail)
    ctx.summaries[NAME] = _summary(out, compiled, cfg)
    ctx.summaries[NAME]["skipped_rules"] = {k: f"missing column(s) {', '.join(v)}" for k, v in skipped.items()}
    ctx.manifest[NAME] = {
        "skipped_rules": sorted(skipped),
        "rules_file": str(ruleset.path),
        "rules_sha256": ruleset.sha256,
        "rules": [r.id for r in ruleset.rules],
        "enabled_rules": [r.id for r in compiled.rules],
        "high_quality_threshold": cfg.high_quality_threshold,
    }
    return out.drop([c for c in out.columns if c.startswith("__")])


BATCH_ROWS = 20_000


def _evaluate_in_batches(df: pl.DataFrame, compiled: CompiledRules, advance) -> pl.DataFrame:
    """`evaluate` over slices of BATCH_ROWS rows, advancing the bar after each: quality is a row stage,
    so the result is the same as in one pass (DESIGN.md principle 9)."""
    if df.height <= BATCH_ROWS:
        out = evaluate(df, compiled, keep_signals=True)
        advance(df.height)
        return out
    parts = []
    for part in df.iter_slices(BATCH_ROWS):
        parts.append(evaluate(part, compiled, keep_signals=True))
        advance(part.height)
    return pl.concat(parts, how="vertical")


def _summary(out: pl.DataFrame, compiled: CompiledRules, cfg: Config) -> dict:
    n = out.height
    hits = (
        out.select([pl.col(compiled.fired_col(r)).sum().alias(r.id) for r in compiled.rules]).row(0, named=True)
        if compiled.rules and n
        else {r.id: 0 for r in compiled.rules}
    )
    rules = [
        {
            "rule": r.id,
            "signal": r.signal,
            "turns": r.turns,
            "action": r.action,
            "weight": r.weight,
            "thresholds": r.threshold_text(),
            "hits": int(hits[r.id] or 0),
            "rate": (int(hits[r.id] or 0) / n) if n else 0.0,
        }
        for r in compiled.rules
    ]
    return _summary_of(out, rules, cfg)


def _summary_of(out: pl.DataFrame, rules: list[dict], cfg: Config) -> dict:
    """The summary of the scored rows `out`, with each rule's hits counted (`rules`)."""
    n = out.height
    # one chunk: a float mean depends on how the column is cut, and batches must not change it
    scores = out.get_column(C.QUALITY_SCORE).rechunk()
    edges = [i / HISTOGRAM_BINS for i in range(HISTOGRAM_BINS + 1)]
    # bin i holds edges[i] <= score < edges[i+1]; the last bin also holds 1.0
    bins = (scores * HISTOGRAM_BINS).floor().clip(0, HISTOGRAM_BINS - 1).cast(pl.Int64)
    counts = bins.value_counts().sort(bins.name) if n else None
    per_bin = [0] * HISTOGRAM_BINS
    if counts is not None:
        for b, c in counts.iter_rows():
            per_bin[b] = int(c)
    n_high = int(out.get_column(C.HIGH_QUALITY).sum()) if n else 0
    return {
        "rows": n,
        "high_quality_threshold": cfg.high_quality_threshold,
        C.HIGH_QUALITY: n_high,
        "high_quality_rate": (n_high / n) if n else 0.0,
        "mean_score": float(scores.mean()) if n else None,
        "rules": rules,
        "score_histogram": {"edges": edges, "counts": per_bin},
    }


def merge_summary(out: pl.DataFrame, partials: list[dict], ctx: StageContext) -> dict:
    """The run's summary from the score columns of every row the stage saw; each rule's hits (counted
    from columns the stage does not keep) are summed over the batches."""
    first = partials[0]
    n = out.height
    rules = []
    for i, rule in enumerate(first["rules"]):
        hits = sum(int(p["rules"][i]["hits"]) for p in partials)
        rules.append({**rule, "hits": hits, "rate": (hits / n) if n else 0.0})
    summary = _summary_of(out, rules, ctx.config.quality)
    summary["skipped_rules"] = first["skipped_rules"]
    return summary


def _decimals(rate: float, need: float) -> int:
    """Decimals of the percentages in the gate message: one, or as many as the minimum is written
    with, and more while the rate (or its distance to the minimum) would print as the minimum
    (or as zero) though they differ."""
    d = next((d for d in range(1, 9) if round(need * 100, d) == round(need * 100, 9)), 9)
    while d < 9 and rate != need and (
        round(rate * 100, d) == round(need * 100, d) or round(abs(rate - need) * 100, d) == 0
    ):
        d += 1
    return d


def gates(kept_df: pl.DataFrame, ctx: StageContext) -> list[Gate]:
    """The high-quality rate of the kept set against `min_high_quality_rate`."""
    cfg: Config = ctx.config.quality
    if cfg.min_high_quality_rate is None:
        return []
    n = kept_df.height
    n_high = int(kept_df.get_column(C.HIGH_QUALITY).sum()) if n and C.HIGH_QUALITY in kept_df.columns else 0
    rate = n_high / n if n else 0.0
    need = cfg.min_high_quality_rate
    passed = rate >= need
    need_text = f"{need * 100:g}%"  # exactly as configured: 0.955 is 95.5%, not 96%
    if n == 0:
        # a rate of no example is undefined, not 0%
        message = f"high-quality rate n/a (no example kept); the minimum is {need_text}"
        return [Gate(name="quality.high_quality_rate", passed=passed, value=None, threshold=need, message=message)]
    d = _decimals(rate, need)
    margin = f"{abs(rate - need) * 100:.{d}f}"
    if passed:
        message = (
            f"high-quality rate {rate * 100:.{d}f}% ({n_high:,} of {n:,} kept) meets the minimum {need_text} "
            f"by {margin} points"
        )
    else:
        short = max(0, math.ceil(need * n - 1e-9) - n_high)
        message = (
            f"high-quality rate {rate * 100:.{d}f}% ({n_high:,} of {n:,} kept) is under the minimum {need_text} "
            f"by {margin} points ({short:,} more high-quality examples needed)"
        )
    return [Gate(name="quality.high_quality_rate", passed=passed, value=rate, threshold=need, message=message)]
