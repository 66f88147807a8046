"""Chunk arrays (curator/chunked.py) and the near-duplicate stage read chunk by chunk: every answer must be the one
the whole collection gives, in memory or on files, however the pairs fall into groups."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from curator import chunked
from curator import columns as C
from curator.chunked import ChunkedSets, ChunkedSignatures, ChunkStore
from curator.shingles import SortedSets, jaccard_many
from curator.stages import dedup_minhash as dm
from tests.conftest import CHAT_DATA
from tests.test_dedup_minhash import stage_frame, text
from tests.test_dedup_minhash_steps import messages

TOP = np.iinfo(np.uint64).max  # a real shingle value too (jaccard_many pads with it)


def random_sets(rng: np.random.Generator, sizes: list[int]) -> SortedSets:
    """One record per size: distinct values from a pool of 24 (so that records overlap), ascending."""
    pool = np.concatenate((np.arange(23, dtype=np.uint64) * np.uint64(1 << 40), [TOP])).astype(np.uint64)
    parts = [np.sort(rng.choice(pool, size=s, replace=False)) for s in sizes]
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    return SortedSets(np.concatenate(parts).astype(np.uint64), offsets)


def records_of(sets: SortedSets, lo: int, hi: int) -> SortedSets:
    """Records lo..hi-1 of `sets`, offsets not rebased (as a slice of a larger array would come)."""
    return SortedSets(sets.values[sets.offsets[lo] : sets.offsets[hi]], sets.offsets[lo : hi + 1])


def join_sets(parts: list[SortedSets]) -> SortedSets:
    """The records of `parts`, one after another (offsets rebased), as one SortedSets."""
    sizes = np.concatenate([p.sizes() for p in parts])
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    return SortedSets(np.concatenate([p.values[p.offsets[0] : p.offsets[-1]] for p in parts]), offsets)


def store_of(kind: str, tmp_path) -> ChunkStore:
    """A store in memory ("memory") or on files in tmp_path/store ("files")."""
    return ChunkStore() if kind == "memory" else ChunkStore(tmp_path / "store")


def all_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered pair (i, j) of 0..n-1, i = j included: both orders of every pair."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return i.ravel(), j.ravel()


# Chunk k's records have the set sizes CHUNK_SIZES[k]: two small chunks, one larger than the block budget, an empty
# one, two small ones. A small chunk holds 15 values and 6 offsets: 168 bytes.
SMALL = [0, 3, 7, 1, 4]
CHUNK_SIZES = [SMALL, SMALL, [10] * 15, [], SMALL, SMALL]


# ---------------------------------------------------------------------------------------------- ChunkStore


def test_store_on_files_writes_npy_files_in_its_folder_and_drops_them(tmp_path):
    folder = tmp_path / "store"
    store = ChunkStore(folder)
    assert not folder.exists()  # created on first use
    key = store.put({"a": np.arange(3, dtype=np.int64), "b": np.array([7], np.uint64)})
    assert sorted(p.name for p in folder.iterdir()) == [f"{key}.a.npy", f"{key}.b.npy"]
    assert np.load(folder / f"{key}.a.npy").tolist() == [0, 1, 2]
    got = store.get(key, ("a", "b"))
    assert (got["a"].tolist(), got["b"].tolist(), got["b"].dtype) == ([0, 1, 2], [7], np.uint64)
    store.drop(key, ("a", "b"))
    assert list(folder.iterdir()) == []


def test_store_on_files_refuses_pickles(tmp_path):
    store = ChunkStore(tmp_path)
    with pytest.raises(ValueError, match="allow_pickle"):
        store.put({"x": np.array([{"a": 1}], dtype=object)})
    key = store.put({"x": np.arange(2)})
    np.save(tmp_path / f"{key}.x.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="Python objects in dtype"):  # a memory map of objects is refused
        store.get(key, ("x",))


def test_store_on_files_keeps_no_file_open_for_small_arrays(tmp_path):
    # a memory map holds an open file: thousands of small chunks (a small engine.batch_rows) cached as maps ran
    # past the usual limit of 1,024 open files (OSError: Too many open files)
    store = ChunkStore(tmp_path)
    small = store.put({"x": np.arange(3, dtype=np.int64)})
    large = store.put({"x": np.arange(chunked.MMAP_MIN_BYTES // 8, dtype=np.int64)})
    got_small, got_large = store.get(small, ("x",))["x"], store.get(large, ("x",))["x"]
    assert not isinstance(got_small, np.memmap) and isinstance(got_large, np.memmap)
    assert not got_small.flags.writeable and not got_large.flags.writeable  # read-only either way
    assert got_small.tolist() == [0, 1, 2] and int(got_large[-1]) == chunked.MMAP_MIN_BYTES // 8 - 1


# ---------------------------------------------------------------------------------------------- ChunkedSets


def chunked_sets(store: ChunkStore, whole: SortedSets, counts: list[int]) -> ChunkedSets:
    """`whole`'s records in chunks of `counts` records."""
    out = ChunkedSets(store)
    lo = 0
    for count in counts:
        out.append(records_of(whole, lo, lo + count))
        lo += count
    return out


@pytest.mark.parametrize("kind", ["memory", "files"])
def test_exact_jaccard_is_the_whole_collections_however_pairs_fall_into_groups(kind, tmp_path, monkeypatch):
    monkeypatch.setattr(chunked, "BLOCK_BYTES", 2 * 168)
    monkeypatch.setattr(chunked, "PAIR_SLICE", 97)  # 1,225 pairs in 13 slices
    whole = random_sets(np.random.default_rng(0), [s for sizes in CHUNK_SIZES for s in sizes])
    sets = chunked_sets(store_of(kind, tmp_path), whole, [len(s) for s in CHUNK_SIZES])
    assert sets.bounds.tolist() == [0, 5, 10, 25, 25, 30, 35]
    assert sets.nbytes == [168, 168, 1328, 8, 168, 168]
    # on files: groups of about 336 bytes of items (8 per value, 8 per set), some across chunks
    groups = sets.groups(np.arange(35))
    want_groups = [35] if kind == "memory" else [10, 4, 3, 4, 6, 8]
    assert [len(g) for g in groups] == want_groups
    if kind == "files":
        assert [int(sets.item_bytes(g).sum()) for g in groups] == [320, 352, 264, 352, 392, 280]
    i, j = all_pairs(35)
    want = jaccard_many(whole, i, j)
    assert 0.0 < want[i != j].max() < 1.0 and want[(i == j) & (whole.sizes()[i] > 0)].min() == 1.0
    assert sets.exact(i, j).tolist() == want.tolist()
    assert sets.exact(j[::-1], i[::-1]).tolist() == want[::-1].tolist()  # another order of the same pairs
    assert sets.exact(np.array([], np.int64), np.array([], np.int64)).tolist() == []
    assert sets.n_records == 35
    assert sets.sizes().tolist() == whole.sizes().tolist()


@pytest.mark.parametrize("kind", ["memory", "files"])
def test_replace_gives_a_chunk_new_sets(kind, tmp_path):
    rng = np.random.default_rng(1)
    whole = random_sets(rng, [2, 5, 1, 0, 6, 3])
    store = store_of(kind, tmp_path)
    sets = chunked_sets(store, whole, [3, 3])
    assert sets.sizes().tolist() == [2, 5, 1, 0, 6, 3]
    new = random_sets(rng, [4, 0, 9])
    old_key = sets.keys[1]
    sets.replace(1, new)
    assert sets.keys[1] != old_key
    assert sets.sizes().tolist() == [2, 5, 1, 4, 0, 9]
    assert (sets.n_records, sets.bounds.tolist(), sets.nbytes[1]) == (6, [0, 3, 6], 13 * 8 + 4 * 8)
    assert sets.chunk(1).values.tolist() == new.values.tolist()
    now = join_sets([records_of(whole, 0, 3), new])
    i, j = all_pairs(6)
    assert sets.exact(i, j).tolist() == jaccard_many(now, i, j).tolist()
    if kind == "files":
        assert sorted(p.name for p in (tmp_path / "store").iterdir()) == sorted(
            f"{key}.{name}.npy" for key in sets.keys for name in ("offsets", "values"))


@pytest.mark.parametrize("kind", ["memory", "files"])
def test_an_empty_chunk_between_two_others_holds_no_record(kind, tmp_path):
    """A shard whose rows were all rejected earlier is an empty chunk; at the default budget it shares a block."""
    sets = ChunkedSets(store_of(kind, tmp_path))
    for values in ([1, 2], [], [2, 3]):
        sets.append(SortedSets(np.array(values, np.uint64), np.array([0, len(values)] if values else [0], np.int64)))
    assert (sets.bounds.tolist(), sets.sizes().tolist()) == ([0, 1, 1, 2], [2, 2])
    assert sets.exact(np.array([0, 1]), np.array([1, 1])).tolist() == [1 / 3, 1.0]


def test_empty_chunked_sets_have_no_sizes():
    sets = ChunkedSets(ChunkStore())
    assert (sets.n_records, sets.sizes().tolist()) == (0, [])


# ----------------------------------------------------------------------------------------- ChunkedSignatures

# columns per chunk: two small chunks (8 x 5 uint32: 160 bytes), one over the budget, an empty one, two small ones
COLUMNS = [5, 5, 15, 0, 5, 5]


@pytest.mark.parametrize("kind", ["memory", "files"])
def test_agreements_are_the_whole_matrixs_however_pairs_fall_into_groups(kind, tmp_path, monkeypatch):
    monkeypatch.setattr(chunked, "BLOCK_BYTES", 2 * 160)
    monkeypatch.setattr(chunked, "PAIR_SLICE", 97)
    rng = np.random.default_rng(2)
    matrix = rng.integers(0, 3, size=(8, sum(COLUMNS))).astype(np.uint32)  # minima often agree, not always
    keys = rng.integers(0, 1 << 62, size=(4, sum(COLUMNS))).astype(np.uint64)
    signatures = ChunkedSignatures(store_of(kind, tmp_path), 8)
    lo = 0
    for count in COLUMNS:
        cols = slice(lo, lo + count)
        signatures.append(matrix[:, cols], 2 * np.arange(lo, lo + count), keys[:, cols])  # even records signed
        lo += count
    signatures.close(71)
    want_groups = [35] if kind == "memory" else [10, 10, 10, 5]  # 10 columns of 32 bytes fill 320
    assert [len(g) for g in signatures.groups(np.arange(35))] == want_groups
    assert signatures.records.tolist() == list(range(0, 70, 2))
    assert signatures.column.tolist() == [c for k in range(35) for c in (k, -1)] + [-1]
    assert np.array_equal(signatures.band_keys(), keys)
    assert np.array_equal(signatures.block(list(range(6))), matrix)
    i, j = all_pairs(35)
    want = np.count_nonzero(matrix[:, i] == matrix[:, j], axis=0)
    assert np.bincount(want[i != j]).tolist() == [24, 174, 334, 360, 180, 82, 32, 4]  # agreements of 0 to 7
    assert signatures.agreements(np.stack((i, j), axis=1)).tolist() == want.tolist()
    assert signatures.agreements(np.zeros((0, 2), np.int64)).tolist() == []
    # records: 2k is column k; odd records are not signed
    ri, rj = np.array([0, 68, 4, 1, 6]), np.array([68, 0, 4, 6, 69])
    assert signatures.estimate(ri, rj) == [
        want[34] / 8, want[34 * 35] / 8, 1.0, None, None]


# ------------------------------------------------------------------------------------- the stage, chunk by chunk

SHARED_PROMPT = "You are a helpful assistant."


def chunk_records() -> list[pl.Series]:
    """Three chunks of records: the middle one empty. The first chunk's short record is tiny, so a repeated long
    answer there is within reach only of the third chunk's larger short records; a system prompt is shared
    across the first and third chunks only."""
    repeated = " ".join([text(200, 10)] * 6)  # 61 words, 11 distinct bigrams with "hi"
    first = messages(
        [("system", SHARED_PROMPT), ("user", "q"), ("assistant", text(0, 60))],
        [("user", "hi"), ("assistant", repeated)],
        [("user", "a b"), ("assistant", "c d e")],
        [("user", "q"), ("assistant", text(0, 59) + " changed")],
    )
    third = messages(
        [("system", "Only this record says this."), ("user", text(100, 10)), ("assistant", text(110, 10))],
        [("system", SHARED_PROMPT), ("user", "q"), ("assistant", text(0, 60))],
        [("user", "..."), ("assistant", "!!!")],  # no token at all
        [("user", text(100, 10)), ("assistant", text(110, 10))],
        [("user", "hi"), ("assistant", " ".join([text(300, 10)] * 6))],
        [("system", SHARED_PROMPT), ("user", text(100, 10)), ("assistant", text(110, 9) + " no")],
    )
    return [first, messages(), third]


def whole_sets(sets: ChunkedSets) -> tuple[list[int], list[int]]:
    """Every record's set, as (values, offsets) of the whole collection."""
    whole = join_sets([sets.chunk(k) for k in range(len(sets.keys))])
    return whole.values.tolist(), whole.offsets.tolist()


def state(shingled: dm.Shingled) -> dict:
    """Everything `shingle_records` decides, as plain values."""
    views = {
        v.name: {
            "members": v.members.tolist(), "sizes": v.sets.sizes().tolist(), "sets": whole_sets(v.sets),
            "records": v.signatures.records.tolist(), "column": v.signatures.column.tolist(),
            "band_keys": v.signatures.band_keys().tolist(),
            "matrix": v.signatures.block(list(range(len(v.signatures.keys)))).tolist(),
            "bands": (v.bands.bands, v.bands.rows), "ngram": v.ngram, "n_records": v.n_records,
        }
        for v in shingled.views
    }
    answers = shingled.answers
    return {
        "words": shingled.words.tolist(), "short_words": shingled.short_words, "reach": shingled.reach,
        "views": views, "answer_words": answers.words.tolist(),
        "answers": {n: (s.sizes().tolist(), whole_sets(s)) for n, s in answers.sets.items()},
        "dropped_system_prompts": shingled.dropped_system_prompts,
    }


@pytest.mark.parametrize("kind", ["memory", "files"])
def test_shingle_records_chunk_by_chunk_equals_all_at_once(kind, tmp_path, monkeypatch):
    monkeypatch.setattr(chunked, "BLOCK_BYTES", 64)
    chunks = chunk_records()
    cfg = dm.Config()
    whole = dm.shingle_records(pl.concat(chunks), cfg)
    source = dm.TextSource(3, lambda k: chunks[k])
    by_chunk = dm.shingle_records(source, cfg, store_of(kind, tmp_path))
    # what the whole gives: the shared prompt left out (records 0, 5, 9), records 1 and 8 within reach of
    # record 4 (22 bigrams / 0.8: 27), though record 2 alone (3 bigrams) would leave record 1 out
    assert whole.words.tolist() == [61, 61, 5, 61, 25, 61, 0, 20, 61, 20]
    assert (whole.reach, whole.dropped_system_prompts) == (27, 1)
    assert whole.short.sets.sizes().tolist() == [0, 11, 3, 0, 22, 0, 0, 18, 11, 18]
    assert whole.short.members.tolist() == [1, 2, 4, 7, 8, 9]
    assert whole.long.members.tolist() == [0, 1, 3, 5, 8]
    assert whole.prompt.members.tolist() == [0, 1, 2, 3, 4, 5, 7, 8, 9]
    assert state(by_chunk) == state(whole)
    long = by_chunk.long
    # in memory the chunks are joined once built; on files they stay apart
    assert long.sets.bounds.tolist() == ([0, 10] if kind == "memory" else [0, 4, 4, 10])
    # on files the budget of a few bytes makes groups of one or two records: pairs span two groups
    if kind == "files":
        assert all(len(v.sets.groups(np.arange(10))) >= 5 for v in by_chunk.views if v.sets.sizes().any())
    i, j = all_pairs(10)
    for a, b in zip(by_chunk.views, whole.views):
        assert a.exact(i, j).tolist() == b.exact(i, j).tolist()
        assert a.estimate(i, j) == b.estimate(i, j)
    assert by_chunk.answers.jaccard(i, j).tolist() == whole.answers.jaccard(i, j).tolist()


# A system prompt put into every 50th record of the real data: shared by 8 records, across chunks.
CUTS = [0, 130, 130, 400]  # three chunks, the middle one empty


def real_frame(tmp_path) -> pl.DataFrame:
    """The first 400 records of FastChat's dummy conversations (most are near duplicates of a few), read as the
    stage gets them, every 50th with a shared system prompt."""
    lines = (CHAT_DATA / "fastchat_dummy_conversation.jsonl").read_text(encoding="utf-8").splitlines()[:400]
    records = [json.loads(line) for line in lines]
    for k in range(0, 400, 50):
        records[k]["messages"].insert(0, {"role": "system", "content": SHARED_PROMPT})
    return stage_frame(tmp_path, records)


@pytest.mark.parametrize("threads", [1, 2])  # stream's shards one after another, or on the stage's threads
def test_find_near_duplicates_chunk_by_chunk_on_files_equals_all_at_once(tmp_path, monkeypatch, threads):
    monkeypatch.setattr(chunked, "BLOCK_BYTES", 4096)
    df = real_frame(tmp_path)
    cfg = dm.Config()
    whole = dm.find_near_duplicates(df, cfg)
    text_of = df.get_column(C.MESSAGES)
    source = dm.TextSource(3, lambda k: text_of[CUTS[k] : CUTS[k + 1]], dm._on_threads(threads))
    store = ChunkStore(tmp_path / "store")
    by_chunk = dm.find_near_duplicates(df.drop(C.MESSAGES), cfg, source=source, store=store)
    summary = whole.summary
    assert (summary["records"], summary["near_duplicates_rejected"], summary["shared_system_prompts_dropped"]) == (
        400, 318, 1)
    assert by_chunk.rows.equals(whole.rows)
    assert by_chunk.artifact == whole.artifact
    assert by_chunk.summary == whole.summary
    assert by_chunk.manifest == whole.manifest
    # 3 views' sets (values, offsets) and signatures (matrix, band keys), 2 answer sets, 3 chunks each: the
    # replaced short sets dropped
    assert len(list((tmp_path / "store").glob("*.npy"))) == 3 * (3 * 2 + 3 * 2 + 2 * 2)
    # the budget cuts each view's 400 records into many groups, so pairs span two groups
    probe = dm.shingle_records(source, cfg, ChunkStore(tmp_path / "probe"))
    assert [len(v.sets.groups(np.arange(400))) for v in probe.views] == [3, 21, 6]


@pytest.mark.parametrize("workers", [1, 2])
def test_the_column_in_memory_cut_into_chunks_on_threads_decides_as_one_block(tmp_path, monkeypatch, workers):
    df = real_frame(tmp_path)
    one_block = dm.find_near_duplicates(df, dm.Config(workers=1))  # 400 records: one chunk of MEMORY_CHUNK_ROWS
    monkeypatch.setattr(dm, "MEMORY_CHUNK_ROWS", 7)
    source = dm.TextSource.of(df.get_column(C.MESSAGES), workers)
    assert source.n_chunks == 58 and (source.map is dm._in_order) == (workers == 1)
    assert pl.concat([source.read(k) for k in range(58)]).equals(df.get_column(C.MESSAGES))
    cut = dm.find_near_duplicates(df, dm.Config(workers=workers))
    assert cut.rows.equals(one_block.rows)
    assert cut.artifact == one_block.artifact
    assert (cut.summary, cut.manifest) == (one_block.summary, one_block.manifest)
    assert one_block.summary["near_duplicates_rejected"] == 318
    shingled = dm.shingle_records(source, dm.Config(workers=workers))
    assert [v.sets.bounds.tolist() for v in shingled.views] == [[0, 400]] * 3  # joined once built
    assert [len(v.signatures.keys) for v in shingled.views] == [1, 1, 1]


def test_a_question_reads_only_the_chunks_holding_its_records(tmp_path):
    whole = random_sets(np.random.default_rng(3), [4, 6, 2, 5, 3, 7])
    sets = chunked_sets(ChunkStore(tmp_path / "store"), whole, [2, 2, 2])
    for name in ("values", "offsets"):  # chunk 1 (records 2 and 3) can no longer be read
        (tmp_path / "store" / f"{sets.keys[1]}.{name}.npy").unlink()
    i, j = np.array([0, 4, 1]), np.array([5, 5, 4])
    assert sets.exact(i, j).tolist() == jaccard_many(whole, i, j).tolist()
    with pytest.raises(FileNotFoundError):
        sets.exact(np.array([0]), np.array([2]))


@pytest.mark.parametrize("size", [1, 3])
def test_find_near_duplicates_is_the_same_whatever_its_slices(tmp_path, monkeypatch, size):
    """The check, the walk and the describe step each take a slice of pairs or records at a time."""
    df = real_frame(tmp_path)
    cfg = dm.Config(prompt_conflict="keep_best")
    whole = dm.find_near_duplicates(df, cfg)
    assert whole.summary["clusters"] > 3 and whole.summary["near_duplicates_rejected"] > size
    for name in ("_CHECK_SLICE", "_WALK_SLICE", "_DESCRIBE_SLICE"):
        monkeypatch.setattr(dm, name, size)
    sliced = dm.find_near_duplicates(df, cfg)
    assert sliced.rows.equals(whole.rows)
    assert sliced.artifact == whole.artifact
    assert sliced.summary == whole.summary
