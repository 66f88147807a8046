"""Per-record arrays kept in chunks of consecutive records, in memory or as files: what near-duplicate
detection keeps of the text when the records do not fit in memory at once.

Near-duplicate detection needs, for every record, its shingle sets (to verify candidate pairs exactly) and its
MinHash signatures (to band and prefilter them). Under the stream engine the records come shard by shard, so
these arrays are built one chunk (a shard's live rows) at a time and, when a folder is given, written there as
.npy files and dropped from memory. A question about pairs of records (their exact Jaccard, their signatures'
agreement) is then answered from the items of those pairs only: they are read chunk by chunk, cut into
groups of about `BLOCK_BYTES`, and the pairs are answered group pair by group pair, so two groups and their
joined copy are the most in memory at once. When the items of the pairs fit one group (candidate pairs are
usually a small share of the records) every chunk is read once per question. In memory (the local engine) the
chunks are joined into one once built (`consolidate`), the whole collection is one group and nothing is copied.

Every figure is computed per pair from the same arrays, so the answers do not depend on the chunking.
"""

from __future__ import annotations

import math
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, ClassVar, Generic, Iterable, Iterator, TypeVar

import numpy as np

from curator.shingles import SortedSets, jaccard_many

# The most bytes of arrays a store on files keeps after reading them.
CACHE_BYTES = 128 << 20
# Arrays on files at least this large are memory-mapped; smaller ones are read whole. A map holds an open file
# (Python's mmap keeps a dup of the descriptor) and the cache is bounded in bytes only: with many small chunks
# (a small engine.batch_rows) thousands of cached maps ran past the usual limit of 1,024 open files. Maps of
# at least this size number at most CACHE_BYTES / MMAP_MIN_BYTES (128) in the cache.
MMAP_MIN_BYTES = 1 << 20
# Pairs asked about at once on files: each takes 8 index arrays (64 bytes) while its groups are found, and as
# much again while a group pair is answered (2M: about 250 MiB, a tenth of the stream engine's 2.5 GiB).
PAIR_SLICE = 1 << 21
# About the most bytes of the items one group holds, read back from files at a time (pairs across two groups
# are answered on the two joined: group a, group b and their join, four groups' worth, at most).
BLOCK_BYTES = 128 << 20

class ChunkStore:
    """Where chunk arrays live: in memory (`folder` None), or as .npy files in `folder` (created on first use)."""

    def __init__(self, folder: Path | None = None, map: ChunkMap | None = None) -> None:
        self.folder = folder
        # Where questions about pairs on files may run group pair by group pair (the ray engine: as tasks on
        # its workers, which read the groups from `folder`); None: in this process.
        self.map = map
        self._held: dict[str, dict[str, np.ndarray]] = {}
        # On files, the arrays read last, up to CACHE_BYTES: questions about pairs come one after another
        # (each round of the near-duplicate checks), and small collections then stay read.
        self._cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._cached_bytes = 0

    def __getstate__(self) -> dict:
        # a worker starts without a cache, and answers its pairs itself
        return {**self.__dict__, "_cache": OrderedDict(), "_cached_bytes": 0, "map": None}

    @property
    def in_memory(self) -> bool:
        return self.folder is None

    def put(self, arrays: dict[str, np.ndarray]) -> str:
        """Keep `arrays`; return the key to get them back with (unique across processes, so that workers of
        another process may put chunks into the same folder)."""
        key = uuid.uuid4().hex
        if self.folder is None:
            self._held[key] = arrays
            return key
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, array in arrays.items():
            np.save(self.folder / f"{key}.{name}.npy", array, allow_pickle=False)
        return key

    def get(self, key: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        if self.folder is None:
            return self._held[key]
        return {name: self._read(key, name) for name in names}

    def _read(self, key: str, name: str) -> np.ndarray:
        """The array, memory-mapped (read-only): a question about a few records of a chunk reads only their
        pages, not the whole chunk (near-dup's rounds against the kept copies ask about a few pairs at a time).
        The cache holds the maps; the pages a map has read count in this process's memory until it is dropped."""
        cached = self._cache.get((key, name))
        if cached is not None:
            self._cache.move_to_end((key, name))
            return cached
        array = np.load(self.folder / f"{key}.{name}.npy", mmap_mode="r", allow_pickle=False)
        if array.nbytes < MMAP_MIN_BYTES:  # read whole (the map and its open file are dropped), read-only alike
            array = np.array(array)
            array.flags.writeable = False
        if array.nbytes <= CACHE_BYTES:
            self._cache[(key, name)] = array
            self._cached_bytes += array.nbytes
            while self._cached_bytes > CACHE_BYTES:
                _, old = self._cache.popitem(last=False)
                self._cached_bytes -= old.nbytes
        return array

    def forget(self) -> None:
        """Empty the cache of arrays read (what is on files stays there)."""
        self._cache.clear()
        self._cached_bytes = 0

    def drop(self, key: str, names: tuple[str, ...]) -> None:
        if self.folder is None:
            self._held.pop(key, None)
            return
        for name in names:
            old = self._cache.pop((key, name), None)
            self._cached_bytes -= 0 if old is None else old.nbytes
            (self.folder / f"{key}.{name}.npy").unlink(missing_ok=True)


T = TypeVar("T")
ChunkMap = Callable[[Callable[[int], Any], int], Iterable[Any]]  # fn(0) .. fn(n - 1), in order


@dataclass
class Chunked(Generic[T]):
    """Items (records, or signed records) in chunks: chunk k holds items `bounds[k]` to `bounds[k + 1]` - 1."""

    store: ChunkStore
    keys: list[str]
    bounds: np.ndarray  # int64, chunks + 1
    nbytes: list[int]  # bytes of each chunk's arrays

    NAMES: ClassVar[tuple[str, ...]] = ()  # the arrays of one chunk

    def _load(self, k: int) -> T:
        raise NotImplementedError

    def _concat(self, parts: list[T]) -> T:
        raise NotImplementedError

    def _take(self, data: T, items: np.ndarray) -> T:
        """The arrays of `items` (positions in `data`), in that order."""
        raise NotImplementedError

    def item_bytes(self, items: np.ndarray) -> np.ndarray:
        """The bytes each of `items` takes in memory."""
        raise NotImplementedError

    def consolidate(self) -> None:
        """In memory, make the chunks one: questions about pairs then read it as it is, not a copy of the chunks
        joined each time. On files, nothing changes."""
        if not self.store.in_memory or len(self.keys) < 2:
            return
        arrays = self._joined_arrays()
        for key in self.keys:
            self.store.drop(key, self.NAMES)
        self.keys = [self.store.put(arrays)]
        self.bounds = self.bounds[[0, -1]]
        self.nbytes = [sum(self.nbytes)]

    def _joined_arrays(self) -> dict[str, np.ndarray]:
        """The arrays of every chunk joined, as one chunk's."""
        raise NotImplementedError

    def block(self, chunks: list[int]) -> T:
        """The items of `chunks`, one after another."""
        parts = [self._load(k) for k in chunks]
        return parts[0] if len(parts) == 1 else self._concat(parts)

    def gather(self, items: np.ndarray) -> T:
        """The arrays of `items` (ascending), read chunk by chunk: only the chunks holding one are read, and
        only the items asked for are kept of each."""
        parts = []
        for k in range(len(self.keys)):
            lo, hi = np.searchsorted(items, (self.bounds[k], self.bounds[k + 1]))
            if hi > lo:
                parts.append(self._take(self._load(k), items[lo:hi] - self.bounds[k]))
        return parts[0] if len(parts) == 1 else self._concat(parts)

    def groups(self, items: np.ndarray) -> list[np.ndarray]:
        """`items` (ascending) cut into consecutive groups of about BLOCK_BYTES: group g holds the items whose
        bytes, counted from the first item on, end in (g * BLOCK_BYTES, (g + 1) * BLOCK_BYTES], so a group
        takes at most BLOCK_BYTES plus its first item's bytes. In memory, one group."""
        if self.store.in_memory or len(items) == 0:
            return [items]
        ends = np.cumsum(self.item_bytes(items))
        group = (ends - 1) // BLOCK_BYTES
        cut = np.flatnonzero(group[1:] != group[:-1]) + 1
        return np.split(items, cut)

    def pairwise(self, i: np.ndarray, j: np.ndarray, compute: Callable[[T, np.ndarray, np.ndarray], np.ndarray],
                 dtype: type) -> np.ndarray:
        """`compute(data, a, b)` for each pair of items (i[p], j[p]), where `data` holds both items' arrays and
        a, b are their positions in it.

        In memory `data` is every item. On files, PAIR_SLICE pairs at a time, only the items of the pairs are
        read, in groups of about BLOCK_BYTES (`groups`), and the pairs are answered group pair by group pair: a
        pair within one group on that group, a pair across two on the two joined. Items in few pairs (the usual
        case: candidate pairs are a small share of all pairs) make one group, and every chunk is read once.
        """
        out = np.zeros(len(i), dtype=dtype)
        if len(i) == 0:
            return out
        if self.store.in_memory:
            i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
            out[:] = compute(self.block(list(range(len(self.keys)))), i, j)
            return out
        for lo in range(0, len(i), PAIR_SLICE):  # bounds the index arrays below (8 per pair)
            hi = lo + PAIR_SLICE
            part_i, part_j = np.asarray(i[lo:hi], dtype=np.int64), np.asarray(j[lo:hi], dtype=np.int64)
            out[lo:hi] = self._pairwise_on_files(part_i, part_j, compute, dtype)
        return out

    def _pairwise_on_files(self, i: np.ndarray, j: np.ndarray, compute: Callable[[T, np.ndarray, np.ndarray],
                           np.ndarray], dtype: type) -> np.ndarray:
        """`pairwise` of some pairs, on files."""
        out = np.zeros(len(i), dtype=dtype)
        needed = np.union1d(i, j)
        groups = self.groups(needed)
        starts = np.cumsum([0] + [len(g) for g in groups])
        pi, pj = np.searchsorted(needed, i), np.searchsorted(needed, j)  # positions in `needed`
        gi = np.searchsorted(starts, pi, side="right") - 1
        gj = np.searchsorted(starts, pj, side="right") - 1
        lo, hi = np.minimum(gi, gj), np.maximum(gi, gj)
        order = np.lexsort((hi, lo))
        jobs = [(a, b, positions) for a, a_positions in _runs(lo, order) for b, positions in _runs(hi, a_positions)]

        def positions_in_data(a: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            # pairs across two groups are answered on the two joined, group a's items first
            size_a = len(groups[a])
            ai = pi[positions] - starts[gi[positions]] + np.where(gi[positions] == a, 0, size_a)
            aj = pj[positions] - starts[gj[positions]] + np.where(gj[positions] == a, 0, size_a)
            return ai, aj

        if self.store.map is not None and len(jobs) > 1:  # each group pair in a task that reads its groups
            work = [(groups[a], None if b == a else groups[b], *positions_in_data(a, positions))
                    for a, b, positions in jobs]
            answers = self.store.map(partial(_answer_group_pair, self, compute, work), len(work))
            for (_, _, positions), answer in zip(jobs, answers):
                out[positions] = answer
            return out
        data_a, read_a = None, -1
        for a, b, positions in jobs:
            if read_a != a:
                data_a, read_a = None, a  # the last group a dropped before the next is read
                data_a = self.gather(groups[a])
            data = data_a if b == a else self._concat([data_a, self.gather(groups[b])])
            out[positions] = compute(data, *positions_in_data(a, positions))
            del data  # before the next join is built: group a, the next group and their join at most
        return out


def _answer_group_pair(chunked: Chunked, compute: Callable, work: list, k: int) -> np.ndarray:
    """The answers of group pair `k` of `work` ((items of group a, of group b or None, positions of the pairs'
    members in the two joined)), reading the groups from the store."""
    items_a, items_b, ai, aj = work[k]
    data = chunked.gather(items_a)
    if items_b is not None:
        data = chunked._concat([data, chunked.gather(items_b)])
    return compute(data, ai, aj)


def _runs(keys: np.ndarray, positions: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(key, positions) for each run of equal `keys[positions]` (positions already grouped by key)."""
    values = keys[positions]
    cut = np.flatnonzero(values[1:] != values[:-1]) + 1
    for part in np.split(positions, cut):
        if len(part):
            yield int(keys[part[0]]), part


def take_sets(sets: SortedSets, rows: np.ndarray) -> SortedSets:
    """The sets of `rows`, in that order."""
    starts = sets.offsets[rows]
    lengths = sets.offsets[rows + 1] - starts
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    index = np.repeat(starts - offsets[:-1], lengths) + np.arange(int(offsets[-1]), dtype=np.int64)
    return SortedSets(values=sets.values[index], offsets=offsets)


def concat_sets(parts: list[SortedSets]) -> SortedSets:
    """The records of `parts`, one after another, as one SortedSets (a part may hold no record)."""
    offsets, end = [np.zeros(1, dtype=np.int64)], 0
    for part in parts:
        offsets.append(part.offsets[1:] - part.offsets[0] + end)
        end += int(part.offsets[-1] - part.offsets[0])
    return SortedSets(values=np.concatenate([p.values for p in parts]), offsets=np.concatenate(offsets))


@dataclass(frozen=True)
class StoredSets:
    """A chunk's sets once put in a store: what a ChunkedSets takes it in by (small: one size per record)."""

    key: str
    nbytes: int
    sizes: np.ndarray  # distinct shingles of each of the chunk's records

    @classmethod
    def put(cls, store: ChunkStore, sets: SortedSets) -> "StoredSets":
        offsets = sets.offsets - sets.offsets[0]
        key = store.put({"values": sets.values, "offsets": offsets})
        return cls(key, sets.values.nbytes + offsets.nbytes, np.diff(offsets))


@dataclass(frozen=True)
class StoredSignatures:
    """A chunk's signatures and band keys once put in a store, and the records (chunk-local) they sign."""

    key: str
    nbytes: int
    records: np.ndarray
    n_bands: int

    @classmethod
    def put(cls, store: ChunkStore, matrix: np.ndarray, records: np.ndarray, band_keys: np.ndarray) -> "StoredSignatures":
        # band keys sit beside the signatures, so that only one band's keys are in memory while banding
        key = store.put({"matrix": matrix, "bands": band_keys})
        return cls(key, matrix.nbytes, np.asarray(records, dtype=np.int64), band_keys.shape[0])


class ChunkedSets(Chunked[SortedSets]):
    """Each record's sorted shingle set, in chunks; with every record's set size in memory."""

    NAMES = ("values", "offsets")

    def __init__(self, store: ChunkStore) -> None:
        super().__init__(store, [], np.zeros(1, dtype=np.int64), [])
        self._sizes: list[np.ndarray] = []
        self._all_sizes: np.ndarray | None = None  # sizes(), kept while no chunk changes

    def append(self, sets: SortedSets) -> None:
        """Add the next chunk's records."""
        self.add(StoredSets.put(self.store, sets))

    def add(self, stored: StoredSets) -> None:
        """Add the next chunk's records, already in the store."""
        self.keys.append(stored.key)
        self.bounds = np.append(self.bounds, self.bounds[-1] + len(stored.sizes))
        self.nbytes.append(stored.nbytes)
        self._sizes.append(stored.sizes)
        self._all_sizes = None

    def replace(self, k: int, sets: SortedSets) -> None:
        """Chunk `k`'s records with new sets."""
        self.store.drop(self.keys[k], self.NAMES)
        stored = StoredSets.put(self.store, sets)
        self.keys[k], self.nbytes[k], self._sizes[k] = stored.key, stored.nbytes, stored.sizes
        self._all_sizes = None

    def chunk(self, k: int) -> SortedSets:
        return self._load(k)

    def _load(self, k: int) -> SortedSets:
        arrays = self.store.get(self.keys[k], self.NAMES)
        return SortedSets(values=arrays["values"], offsets=arrays["offsets"])

    def _concat(self, parts: list[SortedSets]) -> SortedSets:
        return concat_sets(parts)

    def _joined_arrays(self) -> dict[str, np.ndarray]:
        joined = concat_sets([self._load(k) for k in range(len(self.keys))])
        self._sizes = [self.sizes()]
        return {"values": joined.values, "offsets": joined.offsets}

    def _take(self, data: SortedSets, items: np.ndarray) -> SortedSets:
        return take_sets(data, items)

    def item_bytes(self, items: np.ndarray) -> np.ndarray:
        if self._all_sizes is None or len(self._all_sizes) != self.n_records:
            self._all_sizes = self.sizes()
        return self._all_sizes[items] * 8 + 8

    @property
    def n_records(self) -> int:
        return int(self.bounds[-1])

    def sizes(self) -> np.ndarray:
        """Distinct shingles of every record."""
        return np.concatenate(self._sizes) if self._sizes else np.zeros(0, dtype=np.int64)

    def exact(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Exact Jaccard of each pair of records (i[p], j[p]) (0.0 when either set is empty)."""
        return self.pairwise(i, j, jaccard_many, np.float64)


class ChunkedSignatures(Chunked[np.ndarray]):
    """MinHash signatures of the signed records, in chunks of columns, with every column's band keys in memory."""

    NAMES = ("matrix", "bands")

    def __init__(self, store: ChunkStore, num_perm: int) -> None:
        super().__init__(store, [], np.zeros(1, dtype=np.int64), [])
        self.num_perm = num_perm
        self._records: list[np.ndarray] = []
        self.n_bands = 0
        self.records = np.zeros(0, dtype=np.int64)  # the signed records, ascending, by column (once closed)
        self.column = np.zeros(0, dtype=np.int64)  # record -> column, -1 when not signed (once closed)

    def append(self, matrix: np.ndarray, records: np.ndarray, band_keys: np.ndarray) -> None:
        """Add the next chunk's signatures (num_perm, len(records)) of `records` (global, ascending, after those
        of earlier chunks), with their band keys (bands, len(records))."""
        self.add(StoredSignatures.put(self.store, matrix, records, band_keys), 0)

    def add(self, stored: StoredSignatures, offset: int) -> None:
        """Add the next chunk's signatures, already in the store; its records are `offset` + `stored.records`."""
        self._records.append(stored.records + offset)
        self.keys.append(stored.key)
        self.bounds = np.append(self.bounds, self.bounds[-1] + len(stored.records))
        self.nbytes.append(stored.nbytes)
        self.n_bands = stored.n_bands

    def close(self, n_records: int) -> None:
        """Every chunk is in: map the `n_records` records to their columns."""
        self.records = np.concatenate(self._records) if self._records else np.zeros(0, dtype=np.int64)
        self._records = []
        self.column = np.full(n_records, -1, dtype=np.int64)
        self.column[self.records] = np.arange(len(self.records))

    def _load(self, k: int) -> np.ndarray:
        return self.store.get(self.keys[k], ("matrix",))["matrix"]

    def _concat(self, parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts, axis=1)

    def _joined_arrays(self) -> dict[str, np.ndarray]:
        chunks = [self.store.get(key, self.NAMES) for key in self.keys]
        return {name: np.concatenate([c[name] for c in chunks], axis=1) for name in self.NAMES}

    def _take(self, data: np.ndarray, items: np.ndarray) -> np.ndarray:
        return data[:, items]

    def item_bytes(self, items: np.ndarray) -> np.ndarray:
        return np.full(len(items), 4 * self.num_perm, dtype=np.int64)

    def band_key(self, band: int) -> np.ndarray:
        """The key of band `band` of every signed record, by column (uint64)."""
        if not self.keys:
            return np.zeros(0, dtype=np.uint64)
        if self.store.in_memory:
            return np.concatenate([self.store.get(k, ("bands",))["bands"][band] for k in self.keys])
        assert self.store.folder is not None
        # a memory map reads one row of each chunk's keys, not the chunk's every band; the row is copied at once,
        # so that one map (one open file) is held at a time, not one per chunk
        return np.concatenate(
            [np.array(np.load(self.store.folder / f"{k}.bands.npy", mmap_mode="r", allow_pickle=False)[band])
             for k in self.keys]
        )

    def band_keys(self) -> np.ndarray:
        """(bands, columns) uint64: the key of each band of each signed record."""
        return np.stack([self.band_key(b) for b in range(self.n_bands)]) if self.n_bands else np.zeros((0, 0), np.uint64)

    def agreements(self, cols: np.ndarray) -> np.ndarray:
        """For each pair of columns (cols[p, 0], cols[p, 1]), how many permutations give both the same minimum."""
        from curator.lsh import agreements

        def count(matrix: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return agreements(matrix, np.stack((a, b), axis=1))

        return self.pairwise(cols[:, 0], cols[:, 1], count, np.int32)

    def estimates(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """MinHash Jaccard estimates of record pairs: the share of permutations whose minima agree (NaN when one
        is not signed)."""
        a, b = self.column[i], self.column[j]
        ok = (a >= 0) & (b >= 0)
        out = np.full(len(a), np.nan)
        out[ok] = self.agreements(np.stack((a[ok], b[ok]), axis=1)) / self.num_perm
        return out

    def estimate(self, i: np.ndarray, j: np.ndarray) -> list[float | None]:
        """`estimates` as a list, None when a record of the pair is not signed."""
        return [None if math.isnan(e) else e for e in self.estimates(i, j).tolist()]
