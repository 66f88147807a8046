"""Chat-aware shingles: the sets near-duplicate detection compares.

A record's shingle set is built from the turns of the roles being compared, one turn at a time
(an n-gram never spans two turns, so moving text between turns is visible):

- Text is the normalised turn content (NFC, LF; see stages/normalize.py), lower-cased, cut into
  word tokens. Scripts written without spaces (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar)
  give one token per character, so Chinese and Japanese are shingled by characters; everything else
  gives one token per run of word characters (punctuation and whitespace are separators, so
  re-formatting does not change the set). This is the word tokenisation of datatrove's
  `simplify_text` + word n-grams and of text-dedup's MinHash, with the CJK rule of text-dedup's
  `ngrams(..., min_length)` for character-level scripts.
- A system prompt shared by many records is left out (`system_prompt="drop_shared"`), otherwise
  every record that shares it would look like a duplicate of every other.
- Each distinct token is hashed once with xxh3-64 (the `xxhash` package) over its UTF-8 bytes; an
  n-gram's 64-bit value is the polynomial (Rabin-Karp) combination of its token hashes modulo 2**64, so
  no per-shingle Python call is needed. datasketch's MinHash pre-mixes every input with the MurmurHash3
  finalizer before permuting it, so the combination needs no extra avalanche step. Exact Jaccard is
  computed on these 64-bit values (a false match needs a 64-bit collision).
- A turn shorter than n tokens becomes one shingle (all its tokens), as in text-dedup, so a two-word
  turn still counts.

Every function here is columnar: tokenisation is one Polars expression over all turns, n-gram hashes
are numpy over the flat token array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import xxhash

# One token per character for scripts written without spaces; other word-character runs are one token.
_NO_SPACE_SCRIPTS = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}"
TOKEN_PATTERN = rf"[{_NO_SPACE_SCRIPTS}]|[^\W{_NO_SPACE_SCRIPTS}]+"

# Multiplier of the polynomial n-gram hash: the 64-bit golden-ratio constant (odd, so multiplying by
# it is a bijection modulo 2**64), as used by Fibonacci hashing.
_POLY = np.uint64(0x9E3779B97F4A7C15)

SYSTEM_PROMPT_POLICIES = ("drop_shared", "keep", "drop")


@dataclass(frozen=True)
class Turns:
    """The tokenised turns of a frame, flat.

    `record[t]`, `role[t]`, `start[t]`, `length[t]` describe turn t (turns are in record order);
    its token hashes are `tokens[start[t]:start[t] + length[t]]`.
    """

    n_records: int
    record: np.ndarray  # int64
    role: np.ndarray  # object (str)
    start: np.ndarray  # int64
    length: np.ndarray  # int64
    tokens: np.ndarray  # uint64, xxh3-64 of each token
    dropped_system_prompts: int  # distinct shared system prompts left out

    def words(self, mask: np.ndarray | None = None) -> np.ndarray:
        """Tokens per record, over the turns in `mask` (all turns when None)."""
        lengths = self.length if mask is None else np.where(mask, self.length, 0)
        return np.bincount(self.record, weights=lengths, minlength=self.n_records).astype(np.int64)


@dataclass(frozen=True)
class ShingleSets:
    """One shingle multiset per record, flat: record i's values are `hashes[offsets[i]:offsets[i+1]]`."""

    hashes: np.ndarray  # uint64
    offsets: np.ndarray  # int64, n_records + 1

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def raw(self, i: int) -> np.ndarray:
        return self.hashes[self.offsets[i] : self.offsets[i + 1]]

    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def set_of(self, i: int) -> np.ndarray:
        """Record i's shingle set as a sorted unique array (for `jaccard`)."""
        return np.unique(self.raw(i))


def _turn_frame(messages: pl.Series, roles: list[str] | tuple[str, ...]) -> pl.DataFrame:
    """One row per turn of `roles`: record index, role and content (null content as "")."""
    return (
        pl.DataFrame({"_rec": np.arange(len(messages), dtype=np.int64), "_m": messages})
        .explode("_m")
        .filter(pl.col("_m").is_not_null())
        .select(
            "_rec",
            pl.col("_m").struct.field("role").alias("_role"),
            pl.col("_m").struct.field("content").fill_null("").alias("_content"),
        )
        .filter(pl.col("_role").is_in(list(roles)))
    )


# A system prompt is known by two 64-bit hashes of its text (a false match needs a 128-bit collision), so
# prompts can be counted chunk by chunk without keeping their text.
_PROMPT_KEY = ("_h0", "_h1")


def _with_prompt_key(turns: pl.DataFrame) -> pl.DataFrame:
    return turns.with_columns(
        pl.col("_content").hash(seed=0).alias("_h0"), pl.col("_content").hash(seed=1).alias("_h1")
    )


def system_prompt_counts(messages: pl.Series) -> pl.DataFrame:
    """(_h0, _h1, records): each distinct system prompt of `messages`, by key, and the records holding it.
    Records of different calls are different records, so counts of chunks add up."""
    system = _with_prompt_key(_turn_frame(messages, ["system"]))
    return system.group_by(*_PROMPT_KEY).agg(pl.col("_rec").n_unique().alias("records"))


def shared_system_prompts(counts: list[pl.DataFrame], min_records: int) -> pl.DataFrame:
    """The keys (_h0, _h1) of the system prompts held by at least `min_records` records, from chunk counts."""
    total = pl.concat(counts).group_by(*_PROMPT_KEY).agg(pl.col("records").sum())
    return total.filter(pl.col("records") >= min_records).select(*_PROMPT_KEY)


def tokenize_turns(
    messages: pl.Series,
    roles: list[str] | tuple[str, ...],
    system_prompt: str = "drop_shared",
    shared_system_min_records: int = 2,
    shared: pl.DataFrame | None = None,
) -> Turns:
    """Tokenise the turns of `roles` in `messages` (a List(MESSAGE) Series, one entry per record).

    With `system_prompt="drop_shared"`, a system prompt whose exact normalised text occurs in at least
    `shared_system_min_records` records is left out (`shared`: the keys of those prompts, counted over
    more records than `messages` by `shared_system_prompts`; None: counted in `messages`); "drop" leaves
    every system prompt out, "keep" keeps them all (both only matter when "system" is in `roles`).
    """
    if system_prompt not in SYSTEM_PROMPT_POLICIES:
        raise ValueError(f"system_prompt must be one of {', '.join(SYSTEM_PROMPT_POLICIES)}, got {system_prompt!r}")
    n = len(messages)
    turns = _turn_frame(messages, roles)
    dropped = 0
    if "system" in roles and system_prompt != "keep":
        is_system = pl.col("_role") == "system"
        if system_prompt == "drop":
            turns = turns.filter(~is_system)
        else:
            if shared is None:
                shared = shared_system_prompts([system_prompt_counts(messages)], shared_system_min_records)
            dropped = shared.height
            marked = _with_prompt_key(turns).join(
                shared.with_columns(pl.lit(True).alias("_shared")), on=list(_PROMPT_KEY), how="left",
                maintain_order="left",
            )
            turns = marked.filter(~(is_system & pl.col("_shared").fill_null(False))).select(turns.columns)
    token_lists = turns.select(pl.col("_content").str.to_lowercase().str.extract_all(TOKEN_PATTERN)).to_series()
    length = token_lists.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = token_lists.explode().drop_nulls()
    if len(flat):
        # Hash each distinct token once: a Categorical cast gives every token its dictionary code (exact, no
        # hashing), then the codes index a table of the distinct tokens' xxh3 values (replace_strict on the
        # strings cost 2.4x more on the 50k corpus).
        cat = flat.cast(pl.Categorical)
        codes = cat.to_physical().to_numpy()
        distinct = cat.unique()
        distinct_codes = distinct.to_physical().to_numpy()
        table = np.zeros(int(distinct_codes.max()) + 1, dtype=np.uint64)
        table[distinct_codes] = np.fromiter(
            (xxhash.xxh3_64_intdigest(t.encode("utf-8")) for t in distinct.cast(pl.Utf8).to_list()),
            dtype=np.uint64,
            count=len(distinct),
        )
        tokens = table[codes]
    else:
        tokens = np.zeros(0, dtype=np.uint64)
    start = np.zeros(len(length), dtype=np.int64)
    if len(length):
        start[1:] = np.cumsum(length)[:-1]
    return Turns(
        n_records=n,
        record=turns.get_column("_rec").to_numpy().astype(np.int64),
        role=turns.get_column("_role").to_numpy(),
        start=start,
        length=length,
        tokens=np.ascontiguousarray(tokens, dtype=np.uint64),
        dropped_system_prompts=dropped,
    )


def shingle(turns: Turns, n_per_record: np.ndarray | int, turn_mask: np.ndarray | None = None) -> ShingleSets:
    """Word n-gram hashes of each record, n given per record (`n_per_record`) or for all.

    Only turns in `turn_mask` count. A turn shorter than its n is one shingle of all its tokens.
    """
    n_rec = np.broadcast_to(np.asarray(n_per_record, dtype=np.int64), (turns.n_records,))
    use = turns.length > 0 if turn_mask is None else (turns.length > 0) & turn_mask
    t_idx = np.flatnonzero(use)
    t_len = turns.length[t_idx]
    t_n = np.minimum(n_rec[turns.record[t_idx]], t_len)  # a short turn is one shingle
    per_turn = t_len - t_n + 1
    total = int(per_turn.sum())
    owner = np.repeat(np.arange(len(t_idx)), per_turn)  # which used turn each shingle belongs to
    first = np.zeros(len(t_idx), dtype=np.int64)
    if len(t_idx):
        first[1:] = np.cumsum(per_turn)[:-1]
    pos = turns.start[t_idx][owner] + (np.arange(total, dtype=np.int64) - first[owner])
    n_pos = t_n[owner]
    tok = turns.tokens
    values = tok[pos].copy()
    longest = int(n_pos.max()) if total else 0
    uniform = total and int(n_pos.min()) == longest
    for k in range(1, longest):
        if uniform:  # the common case: every turn is long enough, no masking needed
            values = values * _POLY + tok[pos + k]
        else:
            more = n_pos > k
            values[more] = values[more] * _POLY + tok[pos[more] + k]
    rec_of = turns.record[t_idx][owner]
    offsets = np.searchsorted(rec_of, np.arange(turns.n_records + 1), side="left").astype(np.int64)
    return ShingleSets(hashes=values, offsets=offsets)


def distinct_tokens(turns: Turns, turn_mask: np.ndarray | None = None) -> np.ndarray:
    """Distinct tokens of each record over the turns in `turn_mask` (all when None), int64 per record.

    A cheap lower bound on a record's distinct n-grams: each token's first occurrence in the record at a
    position >= n - 1 of its turn ends an n-gram no earlier one equals (it holds a token not seen before), so a
    record has at least `distinct_tokens - (n - 1) * turns` distinct n-grams (`turns`: its turns with tokens).
    """
    use = turns.length > 0 if turn_mask is None else (turns.length > 0) & turn_mask
    lengths = turns.length[use]
    out = np.zeros(turns.n_records, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return out
    first = np.cumsum(lengths) - lengths
    index = np.repeat(turns.start[use] - first, lengths) + np.arange(total, dtype=np.int64)
    counts = (
        pl.DataFrame({"r": np.repeat(turns.record[use], lengths), "t": turns.tokens[index]})
        .group_by("r")
        .agg(pl.col("t").n_unique())
    )
    out[counts.get_column("r").to_numpy()] = counts.get_column("t").to_numpy()
    return out


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard |A & B| / |A | B| of two shingle sets given as sorted unique arrays; 0.0 when both are empty."""
    if len(a) > len(b):
        a, b = b, a
    if len(b) == 0:
        return 0.0
    if len(a) == 0:
        return 0.0
    at = np.searchsorted(b, a)
    at[at == len(b)] = 0
    inter = int(np.count_nonzero(b[at] == a))
    return inter / (len(a) + len(b) - inter)


# ---------------------------------------------------------------------------------- sets and intersections
#
# Exact Jaccard for many pairs at once. numpy sorts the rows of a 2-D array with its SIMD sort, so segments
# (one record's shingles, or the two sets of one pair) are sorted as rows of blocks padded to a power-of-two
# width, one block per width: a few array calls instead of one `np.unique` per record and pair.

_PAD = np.iinfo(np.uint64).max  # sorts last; a real value equal to it is told apart by the row's length
_MIN_WIDTH = 16
_BLOCK_VALUES = 1 << 22  # values per block (32 MiB of uint64), bounding the padded copies' memory


@dataclass(frozen=True)
class SortedSets:
    """Each record's distinct shingle values, ascending: record i's are `values[offsets[i]:offsets[i+1]]`."""

    values: np.ndarray  # uint64
    offsets: np.ndarray  # int64, n_records + 1

    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def set_of(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]


def _row_blocks(widths_of: np.ndarray):
    """(row indices, width) blocks: the rows of each power-of-two width, cut to at most _BLOCK_VALUES values."""
    width = np.full(len(widths_of), _MIN_WIDTH, dtype=np.int64)
    big = widths_of > _MIN_WIDTH
    width[big] = 1 << np.ceil(np.log2(widths_of[big])).astype(np.int64)
    width[width < widths_of] *= 2  # guard against rounding in log2
    for w in np.unique(width):
        rows = np.flatnonzero(width == w)
        per = max(1, _BLOCK_VALUES // int(w))
        for lo in range(0, len(rows), per):
            yield rows[lo : lo + per], int(w)


def _fill(block: np.ndarray, values: np.ndarray, starts: np.ndarray, lengths: np.ndarray, col0: np.ndarray) -> None:
    """block[r, col0[r] + k] = values[starts[r] + k] for k < lengths[r]."""
    total = int(lengths.sum())
    if total == 0:
        return
    # Flat positions: one repeat per segment start, plus the offset inside the segment.
    first = np.cumsum(lengths) - lengths
    k = np.arange(total, dtype=np.int64) - np.repeat(first, lengths)
    block.reshape(-1)[np.repeat(np.arange(len(lengths)) * block.shape[1] + col0, lengths) + k] = values[
        np.repeat(starts, lengths) + k
    ]


def sorted_sets(sets: ShingleSets, records: np.ndarray | None = None) -> SortedSets:
    """The distinct values of each record's shingles in `records` (all when None), ascending; others are empty."""
    n = len(sets)
    lengths = sets.sizes()
    if records is not None:
        keep = np.zeros(n, dtype=bool)
        keep[records] = True
        lengths = np.where(keep, lengths, 0)
    chosen = np.flatnonzero(lengths > 0)
    out_len = np.zeros(n, dtype=np.int64)
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    for rows, w in _row_blocks(lengths[chosen]):
        rec = chosen[rows]
        block = np.full((len(rec), w), _PAD, dtype=np.uint64)
        _fill(block, sets.hashes, sets.offsets[rec], lengths[rec], np.zeros(len(rec), np.int64))
        block.sort(axis=1)
        keep = np.arange(w)[None, :] < lengths[rec][:, None]
        keep[:, 1:] &= block[:, 1:] != block[:, :-1]
        out_len[rec] = keep.sum(axis=1)
        parts.append((rec, block[keep]))
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(out_len, out=offsets[1:])
    values = np.empty(int(offsets[-1]), dtype=np.uint64)
    for rec, vals in parts:
        lens = out_len[rec]
        pos = np.repeat(offsets[rec] - (np.cumsum(lens) - lens), lens) + np.arange(len(vals), dtype=np.int64)
        values[pos] = vals
    return SortedSets(values=values, offsets=offsets)


def merge_sorted_sets(a: SortedSets, b: SortedSets) -> SortedSets:
    """Records' sets from `a`, or from `b` where `a`'s is empty (the two cover different records)."""
    la, lb = a.sizes(), b.sizes()
    lb = np.where(la > 0, 0, lb)
    offsets = np.zeros(len(la) + 1, dtype=np.int64)
    np.cumsum(la + lb, out=offsets[1:])
    values = np.empty(int(offsets[-1]), dtype=np.uint64)
    for src, lens in ((a, la), (b, lb)):
        total = int(lens.sum())
        if total:
            rec = np.repeat(np.arange(len(lens)), lens)
            k = np.arange(total, dtype=np.int64) - (np.cumsum(lens) - lens)[rec]
            values[offsets[rec] + k] = src.values[src.offsets[rec] + k]
    return SortedSets(values=values, offsets=offsets)


def jaccard_many(sets: SortedSets, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Exact Jaccard of each pair (i[p], j[p]), as `jaccard` gives it (0.0 when either set is empty).

    The two distinct-value sets of a pair are sorted together as one row; each common value is then one
    adjacent equal pair, so |A & B| is the count of those.
    """
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    a, b = sets.sizes()[i], sets.sizes()[j]
    inter = np.zeros(len(i), dtype=np.int64)
    both = np.flatnonzero((a > 0) & (b > 0))
    for rows, w in _row_blocks(a[both] + b[both]):
        p = both[rows]
        block = np.full((len(p), w), _PAD, dtype=np.uint64)
        _fill(block, sets.values, sets.offsets[i[p]], a[p], np.zeros(len(p), np.int64))
        _fill(block, sets.values, sets.offsets[j[p]], b[p], a[p])
        block.sort(axis=1)
        same = (block[:, 1:] == block[:, :-1]) & (np.arange(1, w)[None, :] < (a[p] + b[p])[:, None])
        inter[p] = same.sum(axis=1)
    out = np.zeros(len(i), dtype=np.float64)
    out[both] = inter[both] / (a[both] + b[both] - inter[both])
    return out
