"""MinHash LSH helpers (curator/lsh.py): band parameters, the prefilter, signatures, components.

The two tests that compare signatures and band pairs with datasketch itself are in tests/test_dedup_minhash.py,
the file manifest.json names for them.
"""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from curator import lsh
from curator.shingles import SortedSets


def sorted_sets(*sets: list[int]) -> SortedSets:
    """SortedSets from ascending lists of distinct values, one per record."""
    values = np.array([v for s in sets for v in s], dtype=np.uint64)
    offsets = np.concatenate(([0], np.cumsum([len(s) for s in sets]))).astype(np.int64)
    return SortedSets(values, offsets)


# --------------------------------------------------------------------------------------------- parameters


def test_bands_reach_the_recall_datasketch_default_misses():
    from datasketch import MinHashLSH

    b = lsh.choose_bands(0.8, 128, 0.99)
    assert (b.bands, b.rows) == (16, 6)
    assert b.recall_at_threshold == pytest.approx(1 - (1 - 0.8**6) ** 16)
    assert b.recall_at_threshold >= 0.99
    default = MinHashLSH(threshold=0.8, num_perm=128)
    assert 1 - (1 - 0.8**default.r) ** default.b < 0.5  # why the stage chooses its own bands


def test_bands_error_names_the_fix():
    with pytest.raises(ValueError, match="raise num_perm"):
        lsh.choose_bands(0.8, 4, 0.999999)


def test_band_options_take_the_fewest_bands_per_band_size():
    # r=1: 1 - 0.2**b >= 0.99 needs b = 3; r=2: 1 - 0.36**b needs b = 5; r=3 would need 7 bands of 3 > 16
    assert lsh.band_options(0.8, 16, 0.99) == [(3, 1), (5, 2)]
    assert lsh.band_options(1.0, 8) == [(2, 1), (2, 2), (2, 3), (2, 4)]  # any band catches an identical set
    assert lsh.band_options(0.8, 2, 0.999999) == []


def test_prefilter_cutoff_is_the_binomial_tail():
    cut = lsh.min_agreement(128, 0.8)
    below = sum(comb(128, x) * 0.8**x * 0.2 ** (128 - x) for x in range(cut))
    assert below <= lsh.PREFILTER_MISS
    assert below + comb(128, cut) * 0.8**cut * 0.2 ** (128 - cut) > lsh.PREFILTER_MISS
    assert cut == 84


# ----------------------------------------------------------------------------------------------- signatures


def test_signatures_sign_only_the_records_asked_for():
    sets = sorted_sets([1, 2, 3], [], [1, 2, 3], [7, 9])
    sig = lsh.Signatures.of(sets, np.array([0, 2, 3]), 64, seed=1)
    assert sig.matrix.shape == (64, 3)
    assert sig.column.tolist() == [0, -1, 1, 2]
    assert np.array_equal(sig.matrix[:, 0], sig.matrix[:, 1])  # equal sets, equal signatures
    assert np.array_equal(lsh.Signatures.of(sets, np.array([0, 2, 3]), 64, seed=1, workers=2).matrix, sig.matrix)


def test_signature_estimate_is_the_share_of_agreeing_minima():
    sets = sorted_sets([1, 2, 3], [], [1, 2, 3], [7, 9])
    sig = lsh.Signatures.of(sets, np.array([0, 2, 3]), 64, seed=1)
    agree = int((sig.matrix[:, 0] == sig.matrix[:, 2]).sum())
    assert sig.estimate(np.array([0, 0, 0]), np.array([2, 1, 3])) == [1.0, None, agree / 64]


def test_a_set_without_shingles_cannot_be_signed():
    with pytest.raises(ValueError, match="at least one shingle"):
        lsh.Signatures.of(sorted_sets([1], []), np.array([0, 1]), 8, seed=1)


def test_agreements_count_equal_rows_per_column_pair():
    sig = np.array([[1, 1, 2], [5, 6, 5], [7, 7, 7]], dtype=np.uint32)
    assert lsh.agreements(sig, np.array([[0, 1], [0, 2], [1, 2]]), chunk=2).tolist() == [2, 2, 1]


def test_band_pairs_need_a_whole_band_in_common():
    # columns 0 and 1 agree on the first band (rows 0-1), 1 and 2 on half of each band only
    sig = np.array([[4, 4, 9], [5, 5, 5], [1, 2, 2], [3, 8, 3]], dtype=np.uint32)
    assert lsh.band_pairs(sig, bands=2, rows=2).tolist() == [[0, 1]]
    assert lsh.band_pairs(sig, bands=4, rows=1).tolist() == [[0, 1], [0, 2], [1, 2]]


# ----------------------------------------------------------------------------------------------- components


def test_band_pairs_are_the_same_whatever_the_slice_of_codes(monkeypatch):
    """Pairs are made and merged a slice of buckets at a time; every slice size gives every band's pairs once:
    buckets of 2 and 5, of 40 (all pairs) and of 300 (a star and a chain)."""
    rng = np.random.default_rng(7)
    n = 700
    keys = []
    for _ in range(3):
        key = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
        shuffled = rng.permutation(n)
        key[shuffled[:300]] = 1  # one bucket of 300
        key[shuffled[300:340]] = 2  # one of 40
        for b in range(20):  # twenty of 5 and ten of 2: several buckets to a slice
            key[shuffled[340 + 5 * b : 345 + 5 * b]] = 3 + b
        for b in range(10):
            key[shuffled[440 + 2 * b : 442 + 2 * b]] = 23 + b
        keys.append(key)
    expected = set()
    buckets = [(1, 300), (2, 40)] + [(3 + b, 5) for b in range(20)] + [(23 + b, 2) for b in range(10)]
    for key in keys:
        for value, size in buckets:
            members = np.flatnonzero(key == value).tolist()
            if size <= 256:
                expected |= {(a, b) for k, a in enumerate(members) for b in members[k + 1 :]}
            else:
                expected |= {(members[0], b) for b in members[1:]} | set(zip(members[1:], members[2:]))
    whole = lsh.pairs_of_band_keys(keys, n)
    assert [tuple(p) for p in whole.tolist()] == sorted(expected)
    for size in (1, 3, 25, 1000):
        monkeypatch.setattr(lsh, "_PAIR_CODES_SLICE", size)
        assert np.array_equal(lsh.pairs_of_band_keys(keys, n), whole)


def test_union_find_joins_and_reports_new_unions():
    uf = lsh.UnionFind(4)
    assert uf.union(0, 1) and uf.union(2, 3) and uf.union(1, 3)
    assert not uf.union(0, 2)  # already one set
    assert len({uf.find(x) for x in range(4)}) == 1


def test_connected_components_are_ascending_and_ordered_by_first_record():
    edges = [(1, 5, 0.8), (4, 6, 0.9), (0, 6, 0.85), (1, 2, 1.0)]  # the later component's edge first
    pairs = np.array([(i, j) for i, j, _ in edges])
    assert lsh.components_of(8, pairs).as_lists() == [[0, 4, 6], [1, 2, 5]]
    assert lsh.components_of(3, np.zeros((0, 2))).as_lists() == []
