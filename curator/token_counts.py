"""Token counts of many conversations without building their ids: the token-budget stage's fast path.

The stage needs, per conversation, only `n_tokens`, `n_assistant_tokens` and per-message counts,
not the ids. `TokenCounter.count` gives exactly what `ChatTokenizer.encode_batch` would give
(tests/test_token_counts.py checks every record of ../shared/data/chat), from the same segment plan
(`curator.tokenize_chat._plan_mistral_v1`) and the same `tokenizers` BPE, about twice as fast:

- **Units.** In the Mistral v1 SentencePiece vocabulary no piece holds a newline or has a "▁"
  (space) after any other character (checked when the counter is built: `splits_exactly`). So no
  token crosses the boundary before a run of "▁" that follows a non-"▁" character, nor either side
  of a "\\n": a segment's tokens are the concatenation of the tokens of its units
  `▁*[^▁\\n]+ | ▁+ | \\n`. BPE merges only pairs whose concatenation is a piece, so encoding each
  unit on its own gives the same ids as encoding the segment.
- **Reuse.** 50,000 chat records hold about 5 million units but only about 200,000 distinct ones,
  so each distinct unit is encoded once (one batched `tokenizers` call over all cores) and the
  counts are summed with Polars joins. Encoding whole segments instead runs BPE over every
  character of every segment, at about half the speed on the 50k corpus (bench/RESULTS.md).
- **Attribution.** A segment that holds several messages (the system prompt folded into the first
  user turn, merged consecutive turns) is cut where each message's text starts, which is just after
  a "\\n\\n" join: no token crosses there, so each piece's tokens are exactly those `encode`
  attributes to its message by character offset. A cut elsewhere (only next to an empty message)
  may split a token, so such a conversation is counted by `encode_batch` instead (`_safe_cut`).

Template-based profiles (every model but Mistral-7B-Instruct-v0.2's built-in one), and any
vocabulary for which the splitting property does not hold, are counted from `encode_batch_or_errors`.
"""

from __future__ import annotations

import re
from functools import lru_cache

import polars as pl
from tokenizers import Tokenizer

from curator import columns as C
from curator.tokenize_chat import ChatTokenizer, _plan_mistral_v1

__all__ = ["TokenCounter", "COUNT_SCHEMA"]

N_TOKENS = C.N_TOKENS
N_TRAINED = C.N_ASSISTANT_TOKENS
TURN_TOKENS = C.TURN_TOKENS
ERROR = "error"

COUNT_SCHEMA = {N_TOKENS: pl.Int64, N_TRAINED: pl.Int64, TURN_TOKENS: pl.List(pl.Int64), ERROR: pl.Utf8}

_UNIT = r"▁*[^▁\n]+|▁+|\n"


@lru_cache(maxsize=4)
def _unit_tokenizer(tok: ChatTokenizer) -> Tokenizer | None:
    """`tok`'s BPE without its normalizer (units arrive normalized), or None if units would differ."""
    if tok._template is not None:  # noqa: SLF001 (a template profile: no segment plan to count from)
        return None
    crossing = re.compile(r"[^▁]▁|\n")
    if any(crossing.search(piece) for piece in tok.tokenizer.get_vocab()):
        return None
    unit_tok = Tokenizer.from_str(tok.tokenizer.to_str())
    unit_tok.normalizer = None
    return unit_tok


def _safe_cut(text: str, at: int) -> bool:
    """Whether no token of `text` can cross position `at`: a unit boundary (see the module docstring)."""
    if at <= 0 or at >= len(text):
        return True
    before, after = text[at - 1], text[at]
    return before == "\n" or after == "\n" or (after == " " and before != " ")


def splits_exactly(tok: ChatTokenizer) -> bool:
    """Whether `tok` is counted by units (see the module docstring), rather than by full encodes."""
    return _unit_tokenizer(tok) is not None


class TokenCounter:
    """Counts conversations in batches; distinct units encoded in one batch are reused by the next."""

    def __init__(self, tok: ChatTokenizer) -> None:
        self.tok = tok
        self._unit_tok = _unit_tokenizer(tok)
        self._known = pl.DataFrame(schema={"u": pl.Utf8, "n": pl.Int64})

    def count(self, conversations: list[list[dict]], tools: list | None = None) -> pl.DataFrame:
        """One row per conversation, in order, with COUNT_SCHEMA's columns.

        `tools` holds each conversation's tool definitions (a list, JSON text or None), when given.
        `error` holds the chat template's refusal (counts null) for template profiles; the Mistral
        format gives every conversation a count.
        """
        if not conversations:
            return pl.DataFrame(schema=COUNT_SCHEMA)
        tools = [None] * len(conversations) if tools is None else tools
        if self._unit_tok is None:
            return _from_encodings(self.tok.encode_batch_or_errors(conversations, tools))
        return self._count_units(conversations, tools)

    def _count_units(self, conversations: list[list[dict]], tools: list) -> pl.DataFrame:
        # Pieces: (row, message, text, starts the segment, trained); BOS and EOS as fixed single tokens.
        p_row: list[int] = []
        p_msg: list[int] = []
        p_text: list[str] = []
        p_first: list[bool] = []
        p_trained: list[bool] = []
        f_row: list[int] = []
        f_msg: list[int] = []
        f_trained: list[bool] = []
        encode_rows: list[int] = []  # conversations cut where a token may cross: encoded instead
        for r, (conv, conv_tools) in enumerate(zip(conversations, tools)):
            plan = _plan_mistral_v1(conv, conv_tools)
            if not all(_safe_cut(seg.text, start) for seg in plan for _m, start in seg.parts[1:]):
                encode_rows.append(r)
                continue
            f_row.append(r)  # BOS, attributed to message 0
            f_msg.append(0)
            f_trained.append(False)
            for seg in plan:
                parts = seg.parts or [(0, 0)]
                last = len(parts) - 1
                for k, (m, start) in enumerate(parts):
                    p_row.append(r)
                    p_msg.append(m)
                    p_text.append(seg.text[start : parts[k + 1][1]] if k < last else seg.text[start:])
                    p_first.append(start == 0)  # the segment's dummy "▁" goes to the text at offset 0
                    p_trained.append(seg.trained)
                if seg.assistant:  # its EOS
                    f_row.append(r)
                    f_msg.append(parts[last][0])
                    f_trained.append(seg.trained)
        pieces = pl.DataFrame(
            {"row": p_row, "msg": p_msg, "text": p_text, "first": p_first, "trained": p_trained},
            schema={"row": pl.Int64, "msg": pl.Int64, "text": pl.Utf8, "first": pl.Boolean, "trained": pl.Boolean},
        )
        pieces = pieces.join(self._piece_counts(pieces.select("text", "first")), on=["text", "first"], how="left")
        fixed = pl.DataFrame(
            {"row": f_row, "msg": f_msg, "trained": f_trained, "n": [1] * len(f_row)},
            schema={"row": pl.Int64, "msg": pl.Int64, "trained": pl.Boolean, "n": pl.Int64},
        )
        tokens = pl.concat([pieces.select("row", "msg", "trained", "n"), fixed])
        per_msg = tokens.group_by("row", "msg").agg(
            pl.col("n").sum().alias("n"), pl.col("n").filter(pl.col("trained")).sum().alias("t")
        )
        # every message gets a count, 0 for those that own no token
        grid = (
            pl.DataFrame({"row": range(len(conversations)), "len": [len(c) for c in conversations]},
                         schema={"row": pl.Int64, "len": pl.Int64})
            .select("row", pl.int_ranges(0, "len", dtype=pl.Int64).alias("msg"))
            .explode("msg")
        )
        per_msg = grid.join(per_msg, on=["row", "msg"], how="left").with_columns(pl.col("n", "t").fill_null(0))
        counted = (
            per_msg.sort("row", "msg")
            .group_by("row", maintain_order=True)
            .agg(
                pl.col("n").sum().alias(N_TOKENS),
                pl.col("t").sum().alias(N_TRAINED),
                pl.col("n").alias(TURN_TOKENS),
            )
            .select("row", N_TOKENS, N_TRAINED, TURN_TOKENS, pl.lit(None, dtype=pl.Utf8).alias(ERROR))
        )
        if encode_rows:
            encoded = _from_encodings(
                self.tok.encode_batch_or_errors([conversations[r] for r in encode_rows], [tools[r] for r in encode_rows])
            )
            encoded = encoded.select(pl.Series("row", encode_rows, dtype=pl.Int64), pl.all())
            counted = pl.concat([counted.filter(~pl.col("row").is_in(encode_rows)), encoded]).sort("row")
        return counted.drop("row")

    def _piece_counts(self, pieces: pl.DataFrame) -> pl.DataFrame:
        """Tokens of each distinct (text, first) piece: the sum over its units."""
        keys = pieces.unique().with_row_index("k")
        # SentencePiece's normalization, as the tokenizer's normalizer does it: a dummy "▁" before
        # a segment's (non-empty) text, spaces as "▁"
        spaced = pl.col("text").str.replace_all(" ", "▁", literal=True)
        normalized = pl.when(pl.col("first") & (pl.col("text") != "")).then(pl.lit("▁") + spaced).otherwise(spaced)
        units = keys.select("k", normalized.str.extract_all(_UNIT).alias("u")).explode("u")
        counts = units.join(self._unit_counts(units.get_column("u")), on="u", how="left")
        per_key = counts.group_by("k").agg(pl.col("n").sum())  # an empty piece: its null unit counts 0
        return keys.join(per_key, on="k", how="left").select("text", "first", pl.col("n").fill_null(0))

    def _unit_counts(self, units: pl.Series) -> pl.DataFrame:
        new = units.drop_nulls().unique().to_frame("u").join(self._known, on="u", how="anti")
        if new.height:
            texts = new.get_column("u").to_list()
            encoded = self._unit_tok.encode_batch_fast(texts, add_special_tokens=False)  # type: ignore[union-attr]
            fresh = pl.DataFrame({"u": texts, "n": [len(e.ids) for e in encoded]}, schema={"u": pl.Utf8, "n": pl.Int64})
            self._known = pl.concat([self._known, fresh])
        return self._known


def _from_encodings(encoded: list) -> pl.DataFrame:
    ok = [not isinstance(e, str) for e in encoded]
    return pl.DataFrame(
        {
            N_TOKENS: [e.n_tokens if good else None for e, good in zip(encoded, ok)],
            N_TRAINED: [e.n_trained if good else None for e, good in zip(encoded, ok)],
            TURN_TOKENS: [e.turn_tokens if good else None for e, good in zip(encoded, ok)],
            ERROR: [None if good else e for e, good in zip(encoded, ok)],
        },
        schema=COUNT_SCHEMA,
    )
