"""The stages of `curate run`, in the order they run: the one list everything else is derived from.

CurateConfig's sections, the stages `skip_stages` accepts, the checks made before RAW is read,
the gates, `curate config` and the stage table of docs/ARCHITECTURE.md all come from `STAGES`.

Each entry declares what the stage is; its module (`module`) holds how it works, and is imported
only when the stage runs, so reading a config imports pydantic alone. A stage module provides
`run(df, ctx) -> df` and optionally `gates(kept, ctx) -> list[Gate]`, `preflight(config)` (a
check run before RAW is read, so a bad setting fails in a second, not after minutes of work) and,
for a row stage with a summary, `merge_summary(out, partials, ctx) -> dict` (the summary of the
whole run when the stage ran in batches: curator/engine.py).

`kind` is what lets the pipeline run in batches: a `row` stage's result for a row depends on
that row alone (the same output under any batching: tests/test_stage_contract.py checks it);
a `global` stage needs the whole set.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from curator import columns as C
from curator import stage_configs as S
from curator import stage_summaries as R

if TYPE_CHECKING:
    import polars as pl

    from curator.gates import Gate
    from curator.stages.base import StageContext

Kind = Literal["row", "global"]


@dataclass(frozen=True)
class Stage:
    """One stage: its name (also its config section and its key in the manifest and report), what it
    reads, writes and may reject for, and where its implementation lives."""

    name: str
    kind: Kind
    config: type[BaseModel]
    reads: tuple[C.Column, ...]
    writes: tuple[C.Column, ...]
    reasons: tuple[str, ...]  # reject codes it may add (`<kind>` stands for a family)
    doc: str  # one line: what it does
    summary: type[BaseModel] | None = None  # the shape of what it leaves in ctx.summaries[name]
    # the columns a row stage's `merge_summary` reads: an engine keeps these, of every row the stage
    # saw, until the stage has run on every shard (tests/test_stage_contract.py checks they suffice)
    summary_reads: tuple[C.Column, ...] = ()
    skippable: bool = True
    # validate runs while the frame is built from the input lines, not as a step over the frame
    on_read: bool = False
    # columns of `reads` a global stage reads shard by shard (ctx.streamed) when the engine keeps shards,
    # instead of in the frame it is given: its text, so the text of every record is never in memory at once
    streams: tuple[C.Column, ...] = ()
    # a row stage whose work is a Python loop over the rows (not Polars' or a Rust library's threads): what
    # the row pool of local and stream is for (curator/row_pool.py runs a segment holding one on every core)
    python_bound: bool = False

    @property
    def module(self) -> str:
        return f"curator.stages.{self.name}"

    def implementation(self) -> ModuleType:
        return importlib.import_module(self.module)

    def run(self, df: "pl.DataFrame", ctx: "StageContext") -> "pl.DataFrame":
        return self.implementation().run(df, ctx)

    def gates(self, kept: "pl.DataFrame", ctx: "StageContext") -> list["Gate"]:
        check = getattr(self.implementation(), "gates", None)
        return [] if check is None else check(kept, ctx)

    def merge_summary(
        self, out: "pl.DataFrame", partials: list[dict[str, Any]], ctx: "StageContext"
    ) -> dict[str, Any] | None:
        """A row stage's summary of the whole run from its batches: `out`, the columns `summary_reads`
        of every row it saw, and `partials`, the summary each batch left; None when the module has no
        `merge_summary`."""
        merge = getattr(self.implementation(), "merge_summary", None)
        return None if merge is None else merge(out, partials, ctx)

    def preflight(self, config: Any) -> None:
        check = getattr(self.implementation(), "preflight", None)
        if check is not None:
            check(config)


_TURNS = (C.MESSAGES,)

STAGES: tuple[Stage, ...] = (
    Stage(
        "validate",
        "row",
        S.ValidateConfig,
        reads=(C.RAW, C.SOURCE_FILE),
        writes=(C.ROW, C.SOURCE_FILE, C.SOURCE_LINE, C.REF, C.RAW, C.RAW_B64, C.SOURCE_FORMAT, C.MESSAGES, C.META,
                C.TOOLS, C.WARNINGS, C.REJECT_REASONS, C.REJECT_DETAILS),
        reasons=("io.<kind>", "format.<kind>", "schema.<kind>", "structure.<kind>"),
        doc="parse each line, convert Alpaca/ShareGPT/GPTeacher, check the chat schema and turn structure",
        skippable=False,
        on_read=True,
    ),
    Stage(
        "normalize",
        "row",
        S.NormalizeConfig,
        reads=(C.MESSAGES, C.TOOLS),
        writes=(C.MESSAGES, C.CONTENT_HASH, C.WARNINGS),
        reasons=(),
        doc="Unicode form, hidden controls, trailing whitespace; the content hash of the conversation",
        skippable=False,
    ),
    Stage(
        "dedup_exact",
        "global",
        S.DedupExactConfig,
        reads=(C.CONTENT_HASH,),
        writes=(),
        reasons=("dup.exact",),
        doc="keep the first of each set of identical normalised conversations",
        summary=R.DedupExactSummary,
    ),
    Stage(
        "secrets",
        "row",
        S.SecretsConfig,
        reads=(C.MESSAGES, C.META, C.TOOLS),
        writes=(C.MESSAGES, C.META, C.TOOLS, C.SECRET_FINDINGS),
        reasons=("secrets.<kind>", "secrets.redaction_incomplete"),
        doc="find keys, tokens and personal data; reject, redact or flag each kind by policy",
        summary=R.SecretsSummary,
        summary_reads=(C.SECRET_FINDINGS,),
    ),
    Stage(
        "language",
        "row",
        S.LanguageConfig,
        reads=_TURNS,
        writes=(C.LANG, C.LANG_CONFIDENCE, C.LANG_REASON, C.USER_LANG, C.ASSISTANT_LANG),
        reasons=(),
        doc="natural language of the prose (by script for CJK, langdetect otherwise)",
        summary=R.LanguageSummary,
        summary_reads=(C.LANG, C.USER_LANG, C.ASSISTANT_LANG, C.LANG_REASON),
        python_bound=True,
    ),
    Stage(
        "code_language",
        "row",
        S.CodeLanguageConfig,
        reads=_TURNS,
        writes=(C.CODE_BLOCKS, C.CODE_LANGS, C.CODE_PARSE_ERROR_FRAC, C.CODE_LABEL_MISMATCH, C.HAS_CODE),
        reasons=("code.label_mismatch",),
        doc="programming language of each code block, fenced or not, by tree-sitter grammars",
        summary=R.CodeLanguageSummary,
        summary_reads=(C.CODE_BLOCKS, C.CODE_LANGS, C.HAS_CODE),
        python_bound=True,
    ),
    Stage(
        "tokens",
        "row",
        S.TokensConfig,
        reads=(C.MESSAGES, C.TOOLS),
        writes=(C.MESSAGES, C.N_TOKENS, C.N_ASSISTANT_TOKENS, C.TURN_TOKENS, C.TRUNCATED_TURNS),
        reasons=("tokens.over_budget", "tokens.no_trainable", "tokens.template_error"),
        doc="render with the model's chat template and count tokens against the context budget",
        summary=R.TokensSummary,
        summary_reads=(C.N_TOKENS, C.N_ASSISTANT_TOKENS, C.TRUNCATED_TURNS, C.REJECT_REASONS),
    ),
    Stage(
        "quality",
        "row",
        S.QualityConfig,
        reads=(C.MESSAGES, C.SECRET_FINDINGS, C.USER_LANG, C.ASSISTANT_LANG, C.CODE_PARSE_ERROR_FRAC,
               C.N_ASSISTANT_TOKENS),
        writes=(C.QUALITY_SCORE, C.QUALITY_FLAGS, C.HIGH_QUALITY),
        reasons=("quality.<rule>",),
        doc="score each example against the declarative rules (rules/default.yaml)",
        summary=R.QualitySummary,
        summary_reads=(C.QUALITY_SCORE, C.HIGH_QUALITY),
    ),
    Stage(
        "dedup_minhash",
        "global",
        S.DedupMinhashConfig,
        reads=(C.MESSAGES, C.CONTENT_HASH, C.QUALITY_SCORE, C.N_ASSISTANT_TOKENS),
        writes=(C.NEAR_DUP_CLUSTER, C.NEAR_DUP_OF, C.NEAR_DUP_JACCARD, C.PROMPT_CONFLICT, C.SPLIT_KEY),
        reasons=("dup.near", "dup.prompt_conflict"),
        doc="near-duplicates by MinHash LSH, verified by exact Jaccard; keeps the best copy of each cluster",
        summary=R.DedupMinhashSummary,
        streams=(C.MESSAGES,),
    ),
    Stage(
        "select",
        "global",
        S.SelectConfig,
        reads=(C.QUALITY_SCORE, C.CONTENT_HASH, C.LANG, C.CODE_LANGS),
        writes=(),
        reasons=("select.over_target",),
        doc="keep at most `target` examples, the best by quality score, stratified",
        summary=R.SelectSummary,
    ),
    Stage(
        "split",
        "global",
        S.SplitConfig,
        reads=(C.SPLIT_KEY, C.CONTENT_HASH),
        writes=(C.SPLIT,),
        reasons=(),
        doc="train/val by a seeded hash of the split key, so a cluster never straddles the split",
        summary=R.SplitSummary,
        skippable=False,
    ),
)

BY_NAME: dict[str, Stage] = {stage.name: stage for stage in STAGES}
SKIPPABLE: tuple[str, ...] = tuple(stage.name for stage in STAGES if stage.skippable)


def check_summaries(summaries: dict[str, dict[str, Any]]) -> None:
    """Raise RuntimeError when a stage left a summary its model does not declare (a bug, not bad input)."""
    from pydantic import ValidationError

    for name, summary in summaries.items():
        model = BY_NAME[name].summary if name in BY_NAME else None
        if model is None:
            raise RuntimeError(f"stage {name} wrote a summary but declares no summary model")
        try:
            model.model_validate(summary)
        except ValidationError as exc:
            raise RuntimeError(f"stage {name}'s summary does not match {model.__name__}: {exc}") from exc


def read_summary(manifest: dict[str, Any], name: str) -> Any:
    """Stage `name`'s summary in `manifest` as its model; None when absent or of another shape (a run
    folder written by another version)."""
    from pydantic import ValidationError

    raw = (manifest.get("summaries") or {}).get(name)
    model = BY_NAME[name].summary
    if not isinstance(raw, dict) or model is None:
        return None
    try:
        return model.model_validate(raw)
    except ValidationError:
        return None


def active(skip: list[str] | tuple[str, ...]) -> list[Stage]:
    """The stages that run over the frame, in order, without those in `skip`."""
    return [stage for stage in STAGES if not stage.on_read and stage.name not in skip]


def stage_table() -> str:
    """The stages as a Markdown table (docs/ARCHITECTURE.md embeds it; `curate stages` prints it)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    def names(columns: tuple[C.Column, ...]) -> str:
        return ", ".join(f"`{c}`" for c in columns) or "-"

    lines = [
        "| # | stage | kind | what it does | reads | writes | rejects for |",
        "|---|---|---|---|---|---|---|",
    ]
    for number, stage in enumerate(STAGES, 1):
        name = stage.name if stage.skippable else f"{stage.name} (always)"
        reasons = ", ".join(f"`{r}`" for r in stage.reasons) or "-"
        lines.append(
            f"| {number} | {name} | {stage.kind} | {cell(stage.doc)} | {names(stage.reads)} | {names(stage.writes)} | {reasons} |"
        )
    return "\n".join(lines) + "\n"


def column_table() -> str:
    """Every column of the frame that a stage writes, with its dtype and meaning, as a Markdown table."""
    writers: dict[str, list[str]] = {}
    for stage in STAGES:
        for column in stage.writes:
            writers.setdefault(column, []).append(stage.name)
    columns = {c: c for stage in STAGES for c in stage.writes}
    lines = ["| column | dtype | written by | holds |", "|---|---|---|---|"]
    for name, column in columns.items():
        doc = column.doc.replace("|", "\\|")
        lines.append(f"| `{name}` | {column.dtype} | {', '.join(writers[name])} | {doc} |")
    return "\n".join(lines) + "\n"


_GENERATED = {"stages": stage_table, "columns": column_table}


def with_tables(doc: str) -> str:
    """`doc` with the text between each `<!-- NAME:begin -->` and `<!-- NAME:end -->` pair (NAME: stages,
    columns) replaced by the current table."""
    import re

    for name, table in _GENERATED.items():
        pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.DOTALL)
        if not pattern.search(doc):
            raise ValueError(f"no <!-- {name}:begin --> ... <!-- {name}:end --> markers")
        doc = pattern.sub(lambda m: m.group(1) + table() + m.group(2), doc)
    return doc


if __name__ == "__main__":  # python -m curator.stages.registry docs/ARCHITECTURE.md: refresh its tables
    import sys
    from pathlib import Path

    path = Path(sys.argv[1])
    path.write_text(with_tables(path.read_text(encoding="utf-8")), encoding="utf-8")
