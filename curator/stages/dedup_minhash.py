"""Near-duplicate clusters with MinHash LSH, prompt conflicts, and split keys that keep clusters whole.

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
ch. 3; the same pipeline as datatrove's and text-dedup's MinHash dedup, plus exact verification), one function
per step, composed by `find_near_duplicates`:

1. shingle (`shingle_records`, on curator/shingles.py): word n-grams (default 5, as datatrove and text-dedup)
   over the user and assistant turns, shared system prompts left out; three views (long, short, prompt, below).
2. sign (`sign_chunk`, on curator/lsh.py): datasketch's MinHash, scheme "affine32" (its default), `num_perm`
   permutations drawn from `seed` by datasketch; computed for a chunk's records at once, one permutation at a
   time, bit for bit what `MinHash.bulk` returns (tested), because MinHash.bulk's per-record objects cost 6x
   more time.
3. band (`band`): LSH banding with (bands, rows) chosen here, not by datasketch's default
   optimiser (which weighs false positives and negatives equally and gives 9 bands x 13 rows at 0.8/128, recall 0.40 at
   the threshold): the (b, r) with b*r <= num_perm whose recall at the threshold, 1 - (1 - t^r)^b, is at least
   `min_recall_at_threshold` and whose false-positive area (datasketch's integral of the candidate
   probability below the threshold) is smallest. Candidates cost only verification time; misses are lost.
4. verify (`verify`): every candidate pair's exact Jaccard on the shingle sets; only pairs >= threshold are edges,
   and only when their answers agree too: the exact Jaccard of their assistant turns (`AnswerSets`, at the
   n the shorter answer calls for) must reach `answer_threshold`. Without it a long prompt shared by records
   with different answers (a document with questions, one exercise solved in several languages) outweighs
   the answers and all but one are lost; such pairs go to the prompt view below, and the prompt-conflict
   policy decides.
5. cluster (`cluster`): union-find over the edges (connected components, as datatrove's MinhashDedupCluster). A
   cluster can be a chain (A~B, B~C, A far from C: templated prompts do this), so membership alone removes
   nothing.
6. choose (`choose`, `remove_against_kept`): each cluster keeps its best copy and removes only the members verified
   against that copy (exact Jaccard at the pair's n, and the answer check); the rest of the cluster goes
   through the same step until fewer than two records are left, so a chain keeps its far end. Every removed
   record is within the threshold of the copy kept for it, never only through a chain; duplicates.jsonl gives
   each member the copy it was removed for (`of`) and each cluster its lowest such Jaccard (`min_jaccard`).
   Best copy: highest `quality_score`, then most `n_assistant_tokens` (more supervised signal), then first
   seen (`row`); missing columns or nulls rank last.
7. describe (`row_columns`, `duplicates_jsonl`, `summarize`, `manifest_of`): the columns, the artifact, the
   summary and the manifest.

Chunks: steps 1 and 2 read the text chunk by chunk (`TextSource`: under the local engine, the column in chunks
of MEMORY_CHUNK_ROWS records on `workers` threads; a shard's live rows at a time under stream and ray) and keep
only sets and signatures, in memory or as files (curator/chunked.py); the later steps ask about pairs, answered
block by block from those (in memory, the three views at once on the threads). Everything but the short view
depends on a record alone; the short view's reach needs every record, so the records it adds are read again once
it is known. Shared system prompts are counted over all chunks first. The decisions do not depend on the
chunking or the threads (tests/test_chunked.py).

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
near-duplicate cluster form a same-prompt group (union-find again, `same_prompt_groups`). Each member's answer is
compared with the group's best copy's (same order as above; answer Jaccard >= `answer_threshold` is "the same
answer"). A group whose members all give the best copy's answer is no conflict (they differ elsewhere, e.g. in a
system prompt of their own): kept, shown as `same_answer`. Otherwise it is a conflict group, every member flagged
(`prompt_conflict`); policy `keep_all` keeps them, `keep_best` keeps the best copy and the copies giving its
answer and rejects the others, `reject` rejects the whole group (`judge_prompt_groups`). Details name the answer
Jaccard.

Split key (`split_keys`): the `content_hash` of the best copy of the member's cluster (copies kept apart from a
chain stay on its side: they are close to what was removed), or of the best copy of its same-prompt group
(conflict or not).
The split stage hashes `split_key`, else `content_hash`, so a kept copy that is alone
in its group keeps exactly the side its own content gives it, whatever else is added later; only extra kept
members of a same-prompt group follow their group's best copy. Limits: when new data brings a better copy into a
cluster, the new copy is kept on its own side and the old one is rejected (nothing moves to the other side); when
it brings a better copy into a same-prompt group kept whole, the group follows the new best copy and its old
members may change side; when new data bridges two groups, the merged group follows one key.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import numpy as np
import polars as pl

from curator import columns as C
from curator.chunked import ChunkedSets, ChunkedSignatures, ChunkStore, StoredSets, StoredSignatures
from curator.columns import with_reject
from curator.memory import give_back_freed_memory
from curator.lsh import (
    SCHEME,
    Bands,
    Components,
    UnionFind,
    band_keys,
    choose_bands,
    components_of,
    min_agreement,
    pairs_of_band_keys,
)
from curator.lsh import signatures as minhash_signatures
from curator.shingles import (
    ShingleSets,
    SortedSets,
    Turns,
    distinct_tokens,
    merge_sorted_sets,
    shingle,
    shared_system_prompts,
    sorted_sets,
    system_prompt_counts,
    tokenize_turns,
)
from curator.stages.base import StageContext
from curator.stage_configs import DedupMinhashConfig as Config  # noqa: F401  (re-exported: the stage's settings)

NAME = "dedup_minhash"


ARTIFACT = "duplicates.jsonl"


# ------------------------------------------------------------------------------------------------- shingle


@dataclass(frozen=True, eq=False)
class View:
    """One way of comparing records: their n-gram sets, the records that take part, threshold and LSH bands."""

    name: str
    ngram: int
    sets: ChunkedSets  # distinct shingles (sorted) of at least the members: what exact Jaccard reads
    members: np.ndarray  # ascending record indices with a non-empty set that take part
    threshold: float
    bands: Bands
    signatures: ChunkedSignatures  # the members' MinHash signatures

    @property
    def n_records(self) -> int:
        return self.sets.n_records

    def exact(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Exact Jaccard of the shingle sets (64-bit values) of each pair (i[p], j[p])."""
        return self.sets.exact(i, j)

    def estimate(self, i: np.ndarray, j: np.ndarray) -> list[float | None]:
        """MinHash estimates of each pair (None when a member of the pair is not signed)."""
        return self.signatures.estimate(i, j)


@dataclass(frozen=True, eq=False)
class Shingled:
    """The shingle step's result: each record's length, the three signed views and the answers' sets."""

    words: np.ndarray  # tokens per record in the turns of `roles`
    short_words: int  # records with fewer tokens are short: compared with short_ngram-grams
    reach: int  # the short view's bound on a record's distinct short-n shingles (-1: no short record)
    long: View
    short: View
    prompt: View
    answers: "AnswerSets"
    dropped_system_prompts: int  # distinct shared system prompts left out

    @property
    def is_short(self) -> np.ndarray:
        return self.words < self.short_words

    @property
    def views(self) -> tuple[View, View, View]:
        return self.long, self.short, self.prompt


def _in_order(fn: Callable[[int], Any], n: int) -> Iterable[Any]:
    return map(fn, range(n))


def _on_threads(threads: int) -> Callable[[Callable[[int], Any], int], Iterable[Any]]:
    """A `TextSource.map` giving fn(0) .. fn(n - 1) in order, computed on `threads` threads."""

    def map_(fn: Callable[[int], Any], n: int) -> Iterator[Any]:
        with ThreadPoolExecutor(threads) as pool:
            yield from pool.map(fn, range(n))

    return map_


# Records per chunk when the whole column is in memory (the local engine). The chunks are shingled and signed
# on the stage's threads: Polars' tokenising and numpy's sorts release the GIL, so 2 threads take 0.6 of one
# on 50k records; and chunks of this size are faster than one block even on one thread (caches).
MEMORY_CHUNK_ROWS = 5_000


@dataclass(frozen=True)
class TextSource:
    """The records' `messages`, chunk by chunk in record order; `read(k)` may be called again for a later pass.

    `map(fn, n)` gives fn(0) .. fn(n - 1) in order: here, one after another or on the stage's threads
    (`in_process`: `fn` may be a closure); under the ray engine, as tasks on the cluster's workers (`fn` then runs
    in another process: it writes what it keeps into a store on files).
    """

    n_chunks: int
    read: Callable[[int], pl.Series]
    map: Callable[[Callable[[int], Any], int], Iterable[Any]] = _in_order
    in_process: bool = True

    @classmethod
    def of(cls, messages: pl.Series, threads: int = 1) -> "TextSource":
        """The column in chunks of MEMORY_CHUNK_ROWS records, shingled on `threads` threads."""
        n_chunks = max(1, math.ceil(len(messages) / MEMORY_CHUNK_ROWS))
        bounds = [len(messages) * k // n_chunks for k in range(n_chunks + 1)]

        def read(k: int) -> pl.Series:
            return messages.slice(bounds[k], bounds[k + 1] - bounds[k])

        return cls(n_chunks, read, _on_threads(threads) if threads > 1 and n_chunks > 1 else _in_order)


def tokenize(messages: pl.Series, cfg: Config, shared: pl.DataFrame | None = None) -> Turns:
    """The turns of `roles`, tokenised, and always the user and assistant turns: the prompt view reads the user
    turns and the answer check the assistant turns, whatever `roles` (the near-duplicate views' turns) says.
    `shared`: the keys of the shared system prompts over all records (`shared_prompts`)."""
    roles = sorted(set(cfg.roles) | {"user", "assistant"})
    return tokenize_turns(messages, roles, cfg.system_prompt, cfg.shared_system_min_records, shared)


def shared_prompts(source: TextSource, cfg: Config) -> pl.DataFrame | None:
    """The keys of the system prompts `drop_shared` leaves out, counted over every chunk (None: no such policy)."""
    if "system" not in cfg.roles or cfg.system_prompt != "drop_shared":
        return None
    counts = list(source.map(partial(_prompt_counts, source.read), source.n_chunks))
    return shared_system_prompts(counts, cfg.shared_system_min_records)


def _prompt_counts(read: Callable[[int], pl.Series], k: int) -> pl.DataFrame:
    return system_prompt_counts(read(k))


@dataclass(frozen=True, eq=False)
class ChunkShingles:
    """One chunk's records shingled: their lengths and, per view, their sets (chunk-local record indices)."""

    words: np.ndarray  # tokens in the turns of `roles`
    at_least: np.ndarray  # lower bound of distinct short-n shingles (`distinct_tokens`)
    long: SortedSets  # of the long members only
    long_members: np.ndarray
    short: SortedSets  # of the short records only (records within reach are added once `reach` is known)
    prompt: SortedSets
    prompt_members: np.ndarray
    answer_words: np.ndarray  # tokens in the assistant turns
    answers: dict[int, SortedSets]  # assistant-turn sets at each n the answer check uses


def shingle_chunk(messages: pl.Series, cfg: Config, shared: pl.DataFrame | None) -> ChunkShingles:
    """Tokenise a chunk and build every set that depends on its records alone."""
    turns = tokenize(messages, cfg, shared)
    near_turns = np.isin(turns.role, list(cfg.roles))
    words = turns.words(near_turns)
    is_short = words < cfg.short_words()
    long = shingle(turns, cfg.ngram, near_turns & ~is_short[turns.record])
    long_members = np.flatnonzero(~is_short & (long.sizes() > 0))
    n_turns = np.bincount(turns.record[near_turns & (turns.length > 0)], minlength=turns.n_records)
    prompt = shingle(turns, cfg.prompt_ngram, turns.role == "user")
    prompt_members = np.flatnonzero(prompt.sizes() > 0)
    is_answer = turns.role == "assistant"
    answer_words = turns.words(is_answer)
    answered = is_answer & (answer_words > 0)[turns.record]
    return ChunkShingles(
        words=words,
        at_least=distinct_tokens(turns, near_turns) - (cfg.short_ngram - 1) * n_turns,
        long=sorted_sets(long, long_members),
        long_members=long_members,
        short=sorted_sets(shingle(turns, cfg.short_ngram, near_turns & is_short[turns.record])),
        prompt=sorted_sets(prompt, prompt_members),
        prompt_members=prompt_members,
        answer_words=answer_words,
        answers={n: sorted_sets(shingle(turns, n, answered)) for n in sorted({cfg.short_ngram, cfg.ngram})},
    )


def sign_chunk(store: ChunkStore, sets: SortedSets, members: np.ndarray, bands: Bands, cfg: Config,
               workers: int) -> StoredSignatures:
    """Sign a chunk's `members` (chunk-local) with datasketch's affine32 permutations drawn from `seed`, and put
    their signatures and band keys in `store`."""
    matrix = minhash_signatures(ShingleSets(sets.values, sets.offsets), members, cfg.num_perm, cfg.seed, workers)
    return StoredSignatures.put(store, matrix, members, band_keys(matrix, bands.bands, bands.rows))


@dataclass(frozen=True)
class ChunkDone:
    """A chunk shingled and signed, its sets and signatures in the store: what the records' figures are
    gathered from (one small array per record each)."""

    words: np.ndarray
    at_least: np.ndarray
    answer_words: np.ndarray
    long: StoredSets
    long_signatures: StoredSignatures
    short: StoredSets  # short records only
    prompt: StoredSets
    prompt_signatures: StoredSignatures
    answers: dict[int, StoredSets]


def shingle_and_sign(
    read: Callable[[int], pl.Series], cfg: Config, shared: pl.DataFrame | None, store: ChunkStore, workers: int,
    k: int,
) -> ChunkDone:
    """Shingle chunk `k`, sign its long and prompt views and put what is kept into `store`."""
    chunk = shingle_chunk(read(k), cfg, shared)
    near_bands = choose_bands(cfg.threshold, cfg.num_perm, cfg.min_recall_at_threshold)
    prompt_bands = choose_bands(cfg.prompt_threshold, cfg.num_perm, cfg.min_recall_at_threshold)
    return ChunkDone(
        words=chunk.words,
        at_least=chunk.at_least,
        answer_words=chunk.answer_words,
        long=StoredSets.put(store, chunk.long),
        long_signatures=sign_chunk(store, chunk.long, chunk.long_members, near_bands, cfg, workers),
        short=StoredSets.put(store, chunk.short),
        prompt=StoredSets.put(store, chunk.prompt),
        prompt_signatures=sign_chunk(store, chunk.prompt, chunk.prompt_members, prompt_bands, cfg, workers),
        answers={n: StoredSets.put(store, sets) for n, sets in chunk.answers.items()},
    )


def add_within_reach(
    source: TextSource, short: ChunkedSets, maybe: np.ndarray, cfg: Config, shared: pl.DataFrame | None
) -> None:
    """Add to the short view's sets those of the longer records `maybe` that may be within reach of a short
    record, reading again only the chunks that hold one and tokenising only those records (on the source's
    threads, or one after another here when its map runs elsewhere)."""
    bounds = short.bounds.tolist()
    todo = [k for k in range(source.n_chunks) if maybe[bounds[k] : bounds[k + 1]].any()]

    def within(t: int) -> SortedSets:
        k = todo[t]
        local = np.flatnonzero(maybe[bounds[k] : bounds[k + 1]])
        turns = tokenize(source.read(k).gather(local), cfg, shared)
        near_turns = np.isin(turns.role, list(cfg.roles))
        return spread_sets(sorted_sets(shingle(turns, cfg.short_ngram, near_turns)), local, bounds[k + 1] - bounds[k])

    in_chunks = source.map if source.in_process else _in_order
    for k, sets in zip(todo, in_chunks(within, len(todo))):
        short.replace(k, merge_sorted_sets(short.chunk(k), sets))


def spread_sets(sets: SortedSets, positions: np.ndarray, n: int) -> SortedSets:
    """The sets of `n` records, those of `positions` (ascending) from `sets` in order, the others empty."""
    sizes = np.zeros(n, dtype=np.int64)
    sizes[positions] = np.diff(sets.offsets)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return SortedSets(values=sets.values, offsets=offsets)


def shingle_records(
    source: TextSource | pl.Series, cfg: Config, store: ChunkStore | None = None,
    advance: Callable[[int], None] = lambda n: None, workers: int = 1,
) -> Shingled:
    """Tokenise the records chunk by chunk, build and sign the long, short and prompt views and the answers' sets.

    Every set and signature depends on its record alone, except the short view's: which longer records it
    takes in depends on the largest short record of all (`reach`), so those are added after the first pass.
    `advance(n)` is called after each chunk (its records) and once more after the short view is signed.
    """
    if isinstance(source, pl.Series):
        source = TextSource.of(source)
    store = store or ChunkStore()
    # chunks that run on threads sign on one thread each: the threads already take the cores
    sign_threads = 1 if source.map is not _in_order else workers
    shared = shared_prompts(source, cfg)
    long, short, prompt = ChunkedSets(store), ChunkedSets(store), ChunkedSets(store)
    answer_sets = {n: ChunkedSets(store) for n in sorted({cfg.short_ngram, cfg.ngram})}
    long_sig, short_sig, prompt_sig = (ChunkedSignatures(store, cfg.num_perm) for _ in range(3))
    words, at_least, answer_words = [], [], []
    offset = 0
    run = partial(shingle_and_sign, source.read, cfg, shared, store, sign_threads)
    for done in source.map(run, source.n_chunks):
        long.add(done.long)
        long_sig.add(done.long_signatures, offset)
        prompt.add(done.prompt)
        prompt_sig.add(done.prompt_signatures, offset)
        short.add(done.short)
        for n, sets in done.answers.items():
            answer_sets[n].add(sets)
        words.append(done.words)
        at_least.append(done.at_least)
        answer_words.append(done.answer_words)
        offset += len(done.words)
        advance(len(done.words))
    n = offset
    # each chunk chooses them too, once tokenised: so datasketch (0.5 s to import) is first imported on a
    # chunk's thread while the other threads tokenise
    near_bands = choose_bands(cfg.threshold, cfg.num_perm, cfg.min_recall_at_threshold)
    prompt_bands = choose_bands(cfg.prompt_threshold, cfg.num_perm, cfg.min_recall_at_threshold)
    words_all = np.concatenate(words)
    is_short = words_all < cfg.short_words()

    # the short view: short records, and every record that can be within the threshold of one (see the module doc)
    reach = -1
    if is_short.any():
        reach = math.floor(Fraction(int(short.sizes()[is_short].max())) / Fraction(str(cfg.threshold)))
    maybe = ~is_short & (np.concatenate(at_least) <= reach)
    if maybe.any():
        add_within_reach(source, short, maybe, cfg, shared)
    sizes = short.sizes()
    short_members = np.flatnonzero((is_short | (maybe & (sizes <= reach))) & (sizes > 0))
    for k in range(source.n_chunks):
        lo, hi = int(short.bounds[k]), int(short.bounds[k + 1])
        members = short_members[(short_members >= lo) & (short_members < hi)] - lo
        short_sig.add(sign_chunk(store, short.chunk(k), members, near_bands, cfg, workers), lo)
    advance(n)

    for signatures in (long_sig, short_sig, prompt_sig):
        signatures.close(n)
    for chunked in (long, short, prompt, *answer_sets.values(), long_sig, short_sig, prompt_sig):
        chunked.consolidate()  # in memory, the later questions then read one block as it is
    return Shingled(
        words=words_all,
        short_words=cfg.short_words(),
        reach=reach,
        long=View("long", cfg.ngram, long, long_sig.records, cfg.threshold, near_bands, long_sig),
        short=View("short", cfg.short_ngram, short, short_members, cfg.threshold, near_bands, short_sig),
        prompt=View("prompt", cfg.prompt_ngram, prompt, prompt_sig.records, cfg.prompt_threshold, prompt_bands,
                    prompt_sig),
        answers=AnswerSets(answer_sets, np.concatenate(answer_words), cfg),
        dropped_system_prompts=0 if shared is None else shared.height,
    )


# ---------------------------------------------------------------------------------------------------- band


@dataclass(frozen=True, eq=False)
class Candidates:
    """A view's candidate pairs, as record indices."""

    pairs: np.ndarray  # (m, 2), i < j, sorted: the pairs left after the filters of `band`
    found: int  # pairs sharing a band, before the filters (the summary's candidate_pairs)


def band(view: View, accept: np.ndarray | None = None) -> Candidates:
    """Pairs of members whose signatures agree on every row of at least one band (`band_pairs`).

    `accept` (bool per record) keeps only pairs with at least one accepted member. A pair whose signatures agree
    on fewer permutations than the binomial cut-off (`min_agreement`) is an LSH false positive and is dropped.
    """
    sig = view.signatures
    cols = pairs_of_band_keys((sig.band_key(b) for b in range(sig.n_bands)), len(sig.records))
    found = len(cols)
    if accept is not None:
        cols = cols[accept[view.members[cols[:, 0]]] | accept[view.members[cols[:, 1]]]]
    cols = cols[sig.agreements(cols) >= min_agreement(sig.num_perm, view.threshold)]
    # `members` is ascending and pairs_of_band_keys sorts (lo, hi), so record pairs come out as i < j, sorted;
    # record numbers fit the columns' type. In place, a slice at a time: the pairs are the stage's largest array.
    members = view.members.astype(cols.dtype)
    for lo in range(0, len(cols), _CHECK_SLICE):
        cols[lo : lo + _CHECK_SLICE] = members[cols[lo : lo + _CHECK_SLICE]]
    return Candidates(cols, found)


# -------------------------------------------------------------------------------------------------- verify


class AnswerSets:
    """Exact Jaccard of two records' answers (their assistant turns, whatever `roles` says).

    Near-duplicate edges need it (`answer_threshold`): the whole-record Jaccard of two records sharing a long
    prompt (a document, a task statement) stays high whatever their answers say. A pair's answers are compared
    at the n-gram the shorter answer calls for, by the rule records follow: `short_ngram` below `short_words`
    tokens, else `ngram`. Two answers without any token agree (1.0); one without against one with is 0.0.
    """

    def __init__(self, sets: dict[int, ChunkedSets], words: np.ndarray, cfg: Config) -> None:
        self.sets = sets  # every answered record's assistant-turn set, at short_ngram and at ngram
        self.words = words  # tokens in each record's assistant turns
        self.short_words = cfg.short_words()
        self.short_ngram, self.ngram = cfg.short_ngram, cfg.ngram

    def jaccard(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Exact answer Jaccard of each pair (i[p], j[p])."""
        i = np.asarray(i, dtype=np.int64)
        j = np.asarray(j, dtype=np.int64)
        out = np.zeros(len(i), dtype=np.float64)
        short = np.minimum(self.words[i], self.words[j]) < self.short_words
        for n, sel in ((self.short_ngram, short), (self.ngram, ~short)):
            if sel.any():
                out[sel] = self.sets[n].exact(i[sel], j[sel])
        out[(self.words[i] == 0) & (self.words[j] == 0)] = 1.0
        return out


@dataclass(frozen=True, eq=False)
class Edges:
    """A view's verified pairs, and the counts the summary reports."""

    pairs: np.ndarray  # (m, 2) int64 record indices, i < j: exact Jaccard >= threshold
    scores: np.ndarray  # (m,) float64: each pair's exact Jaccard
    candidates: int  # pairs sharing a band
    verified: int  # candidates whose exact Jaccard decided something (their records were not yet connected)
    answer_dropped: int  # pairs at or above the threshold whose answers differ

    @classmethod
    def of(cls, edges: list[tuple[int, int, float]], candidates: int, verified: int, answer_dropped: int) -> "Edges":
        pairs = np.array([(i, j) for i, j, _ in edges], dtype=np.int64).reshape(-1, 2)
        return cls(pairs, np.array([x for _, _, x in edges], dtype=np.float64), candidates, verified, answer_dropped)

    def as_list(self) -> list[tuple[int, int, float]]:
        return [(i, j, x) for (i, j), x in zip(self.pairs.tolist(), self.scores.tolist())]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Edges) and (self.as_list(), self.candidates, self.verified, self.answer_dropped) == (
            other.as_list(), other.candidates, other.verified, other.answer_dropped)


def view_edges(view: View, accept: np.ndarray | None = None, answers: AnswerSets | None = None,
               answer_threshold: float = 0.0) -> Edges:
    """A view's edges: its candidate pairs (`band`), verified (`verify`)."""
    return verify(view, band(view, accept=accept), answers, answer_threshold)


def verify(
    view: View, candidates: Candidates, answers: AnswerSets | None = None, answer_threshold: float = 0.0
) -> Edges:
    """The candidates whose exact Jaccard reaches the view's threshold, and with `answers` whose answer Jaccard
    reaches `answer_threshold` too.

    A candidate whose two records are already connected cannot change a component: it is not counted as verified
    and gives no edge.
    """
    pairs = candidates.pairs
    # Exact Jaccard (and the answer check) of every candidate, a slice of pairs at a time (the answer check's
    # index arrays cost ~50 bytes a pair); the walk below then keeps only those whose records were not
    # connected yet.
    scores = np.empty(len(pairs), dtype=np.float64)
    good = np.empty(len(pairs), dtype=bool)
    dropped = 0
    for lo in range(0, len(pairs), _CHECK_SLICE):
        part = pairs[lo : lo + _CHECK_SLICE]
        score = view.exact(part[:, 0], part[:, 1])
        ok = score >= view.threshold
        if answers is not None:
            at = np.flatnonzero(ok)
            differ = at[answers.jaccard(part[at, 0], part[at, 1]) < answer_threshold]
            ok[differ] = False
            dropped += len(differ)
        scores[lo : lo + len(part)], good[lo : lo + len(part)] = score, ok
    uf = UnionFind(view.n_records)
    kept: list[np.ndarray] = []
    verified = 0
    for lo in range(0, len(pairs), _WALK_SLICE):  # Python objects for a slice of the pairs at a time
        part = slice(lo, lo + _WALK_SLICE)
        edges = []
        for k, ((i, j), ok) in enumerate(zip(pairs[part].tolist(), good[part].tolist())):
            if uf.find(i) == uf.find(j):
                continue
            verified += 1
            if ok:
                uf.union(i, j)
                edges.append(k)
        kept.append(np.array(edges, dtype=np.int64) + lo)
    at = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    return Edges(pairs[at].astype(np.int64).reshape(-1, 2), scores[at].astype(np.float64), candidates.found,
                 verified, dropped)


_WALK_SLICE = 1 << 18
_CHECK_SLICE = 1 << 21


# ------------------------------------------------------------------------------------------------- cluster


def cluster(n: int, *views: Edges) -> Components:
    """Near-duplicate clusters: connected components of the views' edges over records 0..n-1, each ascending,
    numbered by their first record. Candidates only: a component can be a chain (see `remove_against_kept`)."""
    return components_of(n, np.concatenate([edges.pairs for edges in views]) if views else np.zeros((0, 2)))


# -------------------------------------------------------------------------------------------------- choose


def keep_order(df: pl.DataFrame) -> np.ndarray:
    """Rank of each row as the copy to keep (0 = best): quality_score desc, n_assistant_tokens desc, row asc."""
    keys, desc = [], []
    for name in (C.QUALITY_SCORE, C.N_ASSISTANT_TOKENS):
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


@dataclass(frozen=True, eq=False)
class KeptCheck:
    """Whether records are near-duplicates of given kept copies: the exact Jaccard at the n the pair is judged at
    (short-n when either has fewer than `short_words` tokens, as the edges), then the answer check.

    A short record's pair with a record the short view did not shingle reads Jaccard 0, which is right as a
    verdict: such a record has more distinct short-n shingles than the view's `reach`, so Jaccard's size bound
    keeps it below the threshold of every short record.
    """

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


@dataclass(frozen=True, eq=False)
class Removed:
    """The records removed as near duplicates (ascending), the copy kept for each and the exact Jaccard to it."""

    records: np.ndarray  # int64
    kept: np.ndarray  # int64
    jaccard: np.ndarray  # float64

    def as_dict(self) -> dict[int, Removal]:
        return {i: Removal(k, j) for i, k, j in zip(self.records.tolist(), self.kept.tolist(), self.jaccard.tolist())}


def _run_starts(label: np.ndarray) -> np.ndarray:
    """Whether each position of a grouped `label` begins its group."""
    first = np.ones(len(label), dtype=bool)
    first[1:] = label[1:] != label[:-1]
    return first


def remove_against_kept(components: Components, rank: np.ndarray, check: KeptCheck) -> Removed:
    """The records to remove, each verified against the copy kept for it.

    Union-find components join A~B and B~C however far A is from C, so they are candidates only: each keeps
    its best member (lowest `rank`) and removes the members `check` accepts against it; the remaining
    members are treated alike, round after round, until fewer than two are left. Every record is thus kept
    or within the threshold of a kept copy. One `check` batch per round for all components; deterministic,
    since `rank` is a total order.
    """
    label, records = by_rank(components, rank)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    while len(records):
        first = _run_starts(label)
        kept = records[first][np.cumsum(first) - 1]  # each record's component's best remaining member
        others = np.flatnonzero(~first)
        near, jac = check(records[others], kept[others])
        found.append((records[others[near]], kept[others[near]], jac[near]))
        rest = others[~near]
        label, records = label[rest], records[rest]
        first = _run_starts(label)
        starts = np.flatnonzero(first)
        sizes = np.diff(np.append(starts, len(label)))
        left = np.repeat(sizes > 1, sizes)  # a component needs two members left to remove anything
        label, records = label[left], records[left]
    if not found:
        return Removed(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    gone, kept_for, jaccard = (np.concatenate(x) for x in zip(*found))
    order = np.argsort(gone, kind="stable")
    return Removed(gone[order].astype(np.int64), kept_for[order].astype(np.int64), jaccard[order].astype(np.float64))


@dataclass(frozen=True, eq=False)
class Clusters:
    """Near-duplicate clusters, each cluster's best copy, and the records removed."""

    members: Components  # cluster k's records, ascending
    best: np.ndarray  # cluster k's best copy (kept)
    removed: Removed

    def cluster_of(self, n: int) -> np.ndarray:
        """Each record's cluster, -1 when in none."""
        out = np.full(n, -1, dtype=np.int64)
        out[self.members.records] = self.members.label
        return out

    def best_of(self, n: int) -> np.ndarray:
        """Each record's cluster's best copy, itself when in no cluster: the split and the prompt view follow it."""
        out = np.arange(n, dtype=np.int64)
        out[self.members.records] = self.best[self.members.label]
        return out


def by_rank(components: Components, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label, records) of `components`, each component's members from the lowest `rank` on."""
    order = np.lexsort((rank[components.records], components.label))
    return components.label[order], components.records[order]


def best_members(components: Components, rank: np.ndarray) -> np.ndarray:
    """Each component's member of lowest `rank`."""
    label, records = by_rank(components, rank)
    return records[_run_starts(label)]


def choose(components: Components, rank: np.ndarray, check: KeptCheck) -> Clusters:
    """Each cluster's best copy (lowest `rank`) and the records removed against kept copies."""
    return Clusters(components, best_members(components, rank), remove_against_kept(components, rank, check))


def same_prompt_groups(n: int, prompt: Edges, best_of: np.ndarray) -> Components:
    """Records with near-identical user turns that are not one near-duplicate cluster, as components.

    A cluster takes part through its best copy (`best_of`), so a group holds best copies and records in no
    cluster; a pair inside one cluster is no group.
    """
    a, b = best_of[prompt.pairs[:, 0]], best_of[prompt.pairs[:, 1]]
    apart = a != b
    return components_of(n, np.stack((np.minimum(a, b)[apart], np.maximum(a, b)[apart]), axis=1))


@dataclass(frozen=True)
class GroupMember:
    """A record of a same-prompt group, compared with the group's best copy."""

    record: int
    prompt_jaccard: float | None  # None for the best copy itself
    answer_jaccard: float | None  # None for the best copy itself
    same_answer: bool  # gives the best copy's answer (the best copy does)
    kept: bool  # under the prompt_conflict policy


@dataclass(frozen=True)
class PromptGroup:
    """A same-prompt group: a conflict when a member answers differently from the best copy."""

    best: int
    members: list[GroupMember]  # ascending by record

    @property
    def conflict(self) -> bool:
        return any(not m.same_answer for m in self.members)

    @property
    def differ(self) -> list[int]:
        """The members whose answer differs from the best copy's."""
        return [m.record for m in self.members if not m.same_answer]


def kept_in_group(conflict: bool, same_answer: bool, policy: str) -> bool:
    """Whether the prompt_conflict `policy` keeps a member: all of a group without conflict; in a conflict all
    (keep_all), the best copy and the copies giving its answer (keep_best), or none (reject)."""
    return not conflict or policy == "keep_all" or (policy == "keep_best" and same_answer)


def judge_prompt_groups(
    groups: Components, rank: np.ndarray, prompt: View, answers: AnswerSets, cfg: Config
) -> list[PromptGroup]:
    """Each group's best copy (lowest `rank`), each member's prompt and answer Jaccard to it, whether it gives the
    same answer (answer Jaccard >= `answer_threshold`) and whether the `prompt_conflict` policy keeps it."""
    bests = best_members(groups, rank)
    flat, flat_best = groups.records, bests[groups.label]
    prompt_j = iter(prompt.exact(flat, flat_best).tolist())
    answer_j = iter(answers.jaccard(flat, flat_best).tolist())
    out = []
    for best, members in zip(bests.tolist(), groups.as_lists()):
        scores = [(i, next(prompt_j), next(answer_j)) for i in members]
        same = [i == best or aj >= cfg.answer_threshold for i, _, aj in scores]
        conflict = not all(same)
        out.append(
            PromptGroup(
                best,
                [
                    GroupMember(
                        i,
                        None if i == best else pj,
                        None if i == best else aj,
                        s,
                        kept_in_group(conflict, s, cfg.prompt_conflict),
                    )
                    for (i, pj, aj), s in zip(scores, same)
                ],
            )
        )
    return out


# ------------------------------------------------------------------------------------------------ describe


class Estimate(NamedTuple):
    """How a removed record's pair with its kept copy was seen: MinHash estimate and the n-gram it is judged at."""

    value: float | None  # None when a member of the pair was not signed
    ngram: int


@dataclass(frozen=True, eq=False)
class Estimates:
    """`Estimate`s of the removed records, in the order of `Removed.records`."""

    value: np.ndarray  # float64, NaN when a member of the pair was not signed
    ngram: np.ndarray  # int64

    def as_dict(self, removed: Removed) -> dict[int, Estimate]:
        return {i: Estimate(None if math.isnan(v) else v, g)
                for i, v, g in zip(removed.records.tolist(), self.value.tolist(), self.ngram.tolist())}


def removal_estimates(removed: Removed, check: KeptCheck) -> Estimates:
    """The MinHash estimate of each removed record's pair with its kept copy, from the view that judges the pair."""
    short = check.short_pair(removed.records, removed.kept)
    value = np.full(len(short), np.nan)
    ngram = np.zeros(len(short), dtype=np.int64)
    for view, sel in ((check.short, short), (check.long, ~short)):
        value[sel] = view.signatures.estimates(removed.records[sel], removed.kept[sel])
        ngram[sel] = view.ngram
    return Estimates(value, ngram)


def near_dup_detail(kept_ref: str, removal: Removal, estimate: Estimate, cid: int) -> str:
    return (
        f"near-duplicate of {kept_ref} (jaccard {removal.jaccard:.3f}, estimated {_fmt(estimate.value)}, "
        f"cluster {cid}, {estimate.ngram}-grams)"
    )


def conflict_detail(member: GroupMember, group: PromptGroup, refs: list[str], policy: str) -> str:
    """Why a member of a conflict group is rejected: which record answers differently, or how it compares."""
    differ = group.differ
    if member.record == group.best:
        return f"prompt answered differently by {len(differ)} other record(s), first {refs[differ[0]]}; policy {policy}"
    prompt = f"same prompt as {refs[group.best]} (prompt jaccard {_fmt(member.prompt_jaccard)})"
    if member.same_answer:
        return (
            f"{prompt} and the same answer (answer jaccard {_fmt(member.answer_jaccard)}), in a group with "
            f"{len(differ)} different answer(s); policy {policy}"
        )
    return f"{prompt}, different answer (answer jaccard {_fmt(member.answer_jaccard)}); policy {policy}"


class Refs:
    """Records' refs (or any strings) by index, read from a Series a slice at a time: a Python list of a million
    refs costs ~100 MB."""

    def __init__(self, values: pl.Series | list[str]) -> None:
        self.series = values if isinstance(values, pl.Series) else pl.Series(values, dtype=pl.Utf8)

    def __len__(self) -> int:
        return len(self.series)

    def take(self, at: np.ndarray) -> list[str]:
        return self.series.gather(np.asarray(at, dtype=np.int64)).to_list()

    def __getitem__(self, i: int) -> str:
        return self.series[int(i)]


def _nulls_below_zero(name: str, index: np.ndarray) -> pl.Series:
    """`index` as an Int64 column, null where negative (an index that gathers null)."""
    s = pl.Series(name, index, dtype=pl.Int64)
    return pl.select(pl.when(s >= 0).then(s).alias(name)).to_series()


def _spread(name: str, values: pl.Series, at: np.ndarray, n: int) -> pl.Series:
    """A column of n rows: `values[k]` at row `at[k]` (distinct rows), null elsewhere."""
    pos = np.full(n, -1, dtype=np.int64)
    pos[at] = np.arange(len(at))
    return values.gather(_nulls_below_zero("_pos", pos)).alias(name)


def near_dup_details(refs: Refs, clusters: Clusters, estimates: Estimates, n: int) -> pl.Series:
    """The reject detail of every removed record (`near_dup_detail`), a slice of records at a time."""
    removed, cluster_of = clusters.removed, clusters.cluster_of(n)
    parts = []
    for lo in range(0, len(removed.records), _DESCRIBE_SLICE):
        part = slice(lo, lo + _DESCRIBE_SLICE)
        parts.append(pl.Series([
            near_dup_detail(ref, Removal(kept, j), Estimate(None if math.isnan(e) else e, g), cid)
            for ref, kept, j, e, g, cid in zip(
                refs.take(removed.kept[part]), removed.kept[part].tolist(), removed.jaccard[part].tolist(),
                estimates.value[part].tolist(), estimates.ngram[part].tolist(),
                cluster_of[removed.records[part]].tolist())
        ], dtype=pl.Utf8))
    return pl.concat(parts) if parts else pl.Series([], dtype=pl.Utf8)


_DESCRIBE_SLICE = 1 << 16


def split_keys(hashes: pl.Series | list[str], clusters: Clusters, groups: list[PromptGroup]) -> pl.Series:
    """The split key of each record in a cluster or a same-prompt group: the content hash of its cluster's best
    copy, or of the best copy of the group that copy is in; null for the others."""
    hashes = Refs(hashes).series
    n = len(hashes)
    group_best = np.arange(n, dtype=np.int64)
    grouped = np.zeros(n, dtype=bool)
    for g in groups:
        for m in g.members:
            group_best[m.record], grouped[m.record] = g.best, True
    key = group_best[clusters.best_of(n)]
    key[~((clusters.cluster_of(n) >= 0) | grouped)] = -1
    return hashes.gather(_nulls_below_zero("_key", key)).alias(C.SPLIT_KEY)


def row_columns(
    refs: pl.Series | list[str],
    hashes: pl.Series | list[str],
    clusters: Clusters,
    estimates: Estimates,
    groups: list[PromptGroup],
    policy: str,
) -> pl.DataFrame:
    """The stage's columns, one row per record: cluster, kept copy and Jaccard of a removed record, conflict flag,
    split key, and the reject reason and detail (`_reason`, `_detail`)."""
    refs = Refs(refs)
    n = len(refs)
    removed = clusters.removed
    conflict = np.zeros(n, dtype=bool)
    rejected: list[int] = []  # conflict group members the policy rejects, with their details
    details: list[str] = []
    for group in groups:
        for member in group.members:
            conflict[member.record] = group.conflict
            if not member.kept:
                rejected.append(member.record)
                details.append(conflict_detail(member, group, refs, policy))
    # A removed record is in a cluster and not its best copy, so in no group: the two sets of rows are disjoint.
    at = np.concatenate((removed.records, np.array(rejected, dtype=np.int64)))
    reasons = pl.Series(["dup.near", "dup.prompt_conflict"], dtype=pl.Utf8).gather(
        np.repeat([0, 1], [len(removed.records), len(rejected)]))
    detail = pl.concat([near_dup_details(refs, clusters, estimates, n), pl.Series(details, dtype=pl.Utf8)])
    kept_of = np.full(n, -1, dtype=np.int64)
    kept_of[removed.records] = removed.kept
    return pl.DataFrame(
        [
            _nulls_below_zero(C.NEAR_DUP_CLUSTER, clusters.cluster_of(n)),
            refs.series.gather(_nulls_below_zero("_of", kept_of)).alias(C.NEAR_DUP_OF),
            _spread(C.NEAR_DUP_JACCARD, pl.Series(removed.jaccard, dtype=pl.Float64), removed.records, n),
            pl.Series(C.PROMPT_CONFLICT, conflict, dtype=pl.Boolean),
            split_keys(hashes, clusters, groups),
            _spread("_reason", reasons, at, n),
            _spread("_detail", detail, at, n),
        ]
    )


def cluster_lines(clusters: Clusters, estimates: Estimates, refs: Refs) -> Iterator[dict[str, Any]]:
    """The duplicates.jsonl line of each near-duplicate cluster (a candidate component), reading the refs of a
    slice of clusters at a time."""
    members, removed = clusters.members, clusters.removed
    n = len(refs)
    at = np.full(n, -1, dtype=np.int64)  # each removed record's place in `removed`
    at[removed.records] = np.arange(len(removed.records))
    starts = members.starts.tolist()
    cid = 0
    while cid < len(starts) - 1:
        end = cid + 1  # whole clusters, at least one, up to a slice of records
        while end < len(starts) - 1 and starts[end + 1] - starts[cid] <= _DESCRIBE_SLICE:
            end += 1
        records = members.records[starts[cid] : starts[end]]
        place = at[records]
        gone = place >= 0
        refs_of = refs.take(records)
        of = np.full(len(records), -1, dtype=np.int64)
        of[gone] = removed.kept[place[gone]]
        of_refs = refs.take(of[gone])
        best_refs = refs.take(clusters.best[cid:end])
        raw = removed.jaccard[place[gone]].tolist()
        jac = [_r4(x) for x in raw]
        est = [None if math.isnan(x) else _r4(x) for x in estimates.value[place[gone]].tolist()]
        k = 0
        for c in range(cid, end):
            lo, hi = starts[c] - starts[cid], starts[c + 1] - starts[cid]
            entries, min_jac = [], None
            for p in range(lo, hi):
                if gone[p]:
                    entries.append({"ref": refs_of[p], "kept": False, "of": of_refs[k], "jaccard": jac[k],
                                    "jaccard_estimate": est[k]})
                    min_jac = raw[k] if min_jac is None or raw[k] < min_jac else min_jac
                    k += 1
                else:
                    entries.append({"ref": refs_of[p], "kept": True, "of": None, "jaccard": None,
                                    "jaccard_estimate": None})
            yield {"kind": "near_dup", "cluster": c, "kept": best_refs[c - cid], "size": hi - lo,
                   "min_jaccard": _r4(min_jac), "members": entries}
        cid = end


def group_line(gid: int, group: PromptGroup, refs: Refs | list[str], policy: str) -> dict[str, Any]:
    """The duplicates.jsonl line of one same-prompt group (`prompt_conflict` or `same_answer`)."""
    line: dict[str, Any] = {
        "kind": C.PROMPT_CONFLICT if group.conflict else "same_answer",
        "group": gid,
        "best": refs[group.best],
        "size": len(group.members),
        "members": [
            {
                "ref": refs[m.record],
                "kept": m.kept,
                "best": m.record == group.best,
                "prompt_jaccard": _r4(m.prompt_jaccard),
                "answer_jaccard": _r4(m.answer_jaccard),
                "same_answer": m.same_answer,
            }
            for m in group.members
        ],
    }
    if group.conflict:
        line["policy"] = policy
    return line


def duplicates_jsonl(
    refs: pl.Series | list[str], clusters: Clusters, estimates: Estimates, groups: list[PromptGroup], policy: str
) -> bytes:
    """duplicates.jsonl: one line per near-duplicate cluster, then one per same-prompt group."""
    refs = Refs(refs)
    out = io.BytesIO()  # a line at a time: a corpus of near-copies has a member entry for most of its records
    for line in itertools.chain(
        cluster_lines(clusters, estimates, refs),
        (group_line(gid, group, refs, policy) for gid, group in enumerate(groups)),
    ):
        out.write((json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
    return out.getvalue()


def size_histogram(sizes: list[int]) -> dict[str, int]:
    """Clusters per size: 2, 3 and 4 apart, then 5-9 and 10+."""
    histogram: dict[str, int] = {}
    for s in sizes:
        label = str(s) if s < 5 else ("5-9" if s < 10 else "10+")
        histogram[label] = histogram.get(label, 0) + 1
    return dict(sorted(histogram.items()))


def summarize(
    rows: pl.DataFrame,
    shingled: Shingled,
    views: tuple[View, ...],
    edges: tuple[Edges, ...],
    clusters: Clusters,
    groups: list[PromptGroup],
    policy: str,
) -> dict[str, Any]:
    """The stage's summary: clusters, removals, same-prompt groups, and what each view signed and verified.

    `edges` holds each view's edges, in the order of `views` (long, short, prompt).
    """
    sizes = clusters.members.sizes().tolist()
    reasons = rows.get_column("_reason")
    conflict_groups = sum(g.conflict for g in groups)
    grouped = sum(len(g.members) for g in groups)
    in_conflict = sum(len(g.members) for g in groups if g.conflict)
    removed = clusters.removed
    return {
        "records": rows.height,
        "clusters": len(sizes),
        "records_in_clusters": sum(sizes),
        "near_duplicates_rejected": int((reasons == "dup.near").sum()),
        "largest_cluster": max(sizes, default=0),
        "cluster_sizes": size_histogram(sizes),
        "min_jaccard_to_kept": _r4(float(removed.jaccard.min()) if len(removed.records) else None),
        "kept_apart_from_chains": sum(sizes) - len(removed.records) - len(sizes),
        "prompt_conflict_groups": conflict_groups,
        "prompt_conflict_records": in_conflict,
        "prompt_conflict_rejected": int((reasons == "dup.prompt_conflict").sum()),
        "prompt_conflict_policy": policy,
        "same_answer_groups": len(groups) - conflict_groups,
        "same_answer_records": grouped - in_conflict,
        # Pairs at the threshold whose answers differ are no edge: when their user turns are what they share,
        # the prompt view finds them and the prompt-conflict policy decides.
        "answer_check_dropped_pairs": sum(e.answer_dropped for e in edges),
        "short_records": int(shingled.is_short.sum()),
        "records_without_shingles": int((shingled.words == 0).sum()),  # no token in any shingled turn
        "shared_system_prompts_dropped": shingled.dropped_system_prompts,
        "lsh": {
            v.name: {"signed": len(v.members), "candidate_pairs": e.candidates, "verified_pairs": e.verified}
            for v, e in zip(views, edges)
        },
    }


def manifest_of(cfg: Config, shingled: Shingled) -> dict[str, Any]:
    """How the stage compared records: enough to reproduce its decisions."""
    from importlib import metadata

    try:
        ds_version = metadata.version("datasketch")
    except metadata.PackageNotFoundError:  # pragma: no cover - datasketch is a core dependency
        ds_version = "unknown"
    return {
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
            "long": {"ngram": cfg.ngram, "min_words": shingled.short_words, **_bands_dict(shingled.long.bands)},
            "short": {"ngram": cfg.short_ngram, "max_distinct_shingles": shingled.reach,
                      "counts_below_words": shingled.short_words, **_bands_dict(shingled.short.bands)},
            "prompt": {"ngram": cfg.prompt_ngram, "roles": ["user"], "threshold": cfg.prompt_threshold,
                       **_bands_dict(shingled.prompt.bands)},
        },
        "roles": list(cfg.roles),
        "system_prompt": cfg.system_prompt,
        "kept_copy_order": ["quality_score desc", "n_assistant_tokens desc", "row asc"],
        "clusters": "union-find components of the verified edges; each keeps its best copy and removes the members "
        "verified against it (exact Jaccard and answer check), then treats the rest likewise",
        "split_key": "content_hash of the cluster's best copy / the conflict group's best copy",
    }


def _bands_dict(b: Bands) -> dict[str, Any]:
    return {
        "bands": b.bands,
        "rows": b.rows,
        "recall_at_threshold": round(b.recall_at_threshold, 6),
        "false_positive_area": round(b.false_positive_area, 6),
        "false_negative_area": round(b.false_negative_area, 6),
    }


def _r4(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


# ----------------------------------------------------------------------------------------------- the stage


@dataclass(frozen=True, eq=False)
class Result:
    """What the stage decided: its columns (`row_columns`), duplicates.jsonl, manifest and summary."""

    rows: pl.DataFrame
    artifact: bytes
    manifest: dict[str, Any]
    summary: dict[str, Any]


# The steps `find_near_duplicates` reports progress after, each counted as the records it went through.
PROGRESS_STEPS = 4


def find_near_duplicates(
    df: pl.DataFrame, cfg: Config, advance: Callable[[int], None] = lambda n: None,
    source: TextSource | None = None, store: ChunkStore | None = None,
) -> Result:
    """Everything the stage decides for the rows of `df` (all alive): shingle and sign, band, verify, cluster and
    choose for near duplicates, then the same for prompts between the copies kept, then describe.

    The records' text is `df`'s `messages`, or `source` chunk by chunk (then `df` needs no text); what is kept of
    it (sets, signatures) lives in `store` (default: memory). `advance` counts records: 2 x len(df) while
    shingling and signing, then len(df) after near-duplicate clustering and after prompt groups."""
    n = df.height
    workers = max(1, min(cfg.workers, os.cpu_count() or 1))
    source = source or TextSource.of(df.get_column(C.MESSAGES), workers)
    shingled = shingle_records(source, cfg, store, advance, workers)
    long, short, prompt = shingled.views

    # In memory the three views are banded and verified on the stage's threads at once (numpy's sorts and
    # gathers release the GIL), the prompt view's while the near-duplicate clusters are chosen; on files one
    # after another, so that one view's pairs are in memory at a time.
    pool = ThreadPoolExecutor(workers) if workers > 1 and (store is None or store.in_memory) else None
    try:
        prompt_later = pool.submit(view_edges, prompt) if pool else None
        # near duplicates: a pair is judged at the n of its shorter member, so the short view counts only pairs
        # with a short record
        answers = shingled.answers
        near = (partial(view_edges, long, None, answers, cfg.answer_threshold),
                partial(view_edges, short, shingled.is_short, answers, cfg.answer_threshold))
        near_edges = tuple(pool.map(lambda edges: edges(), near) if pool else (edges() for edges in near))
        check = KeptCheck(long, short, answers, shingled.words, shingled.short_words, cfg.threshold,
                          cfg.answer_threshold)
        rank = keep_order(df)
        clusters = choose(cluster(n, *near_edges), rank, check)
        advance(n)

        # same prompt, between the clusters' best copies and the records in no cluster
        prompt_edges = prompt_later.result() if prompt_later else view_edges(prompt)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    groups = judge_prompt_groups(same_prompt_groups(n, prompt_edges, clusters.best_of(n)), rank, prompt, answers, cfg)
    advance(n)

    estimates = removal_estimates(clusters.removed, check)
    if store is not None:
        store.forget()  # nothing more is read: the cache's arrays would sit beside the columns built next
        give_back_freed_memory()  # and the pairs' arrays are gone
    refs = df.get_column(C.REF)
    rows = row_columns(refs, df.get_column(C.CONTENT_HASH), clusters, estimates, groups, cfg.prompt_conflict)
    return Result(
        rows=rows,
        artifact=duplicates_jsonl(refs, clusters, estimates, groups, cfg.prompt_conflict),
        manifest=manifest_of(cfg, shingled),
        summary=summarize(
            rows, shingled, (long, short, prompt), (*near_edges, prompt_edges), clusters, groups, cfg.prompt_conflict
        ),
    )


def _null_columns(df: pl.DataFrame) -> pl.DataFrame:
    cols = [
        pl.lit(None, dtype=pl.Int64).alias(C.NEAR_DUP_CLUSTER),
        pl.lit(None, dtype=pl.Utf8).alias(C.NEAR_DUP_OF),
        pl.lit(None, dtype=pl.Float64).alias(C.NEAR_DUP_JACCARD),
        pl.lit(False, dtype=pl.Boolean).alias(C.PROMPT_CONFLICT),
    ]
    if C.SPLIT_KEY not in df.columns:
        cols.append(pl.lit(None, dtype=pl.Utf8).alias(C.SPLIT_KEY))
    return df.with_columns(cols)


def _messages_of(read: Callable[[int, list[str]], pl.DataFrame], k: int) -> pl.Series:
    return read(k, [C.MESSAGES]).get_column(C.MESSAGES)


def run(df: pl.DataFrame, ctx: StageContext) -> pl.DataFrame:
    cfg: Config = ctx.config.dedup_minhash
    if not cfg.enabled or df.height == 0:
        ctx.artifacts[ARTIFACT] = b""
        if not cfg.enabled:  # the report says "disabled", not 0 near-duplicates found
            ctx.summaries[NAME] = {"enabled": False}
        return _null_columns(df)
    source, store = None, None
    if C.MESSAGES not in df.columns and ctx.streamed is not None:  # the engine keeps the text in shards
        streamed = ctx.streamed
        # stream's shards one after another (two on threads raised the driver's peak at 1M records from 2,271 to
        # 2,551 MiB, at the 2.5 GiB bound); ray's as tasks
        source = TextSource(streamed.n_chunks, partial(_messages_of, streamed.read), streamed.map or _in_order,
                            in_process=streamed.map is None)
        store = ChunkStore(streamed.scratch / NAME, map=streamed.map)
    try:
        with ctx.progress.task("near duplicates", total=PROGRESS_STEPS * df.height) as advance:
            result = find_near_duplicates(df, cfg, advance, source, store)
    finally:
        if store is not None and store.folder is not None:
            shutil.rmtree(store.folder, ignore_errors=True)
    ctx.manifest[NAME] = result.manifest
    ctx.summaries[NAME] = result.summary
    ctx.artifacts[ARTIFACT] = result.artifact
    rows = result.rows
    out = df.with_columns(rows.select(C.NEAR_DUP_CLUSTER, C.NEAR_DUP_OF, C.NEAR_DUP_JACCARD, C.PROMPT_CONFLICT).get_columns())
    new_key = rows.get_column(C.SPLIT_KEY)
    if C.SPLIT_KEY in out.columns:
        out = out.with_columns(pl.coalesce(new_key, pl.col(C.SPLIT_KEY)).alias(C.SPLIT_KEY))
    else:
        out = out.with_columns(new_key)
    out = out.with_columns(rows.get_column("_reason"), rows.get_column("_detail"))
    out = with_reject(out, pl.col("_reason").is_not_null(), pl.col("_reason"), pl.col("_detail"))
    return out.drop("_reason", "_detail")
