"""Column names and dtypes: the contract between stages, the report and the trainer.

The pipeline keeps one Polars frame with one row per input line. Stages only see the rows that
are still alive (no reject reason yet) and return them with new columns; rows leave the frame
once, at the end (DESIGN.md, principle 2). Each stage declares the columns it reads and writes
(curator/stages/registry.py) with the names below.

A `Column` is a `str` (polars takes it as a name as it is) that also knows its dtype and meaning,
for the stage table in docs/ARCHITECTURE.md. This module does not import polars: the config and
the registry import it, and neither may pay for polars. `MESSAGE` (a polars dtype) is built on
first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl


class Column(str):
    """A column name, with its dtype (as polars prints it) and what it holds."""

    dtype: str
    doc: str

    def __new__(cls, name: str, dtype: str, doc: str) -> "Column":
        column = super().__new__(cls, name)
        column.dtype = dtype
        column.doc = doc
        return column

    def __reduce__(self) -> tuple:  # pickles (process pools) as the plain name
        return (str, (str(self),))


# --- provenance, written by the readers -------------------------------------------------
ROW = Column("row", "Int64", "global input order (0-based); the frame is always sorted by it")
SOURCE_FILE = Column("source_file", "String", "path of the input file as shown to the user")
SOURCE_LINE = Column("source_line", "Int64", "1-based line (for .json arrays, the line the record starts on)")
RAW = Column("raw", "String", "the original line (invalid UTF-8 decoded with replacement characters)")
RAW_B64 = Column("raw_b64", "String", "base64 of the original bytes when they were not valid UTF-8, else null")
SOURCE_FORMAT = Column("source_format", "String", "chat | alpaca | sharegpt | gpteacher")

# --- the record, written by validate/normalize ----------------------------------------
MESSAGES = Column("messages", "List(MESSAGE)", "the conversation's turns; null on rows that failed the schema")
META = Column("meta", "String", "JSON text of the record's `meta` object, or null")
TOOLS = Column(
    "tools",
    "String",
    'JSON text of the tool definitions in TRL\'s shape, [{"type": "function", "function": {...}}], or null',
)
CONTENT_HASH = Column("content_hash", "String", "32 hex chars (xxh3-128) of the normalised conversation")
REF = Column("ref", "String", '"source_file:source_line", how people and rejects point at a row')

# --- the verdict ---------------------------------------------------------------------------
REJECT_REASONS = Column("reject_reasons", "List(String)", "stable reason codes; empty = alive")
REJECT_DETAILS = Column("reject_details", "List(String)", "one human-readable detail per reason")
WARNINGS = Column("warnings", "List(String)", '"code: message" notes that do not reject the row')

# --- annotations, one stage each --------------------------------------------------------------
SECRET_FINDINGS = Column("secret_findings", "List(Struct(kind, action, turn))", "each secret found and what was done")
LANG = Column("lang", "String", "ISO 639-1 language of the conversation's prose, or und")
LANG_CONFIDENCE = Column("lang_confidence", "Float64", "probability of `lang` (langdetect's, or 1.0 by script)")
LANG_REASON = Column("lang_reason", "String", "why `lang` is und: no_text | too_short | low_confidence; else null")
USER_LANG = Column("user_lang", "String", "language of the user turns")
ASSISTANT_LANG = Column("assistant_lang", "String", "language of the assistant turns")
CODE_BLOCKS = Column("code_blocks", "List(Struct(turn, role, label, lang, ...))", "every code block found, fenced or not")
CODE_LANGS = Column("code_langs", "List(String)", "programming languages of the blocks, sorted")
CODE_PARSE_ERROR_FRAC = Column(
    "code_parse_error_frac", "Float64", "worst parse-error fraction of the assistant's judged blocks, or null"
)
CODE_LABEL_MISMATCH = Column("code_label_mismatch", "Boolean", "a fence label its grammar contradicts")
HAS_CODE = Column("has_code", "Boolean", "at least one programming-language block")
N_TOKENS = Column("n_tokens", "Int64", "tokens of the rendered conversation, as the trainer sees it")
N_ASSISTANT_TOKENS = Column("n_assistant_tokens", "Int64", "tokens trained on (the assistant's)")
TURN_TOKENS = Column("turn_tokens", "List(Int64)", "tokens per turn")
TRUNCATED_TURNS = Column("truncated_turns", "Int32", "turns dropped to fit the context (policy truncate)")
QUALITY_SCORE = Column("quality_score", "Float64", "product of (1 - weight) over the scoring rules that fired, in [0, 1]")
QUALITY_FLAGS = Column("quality_flags", "List(Struct(rule, value, action))", "rules that fired, with the measured value")
HIGH_QUALITY = Column("high_quality", "Boolean", "quality_score >= quality.high_quality_threshold")
NEAR_DUP_CLUSTER = Column("near_dup_cluster", "Int64", "near-duplicate cluster id, null for a record in no cluster")
NEAR_DUP_OF = Column("near_dup_of", "String", "ref of the copy kept for a removed near-duplicate; null on kept records")
NEAR_DUP_JACCARD = Column("near_dup_jaccard", "Float64", "verified Jaccard to that kept copy")
PROMPT_CONFLICT = Column("prompt_conflict", "Boolean", "near-identical prompt with a different answer elsewhere")

# --- the split -------------------------------------------------------------------------------
SPLIT_KEY = Column("split_key", "String", "rows with the same key land on the same side (a cluster id)")
SPLIT = Column("split", "String", "train | val")


def __getattr__(name: str) -> Any:
    if name == "MESSAGE":
        return _message_dtype()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _message_dtype() -> "pl.Struct":
    """One turn of MESSAGES."""
    import polars as pl

    return pl.Struct(
        {
            "role": pl.Utf8,  # system | user | assistant | tool
            "content": pl.Utf8,  # text, content parts already joined
            "weight": pl.Int8,  # 0/1 on assistant turns, null when not given
            # JSON text (json.dumps, ensure_ascii=False, default separators) of the assistant's calls in
            # their one form, [{"id", "type": "function", "function": {"name", "arguments": str}}], or null
            # (curator/tool_use.py)
            "tool_calls": pl.Utf8,
            "tool_call_id": pl.Utf8,  # on tool turns: the id of the call answered, or null
        }
    )


def concat_in_one_chunk(frames: "list[pl.DataFrame]") -> "pl.DataFrame":
    """`frames` one after another (columns matched by name), each column in one chunk, as one frame
    built whole has it. The list is emptied so that each frame's chunk is freed as its column is
    copied: this needs one column more, where `pl.concat(frames).rechunk()` needs a second frame."""
    import polars as pl

    frame = pl.concat(frames, how="diagonal_relaxed", rechunk=False)
    frames.clear()
    columns = []
    for name in frame.columns:
        columns.append(frame.get_column(name).rechunk())
        frame = frame.drop(name)
    return pl.DataFrame(columns)


def alive() -> "pl.Expr":
    """True for rows no stage has rejected yet."""
    import polars as pl

    return pl.col(REJECT_REASONS).list.len() == 0


def with_reject(
    df: "pl.DataFrame",
    mask: "pl.Expr",
    code: "str | pl.Expr",
    detail: "str | pl.Expr | None" = None,
) -> "pl.DataFrame":
    """Append reason `code` (and its `detail`) to every row where `mask` is true.

    `code` and `detail` may be expressions, so one call can give each row its own
    reason; a null code on a masked row adds nothing.
    """
    import polars as pl

    code_expr = pl.lit(code) if isinstance(code, str) else code
    if detail is None:
        detail_expr = pl.lit("")
    elif isinstance(detail, str):
        detail_expr = pl.lit(detail)
    else:
        detail_expr = detail.fill_null("")
    hit = mask.fill_null(False) & code_expr.is_not_null()
    return df.with_columns(
        pl.when(hit)
        .then(pl.col(REJECT_REASONS).list.concat(pl.concat_list(code_expr.cast(pl.Utf8))))
        .otherwise(pl.col(REJECT_REASONS))
        .alias(REJECT_REASONS),
        pl.when(hit)
        .then(pl.col(REJECT_DETAILS).list.concat(pl.concat_list(detail_expr.cast(pl.Utf8))))
        .otherwise(pl.col(REJECT_DETAILS))
        .alias(REJECT_DETAILS),
    )
