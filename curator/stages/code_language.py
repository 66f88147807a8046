"""Code blocks and their programming language, with tree-sitter.

Reads: `messages`. Writes:
- `code_blocks` List(Struct{turn, role, label, lang, decided_by, parse_error_frac, label_mismatch,
  n_lines, parse_judged}): every fenced block of every turn (curator/code_blocks.py), its language from
  the fence label and/or tree-sitter detection (curator/code_langs.py); and every span of code outside
  the fences of a user or assistant turn (a whole answer of code, indented code, code after a line
  ending in ":") that reads as code line by line and parses cleanly in its detected language,
  with `decided_by: "unfenced"` and no label (`code_blocks.unfenced_candidates`,
  `code_langs.classify_unfenced`), in the order the turn has them; `parse_judged`: the parse is of
  the block's own language (a label its content supports, or a confident detection; not an SQL dialect
  the grammar lacks; never an unfenced span), so its error fraction says whether the code is broken;
- `code_langs` List(Utf8): sorted unique block languages, `text` blocks excluded;
- `has_code` Boolean: `code_langs` is not empty;
- `code_parse_error_frac` Float64: the worst parse-error fraction of the assistant's judged blocks
  (`parse_judged`; null when there is none); the quality stage reads it (rule `unparsable_code`).
  Unfenced spans are never judged: one is kept only because it parses, so its error share says where
  the span was cut, not whether the author's code is broken;
- `code_label_mismatch` Boolean: some block's label is contradicted by its content.

With `label_mismatch: reject`, rows with a contradicted label are rejected as
`code.label_mismatch`; the default only flags them (the quality stage decides what they cost).

Speed: a block is classified once per distinct (label, content) (data collected twice repeats its
code: 19,728 blocks of the 50,000-record benchmark corpus are 6,220 distinct ones); a labelled
block costs one parse, plus a cue scoring when the parse has a few errors (below
`mismatch_min_error`, where the label cannot be contradicted); only an unlabelled block or one its
label's grammar fails on is detected, trying the best-cued grammars first; a cue's regex runs
only when a literal it requires is in the block (code_langs.required_literals). Turns without a
fence or a line of statement shape (`code_blocks.ANY_CODE_LINE_PATTERN`) never reach Python: both
filters are Polars string matches (bench/RESULTS.md, "Code outside fences", for what unfenced
code costs). Blocks are classified in this process by default: on the 2-core box a process pool
saves ~10% of the wall time for ~45% more CPU time (bench/RESULTS.md).

Gate (`gates`): the kept set must hold at least `min_languages` programming languages, each in at
least `min_share` of the code-bearing examples (examples with a programming-language block), five
languages by default. The default share, 2%, is one code example in fifty: below it a language is a
handful of stray snippets rather than a part of the training mix (a language in the real chat data's
smallest track, Exercism SQLite, is 81 records of ~8,500 code records, 1%, which is why this is a
share of the code-bearing examples and not of the whole set).
"""

from __future__ import annotations

import os
from collections import Counter

import polars as pl

from curator import columns as C
from curator.code_blocks import (
    ANY_CODE_LINE_PATTERN,
    UnfencedSettings,
    extract_code_blocks,
    strip_code,
    unfenced_candidates,
)
from curator.code_langs import (
    TEXT,
    DetectSettings,
    classify_block,
    classify_unfenced,
    cue_sample,
    cue_scores_many,
    grammar_versions,
    is_programming,  # noqa: F401  (moved to code_langs; still importable from the stage)
    language_shares,
    normalize_label,
)
from curator.gates import Gate
from curator.stages.base import StageContext
from curator.stage_configs import CodeLanguageConfig as Config  # noqa: F401  (re-exported: the stage's settings)

NAME = "code_language"

BLOCK = pl.Struct(
    {
        "turn": pl.Int32,
        "role": pl.Utf8,
        "label": pl.Utf8,
        "lang": pl.Utf8,
        "decided_by": pl.Utf8,
        "parse_error_frac": pl.Float64,
        "label_mismatch": pl.Boolean,
        "n_lines": pl.Int32,
        "parse_judged": pl.Boolean,
    }
)
REASON_MISMATCH = "code.label_mismatch"
GATE_NAME = "code.language_diversity"
UNFENCED = "unfenced"  # `decided_by` of a block found outside fences

_DEFAULTS = DetectSettings()
_UNFENCED_DEFAULTS = UnfencedSettings()


def _config(ctx: StageContext) -> Config:
    return getattr(ctx.config, NAME)


Key = tuple[str | None, str, bool]  # (fence label, code, fenced)


def _classify_chunk(args: tuple[list[Key], list[dict | None], DetectSettings]) -> list:
    keys, scores, settings = args
    return [
        classify_block(code, label, settings, cues) if fenced else classify_unfenced(code, settings, cues)
        for (label, code, fenced), cues in zip(keys, scores)
    ]


def _needs_cues(key: Key) -> bool:
    """Whether the block will be detected (unfenced, or no label we know): a labelled block
    mostly ends with one parse, and scores its cues itself when it needs them."""
    label, _, fenced = key
    return not fenced or normalize_label(label) is None


def classify_many(keys: list[Key], settings: DetectSettings, workers: int, pool_min: int) -> list:
    """`classify_block` (fenced) or `classify_unfenced` over distinct (label, code, fenced) keys, in
    a spawned process pool when many; the cues of the blocks to detect are scored in one batch."""
    todo = [i for i, key in enumerate(keys) if _needs_cues(key)]
    scores: list[dict | None] = [None] * len(keys)
    batch = cue_scores_many([cue_sample(keys[i][1], settings.max_lines) for i in todo])
    for i, cues in zip(todo, batch):
        scores[i] = cues
    workers = min(workers, os.cpu_count() or 1)
    if workers <= 1 or len(keys) < pool_min:
        return _classify_chunk((keys, scores, settings))
    import multiprocessing as mp

    size = -(-len(keys) // (workers * 4))
    chunks = [(keys[i : i + size], scores[i : i + size], settings) for i in range(0, len(keys), size)]
    # spawn, not fork: the parent holds Polars' thread pool, which fork can leave locked
    with mp.get_context("spawn").Pool(workers) as pool:
        return [r for part in pool.map(_classify_chunk, chunks) for r in part]


def _turn_blocks(content: str, fenced: bool, unfenced: bool, settings: UnfencedSettings) -> list:
    """The fenced blocks and the unfenced candidates of one turn, in the order they are written."""
    blocks = extract_code_blocks(content) if fenced else []
    if unfenced:
        blocks = sorted(blocks + unfenced_candidates(content, settings), key=lambda b: b.start)
    return blocks


def block_table(turns: pl.DataFrame, cfg: Config) -> pl.DataFrame:
    """One row per code block of (`_idx`, `_turn`, `role`, `content`, `_fenced`, `_unfenced`) turns,
    with its language: every fenced block (`_fenced` turns), and the unfenced candidates
    (`_unfenced` turns) that classify_unfenced gives a language; the others are not code."""
    cols: dict[str, list] = {k: [] for k in ("_idx", "turn", "role", "label", "_code", "_fenced", "n_lines")}
    found_in: dict[tuple[str, bool, bool], list] = {}  # data collected twice repeats whole turns
    usettings = cfg.unfenced_settings()
    for idx, turn, role, content, fenced, unfenced in turns.iter_rows():
        key = (content, fenced, unfenced)
        if key not in found_in:
            found_in[key] = _turn_blocks(content, fenced, unfenced, usettings)
        for block in found_in[key]:
            cols["_idx"].append(idx)
            cols["turn"].append(turn)
            cols["role"].append(role)
            cols["label"].append(block.label)
            cols["_code"].append(block.code)
            cols["_fenced"].append(block.fenced)
            cols["n_lines"].append(block.n_lines)
    keys = list(dict.fromkeys(zip(cols["label"], cols["_code"], cols["_fenced"])))
    results = dict(zip(keys, classify_many(keys, cfg.settings(), cfg.workers, cfg.pool_min_blocks)))
    found = [results[k] for k in zip(cols["label"], cols["_code"], cols["_fenced"])]
    del cols["_code"]
    table = pl.DataFrame(
        {
            **cols,
            "lang": [r.lang for r in found],
            "decided_by": [r.decided_by for r in found],
            "parse_error_frac": [r.parse_error_frac for r in found],
            "label_mismatch": [r.label_mismatch for r in found],
            "parse_judged": [r.judged for r in found],
        },
        schema={"_idx": pl.Int64, "_fenced": pl.Boolean, **{k: v for k, v in BLOCK.to_schema().items()}},
    )
    # an unfenced candidate without a language was only a guess: not a block
    return table.filter(pl.col("_fenced") | pl.col("lang").is_not_null()).drop("_fenced")


def select_turns(df: pl.DataFrame, cfg: Config) -> pl.DataFrame:
    """(`_idx`, `_turn`, `role`, `content`, `_fenced`, `_unfenced`) of the turns that may hold code:
    a fence, or (in `unfenced_roles`) a line with a statement shape outside the fences.

    Both tests are Polars string matches, so turns of prose never reach Python. A fenced turn is
    matched on its text outside the fences (cut in Python with the CommonMark rules, once per
    distinct text): the code inside a fence says nothing about the text around it.
    """
    turns = (
        df.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("_idx"), pl.col(C.MESSAGES))
        .explode(C.MESSAGES)
        .with_columns(pl.int_range(pl.len(), dtype=pl.Int32).over("_idx").alias("_turn"))
        .unnest(C.MESSAGES)
        .with_columns(pl.col("content").fill_null(""))
        .with_columns(
            _fenced=pl.col("content").str.contains("```", literal=True)
            | pl.col("content").str.contains("~~~", literal=True),
            _searched=pl.lit(cfg.unfenced) & pl.col("role").is_in(cfg.unfenced_roles),
        )
    )
    plain = turns.filter(~pl.col("_fenced") & pl.col("_searched")).filter(
        pl.col("content").str.contains(ANY_CODE_LINE_PATTERN)
    )
    fenced = turns.filter(pl.col("_fenced"))
    searched = fenced.filter(pl.col("_searched"))["content"].unique().to_list()
    outside = pl.Series([strip_code(t, inline=False) for t in searched], dtype=pl.Utf8)
    code_outside = dict(zip(searched, outside.str.contains(ANY_CODE_LINE_PATTERN).to_list()))
    fenced = fenced.with_columns(
        pl.Series("_unfenced", [bool(code_outside.get(t)) for t in fenced["content"].to_list()], dtype=pl.Boolean)
        & pl.col("_searched")
    )
    return (
        pl.concat([plain.with_columns(_unfenced=pl.lit(True)), fenced])
        .sort("_idx", "_turn")
        .select("_idx", "_turn", "role", "content", "_fenced", "_unfenced")
    )


def run(df: pl.DataFrame, ctx: StageContext) -> pl.DataFrame:
    cfg = _config(ctx)
    turns = select_turns(df, cfg)
    with ctx.progress.task("code languages", total=turns.height) as advance:
        blocks = block_table(turns, cfg)
        advance(turns.height)
    fields = list(BLOCK.to_schema())
    per_row = (
        blocks.group_by("_idx", maintain_order=True)
        .agg(
            pl.struct(fields).alias(C.CODE_BLOCKS),
            pl.col("lang").filter(pl.col("lang").is_not_null() & (pl.col("lang") != TEXT)).unique().sort()
            .alias(C.CODE_LANGS),
            pl.col("parse_error_frac").filter((pl.col("role") == "assistant") & pl.col("parse_judged")).max()
            .alias(C.CODE_PARSE_ERROR_FRAC),
            pl.col("label_mismatch").any().alias(C.CODE_LABEL_MISMATCH),
        )
    )
    df = (
        df.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("_idx"))
        .join(per_row, on="_idx", how="left", maintain_order="left")
        .drop("_idx")
        .with_columns(
            pl.col(C.CODE_BLOCKS).fill_null(pl.lit([], dtype=pl.List(BLOCK))),
            pl.col(C.CODE_LANGS).fill_null(pl.lit([], dtype=pl.List(pl.Utf8))),
            pl.col(C.CODE_LABEL_MISMATCH).fill_null(False),
        )
        .with_columns(has_code=pl.col(C.CODE_LANGS).list.len() > 0)
    )
    if cfg.label_mismatch == "reject":
        bad = df.select(pl.col(C.CODE_BLOCKS).list.eval(pl.element().filter(pl.element().struct.field("label_mismatch"))))
        detail = bad.to_series().map_elements(
            lambda bs: "; ".join(f"turn {b['turn']}: labelled {b['label']!r}, parses as {b['lang']}" for b in bs),
            return_dtype=pl.Utf8,
        )
        df = C.with_reject(df.with_columns(detail.alias("_detail")), pl.col(C.CODE_LABEL_MISMATCH), REASON_MISMATCH,
                           pl.col("_detail")).drop("_detail")
    ctx.summaries[NAME] = summarize(df)
    ctx.manifest[NAME] = {"grammars": grammar_versions()}
    return df


def summarize(df: pl.DataFrame) -> dict:
    """Distributions for the report: examples per language, blocks per language and decision."""
    blocks = df.select(pl.col(C.CODE_BLOCKS).explode()).unnest(C.CODE_BLOCKS).drop_nulls("turn")
    per_example = Counter(lang for langs in df[C.CODE_LANGS].to_list() for lang in langs)
    n_code, _ = language_shares(df[C.CODE_LANGS].to_list())
    return {
        "examples": df.height,
        C.HAS_CODE: int(df[C.HAS_CODE].sum()),
        "code_examples": n_code,
        "examples_per_language": dict(sorted(per_example.items(), key=lambda kv: (-kv[1], kv[0]))),
        "blocks": blocks.height,
        "blocks_per_language": {
            (k if k is not None else "unknown"): int(v) for k, v in blocks.group_by("lang").len().sort("len", descending=True).iter_rows()
        },
        "blocks_decided_by": {
            (k if k is not None else "unknown"): int(v) for k, v in blocks.group_by("decided_by").len().sort("len", descending=True).iter_rows()
        },
        "label_mismatch_blocks": int(blocks["label_mismatch"].sum()) if blocks.height else 0,
        "unknown_language_blocks": int(blocks["lang"].is_null().sum()) if blocks.height else 0,
    }


def merge_summary(out: pl.DataFrame, partials: list[dict], ctx: StageContext) -> dict:
    """The run's summary from the code columns of every row the stage saw, in whatever batches."""
    return summarize(out)


def gates(kept_df: pl.DataFrame, ctx: StageContext) -> list[Gate]:
    """The diversity gate on the kept set; the distribution goes to the report either way."""
    cfg = _config(ctx)
    n, shares = language_shares(kept_df[C.CODE_LANGS].to_list())
    counted = [lang for lang, share in shares.items() if share >= cfg.min_share]
    ctx.summaries.setdefault(NAME, {})["kept_language_shares"] = {k: round(v, 4) for k, v in shares.items()}
    if cfg.min_languages is None:
        return []
    passed = len(counted) >= cfg.min_languages
    listed = ", ".join(f"{lang} {shares[lang]:.1%}" for lang in counted) or "none"
    below = [lang for lang in shares if lang not in counted]
    message = (
        f"{len(counted)} programming languages with >= {cfg.min_share:.1%} of {n} code examples "
        f"(need {cfg.min_languages}): {listed}"
        + (f"; below the share: {', '.join(below)}" if below else "")
    )
    return [Gate(GATE_NAME, passed, float(len(counted)), float(cfg.min_languages), message)]
