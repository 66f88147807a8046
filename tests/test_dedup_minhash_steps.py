"""The near-duplicate stage's steps one at a time: shingle and sign, band, verify, cluster, choose, describe.

Rows are built inline from distinct words (w0, w1, ...), so every Jaccard below is an exact fraction.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from curator import columns as C
from curator.chunked import ChunkedSets, ChunkedSignatures, ChunkStore
from curator.lsh import band_keys, choose_bands, min_agreement
from curator.shingles import SortedSets
from curator.stages import dedup_minhash as dm
from curator.stages.dedup_minhash import (
    AnswerSets,
    Candidates,
    Clusters,
    Config,
    Edges,
    Estimate,
    Estimates,
    GroupMember,
    PromptGroup,
    Removal,
    Removed,
)
from curator.lsh import Components
from tests.conftest import chat
from tests.test_dedup_minhash import stage_frame, text


def messages(*records: list[tuple[str, str]]) -> pl.Series:
    """The `messages` column of records given as (role, content) turns."""
    return pl.Series(
        [[{"role": role, "content": content} for role, content in turns] for turns in records],
        dtype=pl.List(C.MESSAGE),
    )


# ------------------------------------------------------------------------------------------------- shingle


def test_shingle_puts_each_record_in_the_views_that_can_judge_it():
    repeated = " ".join([text(200, 10)] * 6)  # 61 words, but only 10 distinct bigrams and 10 distinct 5-grams
    shingled = dm.shingle_records(
        messages(
            [("user", "q"), ("assistant", text(0, 60))],
            [("user", text(100, 10)), ("assistant", text(110, 10))],
            [("user", "hi"), ("assistant", repeated)],
            [("user", "..."), ("assistant", "!!!")],  # no token at all
        ),
        Config(),
    )
    assert shingled.words.tolist() == [61, 20, 61, 0]
    assert shingled.short_words == 49
    assert shingled.is_short.tolist() == [False, True, False, True]
    assert shingled.reach == 22  # the largest short set (record 1: 9 + 9 bigrams) / 0.8, rounded down
    assert shingled.long.members.tolist() == [0, 2]
    assert shingled.long.sets.sizes().tolist() == [57, 0, 11, 0]  # "q" + 56 five-grams; "hi" + 10
    # record 2 is long by its words, but its 11 distinct bigrams are within reach of a short record
    assert shingled.short.members.tolist() == [1, 2]
    assert shingled.short.sets.sizes().tolist() == [0, 18, 11, 0]
    assert shingled.prompt.members.tolist() == [0, 1, 2]
    assert shingled.prompt.sets.sizes().tolist() == [1, 9, 1, 0]
    assert [(v.name, v.ngram, v.threshold) for v in (shingled.long, shingled.short, shingled.prompt)] == [
        ("long", 5, 0.8), ("short", 2, 0.8), ("prompt", 2, 0.9)]
    assert (shingled.long.bands.bands, shingled.long.bands.rows) == (16, 6)
    # every view comes signed: exactly its members, one column each
    for view in shingled.views:
        assert view.signatures.records.tolist() == view.members.tolist()
        assert view.signatures.num_perm == 128
    assert shingled.short.signatures.column.tolist() == [-1, 0, 1, -1]


def test_shingle_counts_only_the_compared_roles_but_always_reads_the_prompts():
    records, cfg = messages([("user", text(0, 30)), ("assistant", text(50, 30))]), Config(roles=["assistant"])
    shingled = dm.shingle_records(records, cfg)
    assert shingled.words.tolist() == [30]
    assert sorted(set(dm.tokenize(records, cfg).role.tolist())) == ["assistant", "user"]
    assert shingled.answers.words.tolist() == [30]
    assert shingled.prompt.sets.sizes().tolist() == [29]
    assert shingled.short.sets.sizes().tolist() == [29]  # the assistant turn's bigrams only


def test_no_short_record_leaves_the_short_view_empty():
    shingled = dm.shingle_records(messages([("user", text(0, 60))], [("user", text(100, 60))]), Config())
    assert shingled.reach == -1
    assert shingled.short.members.tolist() == []


# ---------------------------------------------------------------------------------------------------- sign


def whole_matrix(signatures: ChunkedSignatures) -> np.ndarray:
    """Every column of `signatures`, as one (num_perm, columns) matrix."""
    return signatures.block(list(range(len(signatures.keys))))


def long_records() -> pl.Series:
    return messages(
        [("user", "q"), ("assistant", text(0, 60))],
        [("user", "q"), ("assistant", text(0, 60))],
        [("user", "q"), ("assistant", text(100, 60))],
        [("user", "short")],
    )


def test_sign_gives_each_member_its_datasketch_signature():
    from datasketch import MinHash

    from curator.lsh import minhash_inputs

    signed = dm.shingle_records(long_records(), Config(seed=1)).long
    matrix = whole_matrix(signed.signatures)
    assert matrix.shape == (128, 3)
    assert signed.signatures.column.tolist() == [0, 1, 2, -1]
    [theirs] = MinHash.bulk([[minhash_inputs(signed.sets.chunk(0).set_of(2))]], num_perm=128, seed=1,
                            scheme="affine32", hashfunc=lambda v: v)
    assert np.array_equal(matrix[:, 2], theirs.hashvalues)
    assert signed.estimate(np.array([0, 0]), np.array([1, 3])) == [1.0, None]  # equal sets; 3 is not signed
    assert signed.estimate(np.array([3]), np.array([0])) == [None]  # unsigned on either side
    threaded = dm.shingle_records(long_records(), Config(seed=1), workers=2).long
    assert np.array_equal(whole_matrix(threaded.signatures), matrix)


# ---------------------------------------------------------------------------------------------------- band


def test_band_finds_the_pair_sharing_a_band_and_honours_accept():
    original = text(0, 100)
    shingled = dm.shingle_records(
        messages(
            [("user", "q"), ("assistant", original)],
            [("user", "q"), ("assistant", text(200, 100))],
            [("user", "q"), ("assistant", original.replace("w50", "changed"))],  # J = 92 / 102
        ),
        Config(seed=1),
    )
    view = shingled.long
    found = dm.band(view)
    assert (found.pairs.tolist(), found.found) == ([[0, 2]], 1)
    assert dm.band(view, accept=np.array([True, False, False])).pairs.tolist() == [[0, 2]]
    rejected = dm.band(view, accept=np.array([False, True, False]))  # neither member of the pair accepted
    assert (rejected.pairs.tolist(), rejected.found) == ([], 1)


def signed_pair(agreeing: int) -> dm.View:
    """A view of two records whose signatures agree on the first `agreeing` of 128 permutations."""
    matrix = np.arange(256, dtype=np.uint32).reshape(128, 2)  # every minimum differs ...
    matrix[:agreeing, 1] = matrix[:agreeing, 0]  # ... but the first `agreeing`
    bands = choose_bands(0.8, 128)
    store = ChunkStore()
    sets = ChunkedSets(store)
    sets.append(SortedSets(np.array([1, 2], np.uint64), np.array([0, 1, 2], np.int64)))
    signatures = ChunkedSignatures(store, 128)
    signatures.append(matrix, np.array([0, 1]), band_keys(matrix, bands.bands, bands.rows))
    signatures.close(2)
    return dm.View("long", 5, sets, np.array([0, 1]), 0.8, bands, signatures)


def test_band_drops_pairs_whose_minima_agree_too_rarely_for_the_threshold():
    cut = min_agreement(128, 0.8)
    assert cut == 84
    one_band = dm.band(signed_pair(6))  # the first band of 6 rows in common, nothing else
    assert (one_band.pairs.tolist(), one_band.found) == ([], 1)
    assert dm.band(signed_pair(cut - 1)).pairs.tolist() == []
    assert dm.band(signed_pair(cut)).pairs.tolist() == [[0, 1]]


# -------------------------------------------------------------------------------------------------- verify


def test_verify_keeps_pairs_at_the_threshold_and_skips_pairs_already_connected():
    cfg = Config()
    prompt, answer = text(0, 30), text(30, 30)  # 26 five-grams each
    same = [("user", prompt), ("assistant", answer)]
    shingled = dm.shingle_records(messages(same, same, same, [("user", prompt), ("assistant", text(200, 30))]), cfg)
    view = shingled.long
    assert view.exact(np.array([0]), np.array([3])).tolist() == [26 / 78]  # only the prompt in common
    candidates = Candidates(np.array([[0, 1], [0, 2], [0, 3], [1, 2]]), found=4)
    edges = dm.verify(view, candidates, shingled.answers, cfg.answer_threshold)
    # (1, 2) is not verified: 0 ~ 1 and 0 ~ 2 already joined them
    assert edges == Edges.of([(0, 1, 1.0), (0, 2, 1.0)], candidates=4, verified=3, answer_dropped=0)


def test_verify_drops_pairs_whose_answers_differ():
    document, a0, a1 = text(0, 200), text(300, 10), text(350, 10)
    shingled = dm.shingle_records(
        messages(
            [("user", document), ("assistant", a0)],
            [("user", document), ("assistant", a1)],
            [("user", document), ("assistant", a0.replace("w305", "changed"))],
        ),
        Config(),
    )
    answers = shingled.answers
    assert isinstance(answers, AnswerSets)
    # 10-word answers are compared as bigrams: 7 of 11 shared with one word changed, none between a0 and a1
    assert answers.jaccard(np.array([0, 0, 1]), np.array([1, 2, 2])).tolist() == [0.0, 7 / 11, 0.0]
    candidates = Candidates(np.array([[0, 1], [0, 2], [1, 2]]), found=3)
    # the shared document alone puts every pair above 0.8: 196 / 208 and 197 / 207
    assert dm.verify(shingled.long, candidates, answers, 0.3) == Edges.of([(0, 2, 197 / 207)], 3, 3, 2)
    assert dm.verify(shingled.long, candidates) == Edges.of([(0, 1, 196 / 208), (0, 2, 197 / 207)], 3, 2, 0)


# ------------------------------------------------------------------------------------------------- cluster


def test_cluster_joins_the_edges_of_every_view():
    long = Edges.of([(0, 3, 0.9), (3, 5, 0.85)], candidates=2, verified=2, answer_dropped=0)
    short = Edges.of([(1, 2, 0.8)], candidates=1, verified=1, answer_dropped=0)
    assert dm.cluster(7, long, short).as_lists() == [[0, 3, 5], [1, 2]]
    bridge = Edges.of([(1, 2, 0.8), (2, 5, 0.95)], candidates=2, verified=2, answer_dropped=0)
    assert dm.cluster(7, long, bridge).as_lists() == [[0, 1, 2, 3, 5]]
    assert dm.cluster(7, Edges.of([], 0, 0, 0)).as_lists() == []


# -------------------------------------------------------------------------------------------------- choose


def test_keep_order_ranks_quality_then_assistant_tokens_then_row():
    df = pl.DataFrame({C.ROW: [0, 1, 2, 3], "quality_score": [0.5, 0.9, 0.9, None],
                       "n_assistant_tokens": [10, 20, 30, 99]})
    assert dm.keep_order(df).tolist() == [2, 1, 0, 3]  # 0.9 with 30 tokens first; a null score last
    assert dm.keep_order(df.select(C.ROW, "n_assistant_tokens")).tolist() == [3, 2, 1, 0]
    assert dm.keep_order(df.select(C.ROW)).tolist() == [0, 1, 2, 3]


def pair_check(jaccard: dict[tuple[int, int], float], threshold: float = 0.8):
    """A stand-in for KeptCheck: near when the pair's Jaccard (from `jaccard`, else 0) reaches `threshold`."""

    def check(i: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        jac = np.array([jaccard.get((min(a, b), max(a, b)), 0.0) for a, b in zip(i.tolist(), k.tolist())])
        return jac >= threshold, jac

    return check


# A chain 0 ~ 1 ~ 2 ~ 3 whose ends are far apart.
CHAIN = {(0, 1): 0.85, (1, 2): 0.82, (2, 3): 0.9, (0, 2): 0.6, (0, 3): 0.5, (1, 3): 0.7}


def test_a_chain_keeps_its_far_end_and_removes_only_against_kept_copies():
    # 0 is best: it removes 1; 2 and 3 are too far from it, so 2 is kept and removes 3
    chain = Components.of([[0, 1, 2, 3]])
    assert dm.remove_against_kept(chain, np.arange(4), pair_check(CHAIN)).as_dict() == {
        1: Removal(0, 0.85), 3: Removal(2, 0.9)}
    # 1 is best: it removes both neighbours; 3 is left alone, so kept
    assert dm.remove_against_kept(chain, np.array([1, 0, 2, 3]), pair_check(CHAIN)).as_dict() == {
        0: Removal(1, 0.85), 2: Removal(1, 0.82)}


def test_choose_keeps_each_clusters_best_copy():
    rank = np.array([1, 0, 2, 3, 5, 4, 6])
    clusters = dm.choose(Components.of([[0, 1, 2, 3], [4, 5]]), rank, pair_check({**CHAIN, (4, 5): 0.95}))
    assert clusters.members.as_lists() == [[0, 1, 2, 3], [4, 5]]
    assert clusters.best.tolist() == [1, 5]
    assert clusters.removed.as_dict() == {0: Removal(1, 0.85), 2: Removal(1, 0.82), 4: Removal(5, 0.95)}
    assert clusters.cluster_of(7).tolist() == [0, 0, 0, 0, 1, 1, -1]
    assert clusters.best_of(7).tolist() == [1, 1, 1, 1, 5, 5, 6]


def test_kept_check_judges_a_pair_at_its_shorter_members_ngram_and_checks_answers():
    cfg = Config(seed=1)
    original, short = text(0, 100), text(200, 20)
    shingled = dm.shingle_records(
        messages(
            [("user", "q"), ("assistant", original)],
            [("user", "q"), ("assistant", original.replace("w50", "changed"))],
            [("user", short), ("assistant", "ok")],
            [("user", short.replace("w210", "changed")), ("assistant", "ok")],
            [("user", short), ("assistant", "no")],
        ),
        cfg,
    )
    long, short_view = shingled.long, shingled.short
    check = dm.KeptCheck(long, short_view, shingled.answers, shingled.words, 49, 0.8, 0.3)
    near, jac = check(np.array([1, 3, 4]), np.array([0, 2, 2]))
    # 5-grams: 92 of 102; bigrams: 18 of 22 (17 user bigrams and "ok"); 19 of 21, but the answers differ
    assert jac.tolist() == [92 / 102, 18 / 22, 19 / 21]
    assert near.tolist() == [True, True, False]
    removed = removals({1: Removal(0, 92 / 102), 3: Removal(2, 18 / 22)})
    estimates = dm.removal_estimates(removed, check).as_dict(removed)
    assert estimates == {  # each pair's estimate comes from the view that judges it
        1: Estimate(long.estimate(np.array([1]), np.array([0]))[0], 5),
        3: Estimate(short_view.estimate(np.array([3]), np.array([2]))[0], 2),
    }
    assert all(0.5 < e.value <= 1.0 for e in estimates.values())


def test_same_prompt_groups_join_best_copies_not_cluster_members():
    prompt = Edges.of([(0, 1, 1.0), (1, 2, 0.95), (3, 4, 0.9)], candidates=3, verified=3, answer_dropped=0)
    best_of = np.array([0, 0, 2, 3, 4])  # 0 and 1 are one near-duplicate cluster, 0 its best copy
    assert dm.same_prompt_groups(5, prompt, best_of).as_lists() == [[0, 2], [3, 4]]


@pytest.mark.parametrize(
    ("policy", "kept"),
    [("keep_all", [True, True, True]), ("keep_best", [True, False, True]), ("reject", [False, False, False])],
)
def test_judge_prompt_groups_compares_each_member_with_the_best_copy(policy, kept):
    cfg = Config(prompt_conflict=policy)
    prompt, other, a0, a1 = text(0, 12), text(300, 12), text(100, 12), text(200, 12)
    shingled = dm.shingle_records(
        messages(
            [("user", prompt), ("assistant", a0)],
            [("user", prompt), ("assistant", a1)],
            [("user", prompt), ("assistant", a0)],
            [("user", other), ("assistant", a0)],
            [("user", other), ("assistant", a0)],
        ),
        cfg,
    )
    rank = np.array([1, 2, 0, 3, 4])  # record 2 is the first group's best copy
    groups = dm.judge_prompt_groups(Components.of([[0, 1, 2], [3, 4]]), rank, shingled.prompt, shingled.answers, cfg)
    assert groups == [
        PromptGroup(2, [GroupMember(0, 1.0, 1.0, True, kept[0]), GroupMember(1, 1.0, 0.0, False, kept[1]),
                        GroupMember(2, None, None, True, kept[2])]),
        # the same answer throughout: no conflict, kept whatever the policy
        PromptGroup(3, [GroupMember(3, None, None, True, True), GroupMember(4, 1.0, 1.0, True, True)]),
    ]
    assert [(g.conflict, g.differ) for g in groups] == [(True, [1]), (False, [])]


# ------------------------------------------------------------------------------------------------ describe


def removals(removed: dict[int, Removal]) -> Removed:
    at = sorted(removed)
    return Removed(np.array(at, dtype=np.int64), np.array([removed[i].kept for i in at], dtype=np.int64),
                   np.array([removed[i].jaccard for i in at], dtype=np.float64))


def clusters_of(members: list[list[int]], best: list[int], removed: dict[int, Removal]) -> Clusters:
    return Clusters(Components.of(members), np.array(best, dtype=np.int64), removals(removed))


REFS = ["a:1", "a:2", "a:3", "a:4", "a:5"]
HASHES = ["h1", "h2", "h3", "h4", "h5"]
# 1 removed against 0; 2 and 3 ask the same, 3 answers differently, and the policy rejects the group
CLUSTERS = clusters_of([[0, 1]], best=[0], removed={1: Removal(0, 0.9)})
ESTIMATES = Estimates(np.array([0.875]), np.array([5]))
CONFLICT = PromptGroup(2, [GroupMember(2, None, None, True, False), GroupMember(3, 1.0, 0.0, False, False)])


def test_near_dup_detail_names_the_kept_copy_both_jaccards_and_the_ngram():
    assert dm.near_dup_detail("a:1", Removal(0, 0.9), Estimate(0.8984375, 5), 7) == (
        "near-duplicate of a:1 (jaccard 0.900, estimated 0.898, cluster 7, 5-grams)")
    assert dm.near_dup_detail("a:1", Removal(0, 0.85), Estimate(None, 2), 0) == (
        "near-duplicate of a:1 (jaccard 0.850, estimated n/a, cluster 0, 2-grams)")


def test_conflict_detail_says_how_each_member_compares_with_the_best_copy():
    group = PromptGroup(2, [GroupMember(0, 1.0, 1.0, True, False), GroupMember(1, 0.95, 0.0, False, False),
                            GroupMember(2, None, None, True, False)])
    refs = ["a:1", "a:2", "a:3"]
    assert [dm.conflict_detail(m, group, refs, "reject") for m in group.members] == [
        "same prompt as a:3 (prompt jaccard 1.000) and the same answer (answer jaccard 1.000), in a group with 1 "
        "different answer(s); policy reject",
        "same prompt as a:3 (prompt jaccard 0.950), different answer (answer jaccard 0.000); policy reject",
        "prompt answered differently by 1 other record(s), first a:2; policy reject",
    ]


def test_split_keys_follow_the_cluster_then_the_group_best_copy():
    clusters = clusters_of([[0, 1, 2]], best=[1], removed={0: Removal(1, 0.9)})
    group = PromptGroup(4, [GroupMember(1, 1.0, 0.9, True, True), GroupMember(4, None, None, True, True)])
    hashes = ["h0", "h1", "h2", "h3", "h4", "h5"]
    assert dm.split_keys(hashes, clusters, []).to_list() == ["h1", "h1", "h1", None, None, None]
    # the cluster's best copy is in a group whose best copy is 4: the whole cluster follows 4
    assert dm.split_keys(hashes, clusters, [group]).to_list() == ["h4", "h4", "h4", None, "h4", None]


def test_row_columns_carry_every_decision():
    rows = dm.row_columns(REFS, HASHES, CLUSTERS, ESTIMATES, [CONFLICT], "reject")
    assert rows.schema == pl.Schema({
        "near_dup_cluster": pl.Int64, "near_dup_of": pl.Utf8, "near_dup_jaccard": pl.Float64,
        "prompt_conflict": pl.Boolean, C.SPLIT_KEY: pl.Utf8, "_reason": pl.Utf8, "_detail": pl.Utf8})
    assert rows.to_dict(as_series=False) == {
        "near_dup_cluster": [0, 0, None, None, None],
        "near_dup_of": [None, "a:1", None, None, None],
        "near_dup_jaccard": [None, 0.9, None, None, None],
        "prompt_conflict": [False, False, True, True, False],
        C.SPLIT_KEY: ["h1", "h1", "h3", "h3", None],
        "_reason": [None, "dup.near", "dup.prompt_conflict", "dup.prompt_conflict", None],
        "_detail": [
            None,
            "near-duplicate of a:1 (jaccard 0.900, estimated 0.875, cluster 0, 5-grams)",
            "prompt answered differently by 1 other record(s), first a:4; policy reject",
            "same prompt as a:3 (prompt jaccard 1.000), different answer (answer jaccard 0.000); policy reject",
            None,
        ],
    }


def test_duplicates_jsonl_has_a_line_per_cluster_then_per_group():
    data = dm.duplicates_jsonl(REFS, CLUSTERS, ESTIMATES, [CONFLICT], "reject")
    assert data.startswith(b'{"cluster": 0, "kept": "a:1", "kind": "near_dup", "members": [')  # keys sorted
    assert [json.loads(line) for line in data.decode().splitlines()] == [
        {"kind": "near_dup", "cluster": 0, "kept": "a:1", "size": 2, "min_jaccard": 0.9, "members": [
            {"ref": "a:1", "kept": True, "of": None, "jaccard": None, "jaccard_estimate": None},
            {"ref": "a:2", "kept": False, "of": "a:1", "jaccard": 0.9, "jaccard_estimate": 0.875}]},
        {"kind": "prompt_conflict", "group": 0, "best": "a:3", "size": 2, "policy": "reject", "members": [
            {"ref": "a:3", "kept": False, "best": True, "prompt_jaccard": None, "answer_jaccard": None,
             "same_answer": True},
            {"ref": "a:4", "kept": False, "best": False, "prompt_jaccard": 1.0, "answer_jaccard": 0.0,
             "same_answer": False}]},
    ]
    same = PromptGroup(2, [GroupMember(2, None, None, True, True), GroupMember(4, 0.9512, 0.87654, True, True)])
    line = dm.group_line(3, same, REFS, "reject")
    assert (line["kind"], line["group"], "policy" in line) == ("same_answer", 3, False)
    assert (line["members"][1]["prompt_jaccard"], line["members"][1]["answer_jaccard"]) == (0.9512, 0.8765)


def test_cluster_sizes_are_counted_apart_up_to_four():
    assert dm.size_histogram([2, 2, 3, 4, 5, 9, 10, 40]) == {"10+": 2, "2": 2, "3": 1, "4": 1, "5-9": 2}
    assert dm.size_histogram([]) == {}


def test_find_near_duplicates_summarises_what_each_step_found(tmp_path):
    cfg = Config(prompt_conflict="keep_best")
    copy = chat(("user", "q"), ("assistant", text(0, 60)))
    df = stage_frame(tmp_path, [
        copy,
        copy,
        chat(("user", text(100, 6)), ("assistant", text(120, 60))),
        chat(("user", text(100, 6)), ("assistant", text(200, 60))),  # the same prompt, another answer
    ])
    result = dm.find_near_duplicates(df, cfg)
    assert result.rows.get_column("_reason").to_list() == [None, "dup.near", None, "dup.prompt_conflict"]
    assert result.summary == {
        "records": 4,
        "clusters": 1,
        "records_in_clusters": 2,
        "near_duplicates_rejected": 1,
        "largest_cluster": 2,
        "cluster_sizes": {"2": 1},
        "min_jaccard_to_kept": 1.0,
        "kept_apart_from_chains": 0,
        "prompt_conflict_groups": 1,
        "prompt_conflict_records": 2,
        "prompt_conflict_rejected": 1,
        "prompt_conflict_policy": "keep_best",
        "same_answer_groups": 0,
        "same_answer_records": 0,
        "answer_check_dropped_pairs": 0,
        "short_records": 0,
        "records_without_shingles": 0,
        "shared_system_prompts_dropped": 0,
        "lsh": {
            "long": {"signed": 4, "candidate_pairs": 1, "verified_pairs": 1},
            "short": {"signed": 0, "candidate_pairs": 0, "verified_pairs": 0},
            # the copies' prompt pair is found too, but a pair inside one cluster makes no group
            "prompt": {"signed": 4, "candidate_pairs": 2, "verified_pairs": 2},
        },
    }
    views = result.manifest["views"]
    assert (views["long"]["min_words"], views["short"]["max_distinct_shingles"]) == (49, -1)
    prompt_bands = choose_bands(0.9, 128)
    assert (views["prompt"]["bands"], views["prompt"]["rows"]) == (prompt_bands.bands, prompt_bands.rows)
    assert [json.loads(x)["kind"] for x in result.artifact.decode().splitlines()] == ["near_dup", "prompt_conflict"]
