"""Near-duplicate clusters with MinHash LSH, prompt conflicts, and split keys that keep clusters whole (issue 3).

Reads: `messages`, `row`, `ref`, `content_hash`; when present, `quality_score` (quality stage) and
`n_assistant_tokens` (tokens stage), to choose the copy each cluster keeps.
Writes: `near_dup_cluster` Int64 (null for singletons), `near_dup_of` Utf8 (ref of the copy kept for a removed
record, null on kept records), `near_dup_jaccard` Float64 (exact Jaccard to that copy), `prompt_conflict`
Boolean (member of a group whose prompt is answered differently), `split_key` Utf8 (set on every cluster and
same-prompt group member, null otherwise).
Rejects: `dup.near` (detail: the kept ref, the exact and the MinHash-estimated Jaccard) and, under the
`keep_best`/`reject` policies, `dup.prompt_conflict`.
Artifacts: `duplicates.jsonl`, one line per near-duplicate cluster (`near_dup`) and per same-prompt group
(`prompt_conflict`, or `same_answer` when every member gives the best copy's answer) with every member.
Manifest: hash scheme, seed, num_perm, bands/rows per view, the answer check. Summary: cluster statistics;
`{"enabled": false}` alone when the stage is disabled.

How (MinHash LSH as in Broder 1997 and Leskovec, Rajaraman & Ullman, "Mining of Massive Datasets",
ch. 3; the same pipeline as datatrove's and text-dedup's MinHash dedup, plus exact verification):

1. Shingles (curator/shingles.py): word n-grams (default 5, as datatrove and text-dedup) over the user and
   assistant turns, shared system prompts left out.
2. Signatures: datasketch's MinHash, scheme "affine32" (its default), `num_perm` permutations drawn from
   `seed` by datasketch; computed for all records at once, one permutation at a time, bit for bit what
   `MinHash.bulk` returns (tested), because MinHash.bulk's per-record objects cost 6x more time.
3. Candidates: LSH banding with (bands, rows) chosen here, not by datasketch's default
   optimiser (which weighs false positives and negatives equally and gives 9 bands x 13 rows at 0.8/128, recall 0.40 at
   the threshold): the (b, r) with b*r <= num_perm whose recall at the threshold, 1 - (1 - t^r)^b, is at least
   `min_recall_at_threshold` and whose false-positive area (datasketch's integral of the candidate
   probability below the threshold) is smallest. Candidates cost only verification time; misses are lost.
4. Verification: every candidate pair's exact Jaccard on the shingle sets; only pairs >= threshold are edges,
   and only when their answers agree too: the exact Jaccard of their assistant turns (`AnswerSets`, at the
   n the shorter answer calls for) must reach `answer_threshold`. Without it a long prompt shared by records
   with different answers (a document with questions, one exercise solved in several languages) outweighs
   the answers and all but one are lost; such pairs go to the prompt view below, and the prompt-conflict
   policy decides.
5. Clusters: union-find over the edges (connected components, as datatrove's MinhashDedupCluster). A
   cluster can be a chain (A~B, B~C, A far from C: templated prompts do this), so membership alone removes
   nothing.
6. Removal (`remove_against_kept`): each cluster keeps its best copy and removes only the members verified
   against that copy (exact Jaccard at the pair's n, and the answer check); the rest of the cluster goes
   through the same step until fewer than two records are left, so a chain keeps its far end. Every removed
   record is within the threshold of the copy kept for it, never only through a chain; duplicates.jsonl gives
   each member the copy it was removed for (`of`) and each cluster its lowest such Jaccard (`min_jaccard`).
   Best copy: highest `quality_score`, then most `n_assistant_tokens` (more supervised signal), then first
   seen (`row`); missing columns or nulls rank last.

Short records: with n-grams, one changed word removes n shingles, so a text of L tokens drops below
threshold t after a single substitution once L < 2n / (1 - t) - 1 (49 tokens for n=5, t=0.8). Records shorter
than `short_record_words` (default: that bound, in exact decimals) are compared with `short_ngram`-grams
instead. A pair is judged at the n of its shorter member, so the "short" view also signs every longer record
that can be within Jaccard t of a short one: Jaccard bounds set sizes (|A| / |B| >= J), so those whose number of
distinct short-n shingles is at most the largest short record's divided by t. The bound is on distinct shingles,
not words: repetition (an answer said twice, an exchange repeated) makes a long record's set small. The view's
pairs count only when one member is below the bound.

Prompt conflicts ("same prompt, different answers"): a third view shingles only the user turns, whatever
`roles` says (`prompt_ngram`, default 2: prompts are short, median 12 to 43 tokens in ../shared/data) and finds
pairs with prompt Jaccard >= `prompt_threshold`. The clusters' best copies of such records that are not in one
near-duplicate cluster form a same-prompt group (union-find again). Each member's answer is compared with the
group's best copy's (same order as above; answer Jaccard >= `answer_threshold` is "the same answer"). A group
whose members all give the best copy's answer is no conflict (they differ elsewhere, e.g. in a system prompt of
their own): kept, shown as `same_answer`. Otherwise it is a conflict group, every member flagged
(`prompt_conflict`); policy `keep_all` keeps them, `keep_best` keeps the best copy and the copies giving its
answer and rejects the others, `reject` rejects the whole group. Details name the answer Jaccard.

Split key: the `content_hash` of the best copy of the member's cluster (copies kept apart from a chain stay on
its side: they are close to what was removed), or of the best copy of its same-prompt group (conflict or not).
The split stage hashes `split_key`, else `content_hash`, so a kept copy that is alone
in its group keeps exactly the side its own content gives it, whatever else is added later; only extra kept
members of a same-prompt group follow their group's best copy. Limits: when new data brings a better copy into a
cluster, the new copy is kept on its own side and the old one is rejected (nothing moves to the other side); when
it brings a better copy into a same-prompt group kept whole, the group follows the new best copy and its old
members may change side; when new data bridges two groups, the merged group follows one key.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import polars as pl

from curator import columns as C
from curator.columns import with_reject
from curator.shingles import (
    ShingleSets,
    SortedSets,
    Turns,
    distinct_tokens,
    jaccard_many,
    merge_sorted_sets,
    shingle,
    sorted_sets,
    tokenize_turns,
)
from curator.stages.base import StageContext
from curator.lsh_params import band_options
from curator.stage_configs import DedupMinhashConfig as Config  # noqa: F401  (re-exported: the stage's settings)

NAME = "dedup_minhash"

NEAR_DUP_CLUSTER = "near_dup_cluster"
NEAR_DUP_OF = "near_dup_of"
NEAR_DUP_JACCARD = "near_dup_jaccard"
PROMPT_CONFLICT = "prompt_conflict"
QUALITY_SCORE = "quality_score"
N_ASSISTANT_TOKENS = "n_assistant_tokens"

SCHEME = "affine32"
ARTIFACT = "duplicates.jsonl"


# --------------------------------------------------------------------------------------------- LSH parameters


@dataclass(frozen=True)
class Bands:
    bands: int
    rows: int
    recall_at_threshold: float
    false_positive_area: float
    false_negative_area: float


def choose_bands(threshold: float, num_perm: int, min_recall: float = 0.99) -> Bands:
    """The (bands, rows) with bands*rows <= num_perm, recall >= `min_recall` at `threshold`, least false positives.

    For each band size r the fewest bands reaching the recall are taken (`band_options`); among those, the
    smallest false-positive area wins, computed with datasketch's own integrals (the ones its MinHashLSH
    optimiser uses).
    """
    options = band_options(threshold, num_perm, min_recall)
    if not options:
        raise ValueError(
            f"dedup_minhash: no LSH bands reach recall {min_recall} at threshold {threshold} with "
            f"num_perm={num_perm}; raise num_perm or lower min_recall_at_threshold"
        )
    from datasketch.lsh import _false_negative_probability, _false_positive_probability

    best: Bands | None = None
    for b, r in options:
        candidate = Bands(
            bands=b,
            rows=r,
            recall_at_threshold=1.0 - (1.0 - threshold**r) ** b,
            false_positive_area=_false_positive_probability(threshold, b, r),
            false_negative_area=_false_negative_probability(threshold, b, r),
        )
        if best is None or candidate.false_positive_area < best.false_positive_area:
            best = candidate
    assert best is not None
    return best


# ------------------------------------------------------------------------------------------------ signatures


def minhash_permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) of datasketch's affine32 permutations for this seed: the ones `MinHash(num_perm, seed)` uses."""
    from datasketch import MinHash

    a, b = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations
    return a.astype(np.uint32), b.astype(np.uint32)


def minhash_inputs(values: np.ndarray) -> np.ndarray:
    """The 32-bit MinHash input of 64-bit shingle values: high half xor low half.

    "affine32" is datasketch's default scheme; 64-bit inputs (affine64) only pay off for sets of about 10^8
    elements (datasketch's docs), while the exact verification below uses the full 64-bit values anyway.
    """
    return ((values >> np.uint64(32)) ^ values).astype(np.uint32)


def signatures(sets: ShingleSets, members: np.ndarray, num_perm: int, seed: int, workers: int = 1) -> np.ndarray:
    """MinHash signatures of the non-empty sets `members`, shape (num_perm, len(members)), uint32.

    Bit for bit what datasketch's `MinHash.bulk(..., scheme="affine32")` gives for the same inputs (the
    tests check it), computed one permutation at a time over all records (`minimum.reduceat`), because
    MinHash.bulk builds one MinHash object per record: on 50,000 records its per-record Python overhead made
    it 6x slower than this on the reference box. Permutations are shared out to `workers` threads (numpy
    releases the GIL inside these array operations).
    """
    from datasketch.minhash import _fmix  # the MurmurHash3 finalizer datasketch pre-mixes inputs with

    a, b = minhash_permutations(num_perm, seed)
    starts = sets.offsets[members]
    lengths = sets.offsets[members + 1] - starts
    if len(members) == 0:
        return np.zeros((num_perm, 0), dtype=np.uint32)
    if np.any(lengths == 0):
        raise ValueError("signatures: every member must have at least one shingle")
    # Gather the members' values into one contiguous array (a no-op copy when every record is a member).
    first = np.zeros(len(members), dtype=np.int64)
    first[1:] = np.cumsum(lengths)[:-1]
    index = np.repeat(starts - first, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
    mixed = _fmix(minhash_inputs(sets.hashes[index]), 32)
    out = np.empty((num_perm, len(members)), dtype=np.uint32)

    def fill(perms: range) -> None:
        for k in perms:
            out[k] = np.minimum.reduceat(mixed * a[k] + b[k], first)

    parts = [range(w, num_perm, workers) for w in range(workers)]
    if workers == 1:
        fill(parts[0])
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(fill, parts))
    return out


# ----------------------------------------------------------------------------------------------- LSH + verify

# A band shared by more records than this (boilerplate) yields a star and a chain, not every pair.
_MAX_BUCKET_PAIRS = 256


def band_pairs(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Candidate pairs (column indices i < j of `sig`) that agree on every row of at least one band.

    The LSH banding of Leskovec et al., ch. 3.4, as datasketch's MinHashLSH buckets it, done with a sort per
    band instead of one dict insert per record and band (datasketch's index took most of the stage's time).
    Returns unique pairs as an (m, 2) int64 array, sorted.
    """
    n = sig.shape[1]
    codes = []
    for band in range(bands):
        block = sig[band * rows : (band + 1) * rows].astype(np.uint64)
        key = block[0].copy()
        for row in block[1:]:
            key = key * _BAND_MIX + row
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        cut = np.flatnonzero(sorted_key[1:] != sorted_key[:-1]) + 1
        run_start = np.concatenate(([0], cut))
        run_len = np.diff(np.concatenate((run_start, [n])))
        for size in np.unique(run_len[run_len > 1]):
            starts = run_start[run_len == size]
            if size <= _MAX_BUCKET_PAIRS:
                x, y = np.triu_indices(int(size), 1)
            else:  # star on the first member plus the chain of neighbours
                x = np.concatenate((np.zeros(size - 1, np.int64), np.arange(1, size - 1)))
                y = np.concatenate((np.arange(1, size), np.arange(2, size)))
            i = order[starts[:, None] + x[None, :]].ravel()
            j = order[starts[:, None] + y[None, :]].ravel()
            lo, hi = np.minimum(i, j), np.maximum(i, j)
            codes.append(lo.astype(np.int64) * n + hi)
    if not codes:
        return np.zeros((0, 2), dtype=np.int64)
    unique = np.unique(np.concatenate(codes))
    return np.stack((unique // n, unique % n), axis=1)


# Odd 64-bit multiplier folding a band's rows into one key (a collision only adds a candidate).
_BAND_MIX = np.uint64(0xBF58476D1CE4E5B9)


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving and union by size."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return True


@dataclass
class View:
    """One way of comparing records: their shingle sets, the records signed, and the LSH parameters."""

    name: str
    ngram: int
    sets: ShingleSets
    members: np.ndarray  # record indices with a non-empty set that take part
    threshold: float
    bands: Bands
    sig: np.ndarray | None = None  # (num_perm, len(members))
    sig_col: np.ndarray | None = None  # record index -> column of `sig`, -1 when not signed
    distinct: SortedSets | None = None  # at least the members' sets (distinct values, sorted), for exact Jaccard
    candidates: int = 0
    verified: int = 0
    answer_dropped: np.ndarray | None = None  # (m, 2) pairs at or above the threshold whose answers differ

    def prepare(self) -> None:
        self.distinct = sorted_sets(self.sets, self.members)

    def add_sets(self, extra: ShingleSets) -> None:
        """Make the sets of records outside `members` available to `exact` (taken from `extra`)."""
        assert self.distinct is not None
        sizes = self.distinct.sizes()
        need = np.flatnonzero((sizes == 0) & (extra.sizes() > 0))
        if len(need):
            self.distinct = merge_sorted_sets(self.distinct, sorted_sets(extra, need))

    def exact(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Exact Jaccard of the shingle sets (64-bit values) of each pair (i[p], j[p])."""
        assert self.distinct is not None
        return jaccard_many(self.distinct, i, j)

    def estimate(self, i: np.ndarray, j: np.ndarray) -> list[float | None]:
        """MinHash estimates: the share of permutations whose minima agree (null when one is not signed)."""
        if self.sig is None or self.sig_col is None:
            return [None] * len(i)
        a, b = self.sig_col[i], self.sig_col[j]
        ok = (a >= 0) & (b >= 0)
        est = agreements(self.sig, np.stack((a[ok], b[ok]), axis=1)) / self.sig.shape[0]
        out: list[float | None] = [None] * len(i)
        for k, e in zip(np.flatnonzero(ok).tolist(), est.tolist()):
            out[k] = e
        return out

    def sign(self, num_perm: int, seed: int, workers: int) -> None:
        assert self.distinct is not None
        # The minimum over a multiset is the minimum over its distinct values, so the signature is the same.
        distinct = ShingleSets(self.distinct.values, self.distinct.offsets)
        self.sig = signatures(distinct, self.members, num_perm, seed, workers)
        self.sig_col = np.full(len(self.sets), -1, dtype=np.int64)
        self.sig_col[self.members] = np.arange(len(self.members))


# A candidate is verified only when its MinHash estimate could come from a pair at the threshold: the
# agreement count X of k permutations is Binomial(k, J) (Broder 1997), and the cut-off is the largest count
# with P(X < cut | J = threshold) <= PREFILTER_MISS. Candidates below it are LSH false positives.
PREFILTER_MISS = 1e-4


def min_agreement(num_perm: int, threshold: float, miss: float = PREFILTER_MISS) -> int:
    """Largest c with P(Binomial(num_perm, threshold) < c) <= miss."""
    cdf, c = 0.0, 0
    for x in range(num_perm + 1):
        cdf += math.comb(num_perm, x) * threshold**x * (1.0 - threshold) ** (num_perm - x)
        if cdf > miss:
            break
        c = x + 1
    return c


def agreements(sig: np.ndarray, cols: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """For each column pair, how many permutations give both the same minimum."""
    out = np.empty(len(cols), dtype=np.int64)
    for lo in range(0, len(cols), chunk):
        part = cols[lo : lo + chunk]
        out[lo : lo + chunk] = np.count_nonzero(sig[:, part[:, 0]] == sig[:, part[:, 1]], axis=0)
    return out


class AnswerSets:
    """Exact Jaccard of two records' answers (their assistant turns, whatever `roles` says).

    Near-duplicate edges need it (`answer_threshold`): the whole-record Jaccard of two records sharing a long
    prompt (a document, a task statement) stays high whatever their answers say. A pair's answers are compared
    at the n-gram the shorter answer calls for, by the rule records follow: `short_ngram` below `short_words`
    tokens, else `ngram`. Sets are built only for the records asked about, once per n. Two answers without any
    token agree (1.0); one without against one with is 0.0.
    """

    def __init__(self, turns: Turns, cfg: Config) -> None:
        self.turns = turns
        self.mask = turns.role == "assistant"
        self.words = turns.words(self.mask)
        self.short_words = cfg.short_words()
        self.short_ngram, self.ngram = cfg.short_ngram, cfg.ngram
        self._sets: dict[int, SortedSets] = {}

    def _distinct(self, n: int, records: np.ndarray) -> SortedSets:
        have = self._sets.get(n)
        need = np.zeros(self.turns.n_records, dtype=bool)
        need[records] = True
        need &= self.words > 0
        if have is not None:
            need &= have.sizes() == 0
        if need.any() or have is None:
            new = sorted_sets(shingle(self.turns, n, self.mask & need[self.turns.record]))
            have = new if have is None else merge_sorted_sets(have, new)
            self._sets[n] = have
        return have

    def jaccard(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Exact answer Jaccard of each pair (i[p], j[p])."""
        i = np.asarray(i, dtype=np.int64)
        j = np.asarray(j, dtype=np.int64)
        out = np.zeros(len(i), dtype=np.float64)
        short = np.minimum(self.words[i], self.words[j]) < self.short_words
        for n, sel in ((self.short_ngram, short), (self.ngram, ~short)):
            if sel.any():
                out[sel] = jaccard_many(self._distinct(n, np.concatenate((i[sel], j[sel]))), i[sel], j[sel])
        out[(self.words[i] == 0) & (self.words[j] == 0)] = 1.0
        return out


def find_edges(
    view: View, accept: np.ndarray | None = None, answers: AnswerSets | None = None, answer_threshold: float = 0.0
) -> list[tuple[int, int, float]]:
    """Verified pairs (i, j, exact Jaccard >= threshold), i < j record indices, from the view's LSH candidates.

    `accept` (bool per record) keeps only candidates with at least one accepted member. A candidate whose
    MinHash estimate is below the binomial cut-off, or whose two records are already connected (it cannot
    change a component), is not verified. With `answers`, a pair at or above the threshold is an edge only
    when its answer Jaccard is at least `answer_threshold` too; the others are kept in `view.answer_dropped`.
    """
    assert view.sig is not None
    cols = band_pairs(view.sig, view.bands.bands, view.bands.rows)
    view.candidates = len(cols)
    if accept is not None:
        cols = cols[accept[view.members[cols[:, 0]]] | accept[view.members[cols[:, 1]]]]
    cut = min_agreement(view.sig.shape[0], view.threshold)
    cols = cols[agreements(view.sig, cols) >= cut]
    # `members` is ascending and band_pairs sorts (lo, hi), so record pairs come out as i < j, sorted.
    pairs = view.members[cols]
    # Exact Jaccard of every remaining candidate in one batch; the walk below then counts as verified only
    # those whose records were not connected yet (the others cannot change a component).
    scores = view.exact(pairs[:, 0], pairs[:, 1])
    good = scores >= view.threshold
    view.answer_dropped = np.zeros((0, 2), dtype=np.int64)
    if answers is not None:
        # Every pair at the threshold, in one batch (as the exact Jaccard above), before the walk.
        at = np.flatnonzero(good)
        differ = at[answers.jaccard(pairs[at, 0], pairs[at, 1]) < answer_threshold]
        good[differ] = False
        view.answer_dropped = pairs[differ]
    uf = UnionFind(len(view.sets))
    edges = []
    for (i, j), score, ok in zip(pairs.tolist(), scores.tolist(), good.tolist()):
        if uf.find(i) == uf.find(j):
            continue
        view.verified += 1
        if ok:
            uf.union(i, j)
            edges.append((i, j, score))
    return edges


# ---------------------------------------------------------------------------------------------- clusters


@dataclass
class KeptCheck:
    """Whether records are near-duplicates of given kept copies: the exact Jaccard at the n the pair is judged at
    (short-n when either has fewer than `short_words` tokens, as the edges), then the answer check."""

    long: View
    short: View
    answers: AnswerSets
    words: np.ndarray
    short_words: int
    threshold: float
    answer_threshold: float

    def short_pair(self, i: np.ndarray, k: np.ndarray) -> np.ndarray:
        return np.minimum(self.words[i], self.words[k]) < self.short_words

    def __call__(self, i: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(near, exact Jaccard) for each pair (i[p], k[p])."""
        short = self.short_pair(i, k)
        jac = np.zeros(len(i), dtype=np.float64)
        jac[short] = self.short.exact(i[short], k[short])
        jac[~short] = self.long.exact(i[~short], k[~short])
        near = jac >= self.threshold
        at = np.flatnonzero(near)
        near[at] = self.answers.jaccard(i[at], k[at]) >= self.answer_threshold
        return near, jac


@dataclass(frozen=True)
class Removal:
    """A record removed as a near duplicate: the copy kept for it and its exact Jaccard to that copy."""

    kept: int
    jaccard: float


def remove_against_kept(components: list[list[int]], rank: np.ndarray, check: KeptCheck) -> dict[int, Removal]:
    """The records to remove, each verified against the copy kept for it.

    Union-find components join A~B and B~C however far A is from C, so they are candidates only: each keeps
    its best member (lowest `rank`) and removes the members `check` accepts against it; the remaining
    members are treated alike, round after round, until fewer than two are left. Every record is thus kept
    or within the threshold of a kept copy. One `check` batch per round for all components; deterministic,
    since `rank` is a total order.
    """
    pending = [sorted(m, key=lambda i: rank[i]) for m in components]
    removed: dict[int, Removal] = {}
    while pending:
        others = np.array([i for m in pending for i in m[1:]], dtype=np.int64)
        kept = np.repeat([m[0] for m in pending], [len(m) - 1 for m in pending]).astype(np.int64)
        near, jac = (x.tolist() for x in check(others, kept))
        pos, rest_of = 0, []
        for m in pending:
            rest = []
            for i, ok, j in zip(m[1:], near[pos : pos + len(m) - 1], jac[pos : pos + len(m) - 1]):
                if ok:
                    removed[i] = Removal(m[0], j)
                else:
                    rest.append(i)
            pos += len(m) - 1
            if len(rest) > 1:
                rest_of.append(rest)
        pending = rest_of
    return removed


def _cluster_line(
    cid: int, members: list[int], best: int, removed: dict[int, Removal], refs: list[str], estimate: list[float | None]
) -> dict[str, Any]:
    """The duplicates.jsonl line of one near-duplicate cluster (a candidate component)."""
    gone = [removed[i] for i in members if i in removed]
    return {
        "kind": "near_dup",
        "cluster": cid,
        "kept": refs[best],
        "size": len(members),
        "min_jaccard": _r4(min((r.jaccard for r in gone), default=None)),
        "members": [
            {
                "ref": refs[i],
                "kept": i not in removed,
                "of": refs[removed[i].kept] if i in removed else None,
                "jaccard": _r4(removed[i].jaccard) if i in removed else None,
                "jaccard_estimate": _r4(estimate[i]) if i in removed else None,
            }
            for i in members
        ],
    }


# ------------------------------------------------------------------------------------------------- the stage


def _priority(df: pl.DataFrame) -> np.ndarray:
    """Rank of each row as the copy to keep (0 = best): quality_score desc, n_assistant_tokens desc, row asc."""
    keys, desc = [], []
    for name in (QUALITY_SCORE, N_ASSISTANT_TOKENS):
        if name in df.columns:
            keys.append(pl.col(name))
            desc.append(True)
    keys.append(pl.col(C.ROW))
    desc.append(False)
    order = (
        df.with_row_index("_i")
        .sort(keys, descending=desc, nulls_last=True, maintain_order=True)
        .get_column("_i")
        .to_numpy()
    )
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def _components(n: int, edges: list[tuple[int, int, float]]) -> list[list[int]]:
    uf = UnionFind(n)
    for i, j, _ in edges:
        uf.union(i, j)
    groups: dict[int, list[int]] = {}
    for i, j, _ in edges:
        for x in (i, j):
            groups.setdefault(uf.find(x), []).append(x)
    return [sorted(set(g)) for g in groups.values()]


def _r4(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _null_columns(df: pl.DataFrame) -> pl.DataFrame:
    cols = [
        pl.lit(None, dtype=pl.Int64).alias(NEAR_DUP_CLUSTER),
        pl.lit(None, dtype=pl.Utf8).alias(NEAR_DUP_OF),
        pl.lit(None, dtype=pl.Float64).alias(NEAR_DUP_JACCARD),
        pl.lit(False, dtype=pl.Boolean).alias(PROMPT_CONFLICT),
    ]
    if C.SPLIT_KEY not in df.columns:
        cols.append(pl.lit(None, dtype=pl.Utf8).alias(C.SPLIT_KEY))
    return df.with_columns(cols)


def run(df: pl.DataFrame, ctx: StageContext) -> pl.DataFrame:
    cfg: Config = ctx.config.dedup_minhash
    if not cfg.enabled or df.height == 0:
        ctx.artifacts[ARTIFACT] = b""
        if not cfg.enabled:  # the report says "disabled", not 0 near-duplicates found
            ctx.summaries[NAME] = {"enabled": False}
        return _null_columns(df)
    with ctx.progress.task("near duplicates", total=df.height) as advance:  # elapsed time while it works
        result = find_near_duplicates(df, cfg)
        advance(df.height)
    ctx.manifest[NAME] = result.manifest
    ctx.summaries[NAME] = result.summary
    ctx.artifacts[ARTIFACT] = result.artifact
    out = df.with_columns(
        pl.Series(NEAR_DUP_CLUSTER, result.cluster, dtype=pl.Int64),
        pl.Series(NEAR_DUP_OF, result.dup_of, dtype=pl.Utf8),
        pl.Series(NEAR_DUP_JACCARD, result.dup_jaccard, dtype=pl.Float64),
        pl.Series(PROMPT_CONFLICT, result.conflict, dtype=pl.Boolean),
    )
    new_key = pl.Series("_key", result.split_key, dtype=pl.Utf8)
    if C.SPLIT_KEY in out.columns:
        out = out.with_columns(pl.coalesce(new_key, pl.col(C.SPLIT_KEY)).alias(C.SPLIT_KEY))
    else:
        out = out.with_columns(new_key.alias(C.SPLIT_KEY))
    reason = pl.Series("_reason", result.reason, dtype=pl.Utf8)
    detail = pl.Series("_detail", result.detail, dtype=pl.Utf8)
    out = out.with_columns(reason, detail)
    out = with_reject(out, pl.col("_reason").is_not_null(), pl.col("_reason"), pl.col("_detail"))
    return out.drop("_reason", "_detail")


@dataclass
class Result:
    cluster: list[int | None]
    dup_of: list[str | None]
    dup_jaccard: list[float | None]
    conflict: list[bool]
    split_key: list[str | None]
    reason: list[str | None]
    detail: list[str | None]
    artifact: bytes
    manifest: dict[str, Any]
    summary: dict[str, Any]


def find_near_duplicates(df: pl.DataFrame, cfg: Config) -> Result:
    """Everything the stage decides, for the rows of `df` (all alive), as plain per-row lists."""
    from importlib import metadata

    n = df.height
    refs = df.get_column(C.REF).to_list()
    hashes = df.get_column(C.CONTENT_HASH).to_list()
    rank = _priority(df)
    workers = max(1, min(cfg.workers, os.cpu_count() or 1))

    # User and assistant turns are always tokenised: the prompt view reads the user turns and the answer check
    # the assistant turns, whatever `roles` (the near-duplicate views' turns) says.
    token_roles = sorted(set(cfg.roles) | {"user", "assistant"})
    turns: Turns = tokenize_turns(
        df.get_column(C.MESSAGES), token_roles, cfg.system_prompt, cfg.shared_system_min_records
    )
    near_turns = np.isin(turns.role, list(cfg.roles))
    words = turns.words(near_turns)
    short_words = cfg.short_words()
    is_short = words < short_words

    full_bands = choose_bands(cfg.threshold, cfg.num_perm, cfg.min_recall_at_threshold)
    # The long view shingles only the records of at least `short_words` tokens (a turn mask by record).
    long_view = View(
        "long", cfg.ngram, shingle(turns, cfg.ngram, near_turns & ~is_short[turns.record]), np.zeros(0, np.int64),
        cfg.threshold, full_bands,
    )
    long_view.members = np.flatnonzero(~is_short & (long_view.sets.sizes() > 0))
    # The short view compares each short record with every record that can be within the threshold of it. Jaccard
    # bounds set sizes (|A| / |B| >= J), and repetition makes a long record's set small (an answer said twice, an
    # exchange repeated), so the bound is on distinct short-n shingles, not on words: a record takes part when
    # its set is no larger than the largest short record's divided by the threshold. Only records whose lower
    # bound (distinct tokens, `distinct_tokens`) allows it are shingled to count exactly.
    short_distinct = sorted_sets(shingle(turns, cfg.short_ngram, near_turns & is_short[turns.record]))
    reach = -1
    if is_short.any():
        reach = math.floor(Fraction(int(short_distinct.sizes()[is_short].max())) / Fraction(str(cfg.threshold)))
    n_turns = np.bincount(turns.record[near_turns & (turns.length > 0)], minlength=n)
    at_least = distinct_tokens(turns, near_turns) - (cfg.short_ngram - 1) * n_turns
    maybe = ~is_short & (at_least <= reach)
    short_sets = shingle(turns, cfg.short_ngram, near_turns & (is_short | maybe)[turns.record])
    if maybe.any():
        short_distinct = merge_sorted_sets(short_distinct, sorted_sets(short_sets, np.flatnonzero(maybe)))
    distinct_sizes = short_distinct.sizes()
    in_short = is_short | (maybe & (distinct_sizes <= reach))
    short_view = View(
        "short", cfg.short_ngram, short_sets, np.flatnonzero(in_short & (distinct_sizes > 0)), cfg.threshold,
        full_bands, distinct=short_distinct,
    )
    prompt_bands = choose_bands(cfg.prompt_threshold, cfg.num_perm, cfg.min_recall_at_threshold)
    prompt_view = View(
        "prompt",
        cfg.prompt_ngram,
        shingle(turns, cfg.prompt_ngram, turns.role == "user"),
        np.zeros(0, np.int64),
        cfg.prompt_threshold,
        prompt_bands,
    )
    prompt_view.members = np.flatnonzero(prompt_view.sets.sizes() > 0)

    views = (long_view, short_view, prompt_view)
    for view in views:
        if view.distinct is None:
            view.prepare()
        view.sign(cfg.num_perm, cfg.seed, workers)

    answers = AnswerSets(turns, cfg)
    edges = find_edges(long_view, answers=answers, answer_threshold=cfg.answer_threshold) + find_edges(
        short_view, accept=is_short, answers=answers, answer_threshold=cfg.answer_threshold
    )
    # Pairs at the threshold whose answers differ are no edge: when their user turns are what they share, the
    # prompt view below finds them and the prompt-conflict policy decides (a shared system prompt kept with
    # system_prompt=keep, say, is no conflict).
    answer_dropped = sum(len(v.answer_dropped) for v in (long_view, short_view) if v.answer_dropped is not None)

    # --- near-duplicate clusters: candidate components, numbered by their first row; within each, records are
    # removed only against a kept copy (`remove_against_kept`). A short record's pair with a record the short view
    # did not shingle reads Jaccard 0, which is right as a verdict: such a record has more distinct short-n
    # shingles than `reach`, so Jaccard's size bound keeps it below the threshold of every short record.
    clusters = sorted(_components(n, edges), key=lambda g: g[0])
    check = KeptCheck(long_view, short_view, answers, words, short_words, cfg.threshold, cfg.answer_threshold)
    removed = remove_against_kept(clusters, rank, check)
    cluster: list[int | None] = [None] * n
    best_of = list(range(n))  # each row's cluster's best copy (itself when alone): the split and prompts follow it
    best = [min(members, key=lambda i: rank[i]) for members in clusters]
    for cid, members in enumerate(clusters):
        for i in members:
            cluster[i] = cid
            best_of[i] = best[cid]
    dup_of: list[str | None] = [None] * n
    dup_j: list[float | None] = [None] * n
    dup_est: list[float | None] = [None] * n
    reason: list[str | None] = [None] * n
    detail: list[str | None] = [None] * n
    dups = np.array(sorted(removed), dtype=np.int64)
    kept_arr = np.array([removed[i].kept for i in dups.tolist()], dtype=np.int64)
    short_pair = check.short_pair(dups, kept_arr)
    for view, sel in ((short_view, short_pair), (long_view, ~short_pair)):
        di, dk = dups[sel], kept_arr[sel]
        for i, k, est in zip(di.tolist(), dk.tolist(), view.estimate(di, dk)):
            dup_of[i] = refs[k]
            dup_j[i] = removed[i].jaccard
            dup_est[i] = est
            reason[i] = "dup.near"
            detail[i] = (
                f"near-duplicate of {refs[k]} (jaccard {removed[i].jaccard:.3f}, estimated {_fmt(est)}, "
                f"cluster {cluster[i]}, {view.ngram}-grams)"
            )

    # --- same prompt: near-identical user turns, but not one near-duplicate cluster. A group whose members all
    # give the best copy's answer is no conflict (they differ elsewhere, e.g. in a system prompt of their own); it
    # still keeps one side of the split.
    prompt_edges = [
        (min(best_of[i], best_of[j]), max(best_of[i], best_of[j]), score)
        for i, j, score in find_edges(prompt_view)
        if best_of[i] != best_of[j]
    ]
    groups = sorted(_components(n, prompt_edges), key=lambda g: g[0])
    conflict = [False] * n
    in_group = [False] * n
    anchor_of = list(range(n))
    group_lines = []
    anchors = [min(members, key=lambda i: rank[i]) for members in groups]
    flat_i = np.array([i for members in groups for i in members], dtype=np.int64)
    flat_a = np.array([a for a, members in zip(anchors, groups) for _ in members], dtype=np.int64)
    prompt_j = iter(prompt_view.exact(flat_i, flat_a).tolist())
    answer_j = iter(answers.jaccard(flat_i, flat_a).tolist())
    n_conflict_groups = n_same_groups = 0
    for gid, members in enumerate(groups):
        anchor = anchors[gid]
        pjs, ajs = [next(prompt_j) for _ in members], [next(answer_j) for _ in members]
        same = [i == anchor or aj >= cfg.answer_threshold for i, aj in zip(members, ajs)]
        differ = [i for i, s in zip(members, same) if not s]
        is_conflict = bool(differ)
        n_conflict_groups += is_conflict
        n_same_groups += not is_conflict
        lines = []
        for i, pj_all, aj_all, s in zip(members, pjs, ajs, same):
            in_group[i] = True
            conflict[i] = is_conflict
            anchor_of[i] = anchor
            pj, aj = (None, None) if i == anchor else (pj_all, aj_all)
            keep = (
                not is_conflict
                or cfg.prompt_conflict == "keep_all"
                or (cfg.prompt_conflict == "keep_best" and s)  # the best copy, and copies giving its answer
            )
            if not keep:
                reason[i] = "dup.prompt_conflict"
                if i == anchor:
                    detail[i] = (
                        f"prompt answered differently by {len(differ)} other record(s), first {refs[differ[0]]}; "
                        f"policy {cfg.prompt_conflict}"
                    )
                elif s:
                    detail[i] = (
                        f"same prompt as {refs[anchor]} (prompt jaccard {_fmt(pj)}) and the same answer (answer "
                        f"jaccard {_fmt(aj)}), in a group with {len(differ)} different answer(s); "
                        f"policy {cfg.prompt_conflict}"
                    )
                else:
                    detail[i] = (
                        f"same prompt as {refs[anchor]} (prompt jaccard {_fmt(pj)}), different answer (answer "
                        f"jaccard {_fmt(aj)}); policy {cfg.prompt_conflict}"
                    )
            lines.append(
                {
                    "ref": refs[i],
                    "kept": keep,
                    "best": i == anchor,
                    "prompt_jaccard": _r4(pj),
                    "answer_jaccard": _r4(aj),
                    "same_answer": s,
                }
            )
        line: dict[str, Any] = {
            "kind": "prompt_conflict" if is_conflict else "same_answer",
            "group": gid,
            "best": refs[anchor],
            "size": len(members),
            "members": lines,
        }
        if is_conflict:
            line["policy"] = cfg.prompt_conflict
        group_lines.append(line)

    # --- split keys: a cluster follows its kept copy, a same-prompt group its best copy
    split_key: list[str | None] = [None] * n
    for i in range(n):
        if cluster[i] is not None or in_group[i]:
            split_key[i] = hashes[anchor_of[best_of[i]]]

    cluster_lines = [
        _cluster_line(cid, members, best[cid], removed, refs, dup_est) for cid, members in enumerate(clusters)
    ]
    artifact = "".join(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n" for line in cluster_lines + group_lines)

    sizes = [len(m) for m in clusters]
    histogram: dict[str, int] = {}
    for s in sizes:
        label = str(s) if s < 5 else ("5-9" if s < 10 else "10+")
        histogram[label] = histogram.get(label, 0) + 1
    near_rejected = sum(1 for r in reason if r == "dup.near")
    summary = {
        "records": n,
        "clusters": len(clusters),
        "records_in_clusters": sum(sizes),
        "near_duplicates_rejected": near_rejected,
        "largest_cluster": max(sizes, default=0),
        "cluster_sizes": dict(sorted(histogram.items())),
        "min_jaccard_to_kept": _r4(min((r.jaccard for r in removed.values()), default=None)),
        "kept_apart_from_chains": sum(sizes) - len(removed) - len(clusters),
        "prompt_conflict_groups": n_conflict_groups,
        "prompt_conflict_records": sum(conflict),
        "prompt_conflict_rejected": sum(1 for r in reason if r == "dup.prompt_conflict"),
        "prompt_conflict_policy": cfg.prompt_conflict,
        "same_answer_groups": n_same_groups,
        "same_answer_records": sum(in_group) - sum(conflict),
        "answer_check_dropped_pairs": answer_dropped,
        "short_records": int(is_short.sum()),
        "records_without_shingles": int((words == 0).sum()),  # no token in any shingled turn
        "shared_system_prompts_dropped": turns.dropped_system_prompts,
        "lsh": {
            v.name: {"signed": len(v.members), "candidate_pairs": v.candidates, "verified_pairs": v.verified}
            for v in views
        },
    }
    try:
        ds_version = metadata.version("datasketch")
    except metadata.PackageNotFoundError:  # pragma: no cover - datasketch is a core dependency
        ds_version = "unknown"
    manifest = {
        "library": f"datasketch {ds_version}",
        "signatures": "datasketch MinHash permutations, vectorised over all records; equal to MinHash.bulk "
        "(tests/test_dedup_minhash.py)",
        "banding": "one sort per band; the same candidate pairs as datasketch MinHashLSH with these params (tested)",
        "scheme": SCHEME,
        "token_hash": "xxh3_64 (xxhash) of each lower-cased token's UTF-8 bytes, seed 0",
        "shingle_hash": "polynomial combination of the n token hashes, multiplier 0x9E3779B97F4A7C15, mod 2**64",
        "token_pattern": "one token per Han/Hiragana/Katakana/Thai/Lao/Khmer/Myanmar character, else per run of "
        "word characters",
        "seed": cfg.seed,
        "num_perm": cfg.num_perm,
        "threshold": cfg.threshold,
        "verification": "exact Jaccard of the shingle sets",
        "answer_threshold": cfg.answer_threshold,
        "answer_check": "exact Jaccard of the assistant turns (short_ngram-grams when the shorter answer is below "
        "min_words of the long view, else ngram-grams) must reach answer_threshold for a near-duplicate edge",
        "views": {
            "long": {"ngram": cfg.ngram, "min_words": short_words, **_bands_dict(full_bands)},
            "short": {"ngram": cfg.short_ngram, "max_distinct_shingles": reach, "counts_below_words": short_words,
                      **_bands_dict(full_bands)},
            "prompt": {"ngram": cfg.prompt_ngram, "roles": ["user"], "threshold": cfg.prompt_threshold,
                       **_bands_dict(prompt_bands)},
        },
        "roles": list(cfg.roles),
        "system_prompt": cfg.system_prompt,
        "kept_copy_order": ["quality_score desc", "n_assistant_tokens desc", "row asc"],
        "clusters": "union-find components of the verified edges; each keeps its best copy and removes the members "
        "verified against it (exact Jaccard and answer check), then treats the rest likewise",
        "split_key": "content_hash of the cluster's best copy / the conflict group's best copy",
    }
    return Result(cluster, dup_of, dup_j, conflict, split_key, reason, detail, artifact.encode("utf-8"), manifest, summary)


def _bands_dict(b: Bands) -> dict[str, Any]:
    return {
        "bands": b.bands,
        "rows": b.rows,
        "recall_at_threshold": round(b.recall_at_threshold, 6),
        "false_positive_area": round(b.false_positive_area, 6),
        "false_negative_area": round(b.false_negative_area, 6),
    }
