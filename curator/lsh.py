"""MinHash LSH over shingle sets: band parameters, signatures, candidate pairs, union-find.

The generic half of near-duplicate detection (Broder 1997; Leskovec, Rajaraman & Ullman, "Mining of Massive
Datasets", ch. 3), on the sets curator/shingles.py builds. What the near-duplicate stage does with them (its
views, verification, clusters and kept copies) is in curator/stages/dedup_minhash.py.

datasketch is imported inside the functions that need it: the config validator calls `band_options`, and
datasketch's LSH module takes 0.6 s to import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from typing import Iterable, Iterator

import numpy as np

from curator.lsh_params import band_options  # noqa: F401  (re-exported: the LSH parameter arithmetic)
from curator.shingles import ShingleSets, SortedSets

# datasketch's default MinHash scheme; the permutations and the 32-bit inputs below follow it.
SCHEME = "affine32"


# --------------------------------------------------------------------------------------------- LSH parameters


@dataclass(frozen=True)
class Bands:
    """LSH banding parameters and what they promise at the threshold they were chosen for."""

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
    elements (datasketch's docs), while the stage's exact verification uses the full 64-bit values anyway.
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


@dataclass(frozen=True)
class Signatures:
    """MinHash signatures of some records of a set collection, one column of `matrix` per signed record."""

    matrix: np.ndarray  # (num_perm, records signed), uint32
    column: np.ndarray  # record index -> column of `matrix`, -1 when the record is not signed

    @classmethod
    def of(cls, sets: SortedSets, records: np.ndarray, num_perm: int, seed: int, workers: int = 1) -> Signatures:
        """Sign `records` (each with a non-empty set) of `sets`."""
        # The minimum over a multiset is the minimum over its distinct values, so the signature is the same.
        matrix = signatures(ShingleSets(sets.values, sets.offsets), records, num_perm, seed, workers)
        column = np.full(len(sets.offsets) - 1, -1, dtype=np.int64)
        column[records] = np.arange(len(records))
        return cls(matrix, column)

    def estimate(self, i: np.ndarray, j: np.ndarray) -> list[float | None]:
        """MinHash Jaccard estimates: the share of permutations whose minima agree (None when one is not signed)."""
        a, b = self.column[i], self.column[j]
        ok = (a >= 0) & (b >= 0)
        est = agreements(self.matrix, np.stack((a[ok], b[ok]), axis=1)) / self.matrix.shape[0]
        out: list[float | None] = [None] * len(i)
        for k, e in zip(np.flatnonzero(ok).tolist(), est.tolist()):
            out[k] = e
        return out


# ------------------------------------------------------------------------------------------- candidate pairs

# A band shared by more records than this (boilerplate) yields a star and a chain, not every pair.
_MAX_BUCKET_PAIRS = 256


def band_pairs(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Candidate pairs (column indices i < j of `sig`) that agree on every row of at least one band.

    The LSH banding of Leskovec et al., ch. 3.4, as datasketch's MinHashLSH buckets it, done with a sort per
    band instead of one dict insert per record and band (datasketch's index took most of the stage's time).
    Returns unique pairs as an (m, 2) int64 array, sorted.
    """
    return pairs_of_band_keys(band_keys(sig, bands, rows), sig.shape[1])


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(bands, columns) uint64: each band's rows of each column folded into one key (a column at a time, so
    keys computed chunk by chunk are the keys of the whole)."""
    keys = np.empty((bands, sig.shape[1]), dtype=np.uint64)
    for band in range(bands):
        block = sig[band * rows : (band + 1) * rows].astype(np.uint64)
        key = block[0].copy()
        for row in block[1:]:
            key = key * _BAND_MIX + row
        keys[band] = key
    return keys


def pairs_of_band_keys(keys: Iterable[np.ndarray], n: int) -> np.ndarray:
    """Unique pairs (i < j, sorted) of the `n` columns sharing the key of at least one band (each of `keys` is
    one band's key of every column: a band at a time is enough)."""
    found = np.zeros(0, dtype=np.int64)  # pair codes lo * n + hi, unique and sorted, merged band after band
    for key in keys:
        new = [_not_in(found, np.unique(codes)) for codes in _band_codes(key, n)]
        if new:  # one insertion per band: each copies every pair found so far
            found = _merge_codes(found, np.unique(np.concatenate(new)))
    # int32 halves the pairs' memory (a corpus of near-copies has dozens of candidates per record); converted a
    # slice at a time, so that no int64 copy of all pairs is made
    pairs = np.empty((len(found), 2), dtype=np.int32 if n < 2**31 else np.int64)
    for lo in range(0, len(found), _PAIR_CODES_SLICE):
        part = found[lo : lo + _PAIR_CODES_SLICE]
        pairs[lo : lo + len(part), 0] = part // n
        pairs[lo : lo + len(part), 1] = part % n
    return pairs


def _band_codes(key: np.ndarray, n: int) -> Iterator[np.ndarray]:
    """The pair codes (lo * n + hi) of the columns sharing one band's `key`, about _PAIR_CODES_SLICE at a time: a
    corpus of near-copies puts dozens of pairs per record in one band, and their index arrays cost 40 bytes a
    pair."""
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    cut = np.flatnonzero(sorted_key[1:] != sorted_key[:-1]) + 1
    run_start = np.concatenate(([0], cut))
    run_len = np.diff(np.concatenate((run_start, [n])))
    for size in np.unique(run_len[run_len > 1]):
        if size <= _MAX_BUCKET_PAIRS:
            x, y = np.triu_indices(int(size), 1)
        else:  # star on the first member plus the chain of neighbours
            x = np.concatenate((np.zeros(size - 1, np.int64), np.arange(1, size - 1)))
            y = np.concatenate((np.arange(1, size), np.arange(2, size)))
        all_starts = run_start[run_len == size]
        per_slice = max(1, _PAIR_CODES_SLICE // len(x))
        for at in range(0, len(all_starts), per_slice):
            starts = all_starts[at : at + per_slice]
            i = order[starts[:, None] + x[None, :]].ravel()
            j = order[starts[:, None] + y[None, :]].ravel()
            yield np.minimum(i, j).astype(np.int64) * n + np.maximum(i, j)


_PAIR_CODES_SLICE = 1 << 21


def _not_in(found: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The `codes` that sorted `found` lacks."""
    if len(found) == 0:
        return codes
    at = np.minimum(np.searchsorted(found, codes), len(found) - 1)
    return codes[found[at] != codes]


def _merge_codes(found: np.ndarray, new: np.ndarray) -> np.ndarray:
    """The union of two sorted unique code arrays, sorted: only the codes `found` lacks are inserted (the union
    of the two at once would sort a copy of both)."""
    new = _not_in(found, new)
    if len(found) == 0 or len(new) == 0:
        return new if len(found) == 0 else found
    return np.insert(found, np.searchsorted(found, new), new)


# Odd 64-bit multiplier folding a band's rows into one key (a collision only adds a candidate).
_BAND_MIX = np.uint64(0xBF58476D1CE4E5B9)


# --------------------------------------------------------------------------------------------- components


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


@dataclass(frozen=True, eq=False)
class Components:
    """Connected components with more than one member, as arrays: `records` grouped by component, ascending
    within one, and `label`, each record's component; components are numbered 0.. by their first record."""

    records: np.ndarray  # int64
    label: np.ndarray  # int64, ascending

    @classmethod
    def of(cls, groups: list[list[int]]) -> "Components":
        """From lists that are already components (each ascending, ordered by their first record)."""
        records = np.array([i for g in groups for i in g], dtype=np.int64)
        return cls(records, np.repeat(np.arange(len(groups), dtype=np.int64), [len(g) for g in groups]))

    def __len__(self) -> int:
        return 0 if len(self.label) == 0 else int(self.label[-1]) + 1

    @property
    def starts(self) -> np.ndarray:
        """Where each component begins in `records`, then len(records)."""
        return np.searchsorted(self.label, np.arange(len(self) + 1))

    def sizes(self) -> np.ndarray:
        return np.diff(self.starts)

    def as_lists(self) -> list[list[int]]:
        starts = self.starts.tolist()
        records = self.records.tolist()
        return [records[a:b] for a, b in zip(starts, starts[1:])]


def components_of(n: int, pairs: np.ndarray) -> Components:
    """The components of the edges `pairs` ((m, 2) record indices) over records 0..n-1 (records without an edge
    are in none)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    uf = UnionFind(n)
    for lo in range(0, len(pairs), _UNION_SLICE):  # Python ints for a slice of the edges at a time
        for i, j in pairs[lo : lo + _UNION_SLICE].tolist():
            uf.union(i, j)
    nodes = np.unique(pairs)  # ascending
    find = uf.find
    roots = np.fromiter((find(x) for x in nodes.tolist()), dtype=np.int64, count=len(nodes))
    _, first, of_root = np.unique(roots, return_index=True, return_inverse=True)
    number = np.empty(len(first), dtype=np.int64)
    number[np.argsort(first, kind="stable")] = np.arange(len(first))  # by first (lowest) record
    label = number[of_root.reshape(-1)]
    order = np.lexsort((nodes, label))
    return Components(nodes[order], label[order])


_UNION_SLICE = 1 << 20


# --------------------------------------------------------------------------------------------- prefilter


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
