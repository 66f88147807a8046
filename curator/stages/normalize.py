"""Normalize: one spelling for the same text, and the content hash that names a conversation.

Reads `messages`; rewrites each turn's `content` without bidi controls and tag characters (a
`normalize.hidden_controls` warning on the row), to Unicode NFC (code included), LF line ends
(CRLF and lone CR, code included), and no trailing whitespace at the end of a prose line or of
the turn. Whitespace that is meaning is kept: leading indentation, every character inside a
fenced code block (a string literal `'a   '`, a heredoc; the spans of `code_blocks.block_spans`,
CommonMark's rules) and a Markdown hard line break (two or more spaces before a line ending
followed by another line of the same paragraph, CommonMark 0.31 section 6.7), written as exactly
two spaces. Writes `content_hash`: xxh3-128 (hex) of the normalised conversation (roles, contents,
weights, tool calls, and the tool definitions when the record has them: they are part of what the
model is trained on), the identity exact dedup, the split and run-to-run comparisons use.
"""

from __future__ import annotations

import re
import unicodedata

import polars as pl
import xxhash

from curator import columns as C
from curator.code_blocks import block_spans
from curator.stages.base import StageContext
from curator.stage_configs import NormalizeConfig as Config  # noqa: F401  (re-exported: the stage's settings)

NAME = "normalize"


# Bidi embedding, override and isolate controls, and Unicode tag characters: they change how text
# displays or carry text a reader cannot see (Trojan Source, CVE-2021-42574; "ASCII smuggling" in tag
# characters), so what a reviewer reads would not be what the model learns. Tags inside an emoji flag
# sequence (black flag, tag letters, cancel tag: the flag of Scotland) are kept.
_HIDDEN = "[\u202a-\u202e\u2066-\u2069\U000e0000-\U000e007f]"
_HIDDEN_OR_FLAG = re.compile("(\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f)|" + _HIDDEN)
HIDDEN_WARNING = "normalize.hidden_controls"


def remove_hidden_controls(text: str) -> str:
    """`text` without bidi controls and tag characters (emoji flag sequences kept)."""
    return _HIDDEN_OR_FLAG.sub(lambda m: m.group(1) or "", text)


def _remove_hidden(flat: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series]:
    """`flat` turns without hidden controls, and the rows (ROW values) where any was removed."""
    hits = flat.select(pl.col("content").str.contains(_HIDDEN).fill_null(False)).to_series().arg_true()
    if not len(hits):
        return flat, pl.Series(C.ROW, [], dtype=flat.schema[C.ROW])
    before = flat.get_column("content").gather(hits).to_list()
    after = [remove_hidden_controls(t) for t in before]
    changed = [i for i, (a, b) in zip(hits.to_list(), zip(before, after)) if a != b]
    content = flat.get_column("content").clone().scatter(hits, after)
    return flat.with_columns(content), flat.get_column(C.ROW).gather(changed).unique()


def _unicode_form(values: pl.Series, form: str) -> pl.Series:
    # CPython's unicodedata has a quick check for already-normalised text, which nearly all
    # text is: about 30x faster than polars' str.normalize here.
    normalize = unicodedata.normalize
    return pl.Series(values.name, [v if v is None else normalize(form, v) for v in values.to_list()], dtype=pl.Utf8)


# a Markdown hard line break: trailing whitespace ending in two spaces, another non-blank line next
_HARD_BREAK = re.compile(r"[ \t]*  (?=\n[ \t]*[^\s])")
_TRAILING_WS = re.compile(r"[ \t]+(?=\n|\Z)")


def _strip_prose(segment: str) -> str:
    """Trailing whitespace of each line of prose removed, a hard line break made two spaces."""
    return _TRAILING_WS.sub(lambda m: "  " if _HARD_BREAK.match(segment, m.start()) else "", segment)


def strip_trailing_whitespace(text: str) -> str:
    """`text` (LF line ends) without trailing whitespace outside its fenced code blocks; the
    blocks' content lines are kept as written (their fence lines are stripped), a Markdown hard
    line break is two spaces, and the end of the text has no whitespace."""
    parts: list[str] = []
    prev = 0
    for start, end in block_spans(text):
        parts.append(_strip_prose(text[prev:start]))
        block = text[start:end]
        head, nl, body = block.partition("\n")
        parts.append(head.rstrip(" \t") + nl)
        if nl:
            # the closing fence line is the last line of a closed block; stripping it (or the
            # last code line of an unclosed one, at the end of the turn) changes no code
            inner, nl2, last = body.rpartition("\n")
            parts.append(inner + nl2 + last.rstrip(" \t") if nl2 else body)
        prev = end
    parts.append(_strip_prose(text[prev:]))
    return "".join(parts).rstrip()


def normalize_content(expr: pl.Expr, cfg: Config) -> pl.Expr:
    """Line ends, and trailing whitespace of turns that hold neither a fence nor a hard line
    break candidate, as a polars expression (the others go through `strip_trailing_whitespace`,
    the Unicode form is done apart)."""
    expr = expr.str.replace_all("\r\n", "\n", literal=True).str.replace_all("\r", "\n", literal=True)
    if cfg.strip_trailing_whitespace:
        expr = expr.str.replace_all(r"[ \t]+\n", "\n").str.strip_chars_end()
    return expr


def _needs_python(expr: pl.Expr) -> pl.Expr:
    """Turns the plain expression cannot normalise: a fence (```, ~~~) or two spaces before a line end."""
    return (
        expr.str.contains("```", literal=True)
        | expr.str.contains("~~~", literal=True)
        | expr.str.contains("  \n", literal=True)
    ).fill_null(False)


def normalize_messages(df: pl.DataFrame, cfg: Config) -> pl.DataFrame:
    """`df` with every turn's content normalised; rows, order and other columns unchanged."""
    fields = [f.name for f in C.MESSAGE.fields]
    flat = df.select(C.ROW, C.MESSAGES).explode(C.MESSAGES).unnest(C.MESSAGES)
    if cfg.remove_hidden_controls:
        flat, changed = _remove_hidden(flat)
        if len(changed) and C.WARNINGS in df.columns:
            note = pl.lit([f"{HIDDEN_WARNING}: bidi control or tag characters removed"], dtype=pl.List(pl.Utf8))
            df = df.with_columns(
                pl.when(pl.col(C.ROW).is_in(changed.implode()))
                .then(pl.col(C.WARNINGS).list.concat(note))
                .otherwise(pl.col(C.WARNINGS))
                .alias(C.WARNINGS)
            )
    if cfg.unicode_form:
        flat = flat.with_columns(_unicode_form(flat.get_column("content"), cfg.unicode_form))
    line_ends = Config(unicode_form=None, strip_trailing_whitespace=False)
    flat = flat.with_columns(normalize_content(pl.col("content"), line_ends))
    if cfg.strip_trailing_whitespace:
        # the plain expression on every turn, then the turns with a fence or a hard line break
        # candidate (a few percent) again through Python, from their unstripped text
        raw = flat.get_column("content")
        hits = flat.select(_needs_python(pl.col("content"))).to_series().arg_true()
        content = flat.select(normalize_content(pl.col("content"), cfg)).to_series()
        if len(hits):
            # scatter writes in place: on a clone of the column
            fixed = [strip_trailing_whitespace(t) for t in raw.gather(hits).to_list()]
            content = content.clone().scatter(hits, fixed)
        flat = flat.with_columns(content)
    nested = flat.group_by(C.ROW, maintain_order=True).agg(pl.struct(fields).alias(C.MESSAGES))
    return df.drop(C.MESSAGES).join(nested, on=C.ROW, how="left", maintain_order="left").select(df.columns)


def canonical_text(with_tools: bool = False) -> pl.Expr:
    """One string per conversation that changes whenever a role, content, weight or tool call does
    (and, `with_tools`, the tool definitions: appended after a group separator when not null, so
    the text of a record without them is the same as without the option).

    Fields are joined with ASCII unit/record separators, which validation guarantees never
    appear in content (control characters are rejected).
    """
    field = pl.element().struct.field
    turn = pl.concat_str(
        [
            field("role"),
            field("content"),
            field("weight").cast(pl.Utf8).fill_null(""),
            field("tool_calls").fill_null(""),
            field("tool_call_id").fill_null(""),
        ],
        separator="\x1f",
    )
    text = pl.col(C.MESSAGES).list.eval(turn).list.join("\x1e")
    if not with_tools:
        return text
    return pl.when(pl.col(C.TOOLS).is_null()).then(text).otherwise(pl.concat_str([text, pl.lit("\x1d"), pl.col(C.TOOLS)]))


def hash_texts(texts: list[str]) -> list[str]:
    """xxh3-128 hex of each text: stable across runs, platforms and polars versions."""
    digest = xxhash.xxh3_128_hexdigest
    return [digest(t.encode("utf-8")) for t in texts]


def run(df: pl.DataFrame, ctx: StageContext) -> pl.DataFrame:
    cfg: Config = ctx.config.normalize
    normalized = normalize_messages(df, cfg)
    texts = normalized.select(canonical_text(C.TOOLS in df.columns).fill_null("")).to_series().to_list()
    return normalized.with_columns(pl.Series(C.CONTENT_HASH, hash_texts(texts), dtype=pl.Utf8))
