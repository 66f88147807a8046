"""Near-duplicate stage end to end: clusters, kept copy, conflicts, artifact; each step alone is in
tests/test_dedup_minhash_steps.py, the LSH helpers in tests/test_lsh.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from curator import columns as C
from curator import lsh
from curator.config import CurateConfig
from curator.io.readers import iter_file
from curator.shingles import TOKEN_PATTERN, jaccard, shingle, tokenize_turns
from curator.stages import dedup_minhash, normalize, validate
from curator.stages.base import StageContext
from tests.conftest import CHAT_DATA, chat, write_lines

WORDS = [f"w{i}" for i in range(400)]  # distinct tokens, so Jaccard values are exact fractions


def text(start: int, length: int) -> str:
    return " ".join(WORDS[start : start + length])


def stage_frame(tmp_path: Path, records: list[dict], name: str = "in.jsonl") -> pl.DataFrame:
    """The frame dedup_minhash receives: read, validated, normalised, alive rows only."""
    path = write_lines(tmp_path / name, records)
    ctx = StageContext(config=CurateConfig())
    frame = validate.build_frame(iter_file(path, name), ctx)
    frame = normalize.run(frame.filter(C.alive()), ctx)
    return frame.filter(C.alive())


def run_stage(df: pl.DataFrame, **cfg) -> tuple[pl.DataFrame, StageContext]:
    ctx = StageContext(config=CurateConfig.model_validate({"dedup_minhash": cfg}))
    return dedup_minhash.run(df, ctx), ctx


def reasons(df: pl.DataFrame) -> list[list[str]]:
    return df.get_column(C.REJECT_REASONS).to_list()


# ------------------------------------------------------------------------- LSH against datasketch itself
# (manifest.json names this file for these two; the other LSH tests are in tests/test_lsh.py)


def test_signatures_equal_datasketch_minhash_bulk(tmp_path):
    from datasketch import MinHash

    records = [chat(("user", text(i, 30)), ("assistant", text(i + 50, 40))) for i in range(0, 60, 7)]
    df = stage_frame(tmp_path, records)
    sets = shingle(tokenize_turns(df.get_column(C.MESSAGES), ["user", "assistant"]), 5)
    members = np.arange(len(sets))
    ours = lsh.signatures(sets, members, 128, 7, workers=2)
    inputs = [lsh.minhash_inputs(sets.raw(i)) for i in members]
    theirs = MinHash.bulk(([v] for v in inputs), num_perm=128, seed=7, scheme="affine32", hashfunc=lambda v: v)
    assert np.array_equal(ours, np.stack([m.hashvalues for m in theirs], axis=1))


def test_band_pairs_equal_datasketch_minhash_lsh(tmp_path):
    from datasketch import LeanMinHash, MinHashLSH

    # near-duplicate families (shifted windows) so that many records share LSH buckets
    records = [chat(("user", text(i % 40, 30)), ("assistant", text(i % 40 + 3, 60))) for i in range(0, 120, 3)]
    df = stage_frame(tmp_path, records)
    sets = shingle(tokenize_turns(df.get_column(C.MESSAGES), ["user", "assistant"]), 5)
    members = np.arange(len(sets))
    sig = lsh.signatures(sets, members, 128, 1)
    bands = lsh.choose_bands(0.8, 128)
    ours = {tuple(p) for p in lsh.band_pairs(sig, bands.bands, bands.rows).tolist()}
    index = MinHashLSH(num_perm=128, params=(bands.bands, bands.rows))
    sketches = [LeanMinHash(seed=1, hashvalues=sig[:, k], scheme=lsh.SCHEME) for k in range(sig.shape[1])]
    for k, m in enumerate(sketches):
        index.insert(k, m)
    theirs = {(min(k, q), max(k, q)) for k, m in enumerate(sketches) for q in index.query(m) if q != k}
    assert len(theirs) > 20
    assert ours == theirs


# ----------------------------------------------------------------------------------------------- shingles


def test_tokens_are_words_and_cjk_characters():
    tokens = pl.Series(["Hello, World! 我喜欢Python_3 ok"]).str.extract_all(TOKEN_PATTERN).to_list()[0]
    assert tokens == ["Hello", "World", "我", "喜", "欢", "Python_3", "ok"]


def test_ngrams_stay_inside_a_turn_and_short_turns_are_one_shingle():
    messages = pl.Series(
        [[{"role": "user", "content": "a b c"}, {"role": "assistant", "content": "d e"}]],
        dtype=pl.List(C.MESSAGE),
    )
    sets = shingle(tokenize_turns(messages, ["user", "assistant"]), 2)
    assert len(sets.raw(0)) == 3  # "a b", "b c" and the one-shingle turn "d e"; no "c d" across turns
    assert len(shingle(tokenize_turns(messages, ["user"]), 5).raw(0)) == 1


def test_jaccard_is_exact():
    assert jaccard(np.array([1, 2, 3], np.uint64), np.array([2, 3, 4, 5], np.uint64)) == pytest.approx(2 / 5)
    assert jaccard(np.array([], np.uint64), np.array([], np.uint64)) == 0.0


# ------------------------------------------------------------------------------------------------ clusters


def test_near_duplicate_is_rejected_naming_the_kept_copy(tmp_path):
    original = text(0, 100)
    # 5 of the 96 assistant five-grams change; the one-shingle user turn "q" is shared: J = 92 / 102
    edited = original.replace("w50", "changed")
    other = text(200, 100)
    df = stage_frame(tmp_path, [chat(("user", "q"), ("assistant", original)), chat(("user", "q"), ("assistant", edited)),
                                chat(("user", "r"), ("assistant", other))])
    out, ctx = run_stage(df)
    assert reasons(out) == [[], ["dup.near"], []]
    row = out.row(1, named=True)
    assert row["near_dup_of"] == "in.jsonl:1"
    assert row["near_dup_jaccard"] == pytest.approx(92 / 102)
    assert row[C.REJECT_DETAILS][0].startswith("near-duplicate of in.jsonl:1 (jaccard 0.902, estimated ")
    assert out.get_column("near_dup_cluster").to_list() == [0, 0, None]
    kept_hash = out.row(0, named=True)[C.CONTENT_HASH]
    assert out.get_column(C.SPLIT_KEY).to_list() == [kept_hash, kept_hash, None]
    manifest = ctx.manifest["dedup_minhash"]
    assert manifest["scheme"] == "affine32" and manifest["seed"] == 1 and manifest["num_perm"] == 128
    assert (manifest["views"]["long"]["bands"], manifest["views"]["long"]["rows"]) == (16, 6)
    assert ctx.summaries["dedup_minhash"]["clusters"] == 1


def test_below_threshold_is_not_a_duplicate(tmp_path):
    original = text(0, 100)
    edited = " ".join("x" if i % 25 == 0 else w for i, w in enumerate(original.split()))  # 4 edits: J < 0.8
    df = stage_frame(tmp_path, [chat(("user", "q"), ("assistant", original)), chat(("user", "q"), ("assistant", edited))])
    out, _ = run_stage(df)
    assert reasons(out) == [[], []]
    assert out.get_column("near_dup_cluster").to_list() == [None, None]


def test_kept_copy_is_best_quality_then_most_assistant_tokens_then_first(tmp_path):
    base = text(0, 120)
    records = [chat(("user", "q"), ("assistant", base + suffix)) for suffix in ("", " extra", " more", " again")]
    df = stage_frame(tmp_path, records)
    with_scores = df.with_columns(
        pl.Series("quality_score", [0.5, 0.9, 0.9, None], dtype=pl.Float64),
        pl.Series("n_assistant_tokens", [10, 20, 30, 99], dtype=pl.Int64),
    )
    out, _ = run_stage(with_scores)
    assert out.get_column("near_dup_of").to_list() == ["in.jsonl:3", "in.jsonl:3", None, "in.jsonl:3"]
    out, _ = run_stage(df)  # no quality or token columns: first seen wins
    assert reasons(out) == [[], ["dup.near"], ["dup.near"], ["dup.near"]]


def test_short_records_match_with_the_short_ngram(tmp_path):
    original = text(0, 20)
    edited = original.replace("w10", "changed")  # bigrams: 17 shared of 21; 5-grams would give 11 / 21
    df = stage_frame(tmp_path, [chat(("user", original), ("assistant", "ok")), chat(("user", edited), ("assistant", "ok"))])
    out, _ = run_stage(df, roles=["user"])
    assert reasons(out) == [[], ["dup.near"]]
    assert out.get_column("near_dup_jaccard").to_list()[1] == pytest.approx(17 / 21)
    assert "2-grams" in out.row(1, named=True)[C.REJECT_DETAILS][0]


def test_shared_system_prompt_is_left_out(tmp_path):
    system = text(300, 90)
    records = [chat(("system", system), ("user", text(i * 10, 6)), ("assistant", text(i * 10 + 100, 6))) for i in range(3)]
    df = stage_frame(tmp_path, records)
    out, ctx = run_stage(df)
    assert reasons(out) == [[], [], []]
    assert ctx.summaries["dedup_minhash"]["shared_system_prompts_dropped"] == 1
    out, ctx = run_stage(df, system_prompt="keep")  # the shared prompt dominates: all three look alike ...
    assert reasons(out) == [[], [], []]  # ... but their answers differ (and so do their user turns: no conflict)
    assert ctx.summaries["dedup_minhash"]["answer_check_dropped_pairs"] == 3
    assert out.get_column("prompt_conflict").to_list() == [False] * 3


def test_chinese_is_shingled_by_characters(tmp_path):
    zh = "我们今天学习如何使用数据去重工具来清理训练数据集并保证验证集没有泄漏问题这是一个很长的句子用来测试字符级别的分词效果"
    # 58 characters; the third changes, which only 3 of the 54 character 5-grams contain: J = 51 / 57
    df = stage_frame(tmp_path, [chat(("user", zh), ("assistant", "好")), chat(("user", zh.replace("今天", "明天")), ("assistant", "好"))])
    out, _ = run_stage(df, roles=["user"])
    assert reasons(out) == [[], ["dup.near"]]
    assert out.get_column("near_dup_jaccard").to_list()[1] == pytest.approx(51 / 57)


# ------------------------------------------------------------------------------------------ prompt conflicts


def conflict_records() -> list[dict]:
    prompt = text(0, 30)
    return [
        chat(("user", prompt), ("assistant", text(100, 60))),
        chat(("user", prompt), ("assistant", text(200, 60))),
        chat(("user", text(300, 30)), ("assistant", text(340, 40))),
    ]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("keep_all", [[], [], []]),
        ("keep_best", [[], ["dup.prompt_conflict"], []]),
        ("reject", [["dup.prompt_conflict"], ["dup.prompt_conflict"], []]),
    ],
)
def test_same_prompt_different_answers(tmp_path, policy, expected):
    df = stage_frame(tmp_path, conflict_records())
    out, ctx = run_stage(df, prompt_conflict=policy)
    assert reasons(out) == expected
    assert out.get_column("prompt_conflict").to_list() == [True, True, False]
    keys = out.get_column(C.SPLIT_KEY).to_list()
    assert keys[0] == keys[1] == out.row(0, named=True)[C.CONTENT_HASH] and keys[2] is None
    line = json.loads(ctx.artifacts["duplicates.jsonl"])
    assert line["kind"] == "prompt_conflict" and line["best"] == "in.jsonl:1"
    assert [m["ref"] for m in line["members"]] == ["in.jsonl:1", "in.jsonl:2"]


# ------------------------------------------------------------------------------------------------ artifact


def test_duplicates_jsonl_lists_every_member_and_is_deterministic(tmp_path):
    base = text(0, 100)
    records = [
        chat(("user", "q"), ("assistant", base)),
        chat(("user", "unrelated"), ("assistant", text(250, 80))),
        chat(("user", "q"), ("assistant", base.replace("w70", "seventy"))),
    ]
    df = stage_frame(tmp_path, records)
    _, ctx1 = run_stage(df)
    _, ctx2 = run_stage(df, workers=1)
    assert ctx1.artifacts["duplicates.jsonl"] == ctx2.artifacts["duplicates.jsonl"]
    lines = [json.loads(x) for x in ctx1.artifacts["duplicates.jsonl"].decode().splitlines()]
    assert lines == [
        {
            "kind": "near_dup",
            "cluster": 0,
            "kept": "in.jsonl:1",
            "size": 2,
            "min_jaccard": round(92 / 102, 4),
            "members": [
                {"ref": "in.jsonl:1", "kept": True, "of": None, "jaccard": None, "jaccard_estimate": None},
                {"ref": "in.jsonl:3", "kept": False, "of": "in.jsonl:1", "jaccard": round(92 / 102, 4),
                 "jaccard_estimate": lines[0]["members"][1]["jaccard_estimate"]},
            ],
        }
    ]
    assert 0.6 <= lines[0]["members"][1]["jaccard_estimate"] <= 1.0


def test_disabled_stage_adds_null_columns(tmp_path):
    df = stage_frame(tmp_path, conflict_records())
    out, ctx = run_stage(df, enabled=False)
    assert out.get_column("near_dup_cluster").null_count() == 3
    assert out.get_column("prompt_conflict").to_list() == [False] * 3
    assert ctx.artifacts["duplicates.jsonl"] == b""


def test_bad_config_is_refused():
    with pytest.raises(Exception, match="short_ngram"):
        CurateConfig.model_validate({"dedup_minhash": {"short_ngram": 6}})
    with pytest.raises(Exception, match="prompt_conflict"):
        CurateConfig.model_validate({"dedup_minhash": {"prompt_conflict": "merge"}})


# ---------------------------------------------------------------------------------------------- real data


def test_real_copies_with_a_lead_in_are_found(real_data, tmp_path):
    """Every GSM8K record re-collected with a short lead-in (bench/corpus.py's edit) is a near-duplicate."""
    path = CHAT_DATA / "gsm8k_train.jsonl"
    originals = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:300]]
    copies = json.loads(json.dumps(originals))
    for rec in copies:
        rec["messages"][0]["content"] = "Question from a colleague:\n" + rec["messages"][0]["content"]
    df = stage_frame(tmp_path, originals + copies)
    out, ctx = run_stage(df)
    dup_of = out.get_column("near_dup_of").to_list()
    assert dup_of[300:] == [f"in.jsonl:{i + 1}" for i in range(300)]
    assert all(r == [] for r in reasons(out)[:300])


def test_jaccard_many_equals_pairwise_jaccard():
    from curator.shingles import ShingleSets, jaccard_many, sorted_sets

    rng = np.random.default_rng(0)
    top = np.iinfo(np.uint64).max  # the block padding value must still count as a real shingle
    raw = [rng.integers(0, 40, size=int(k)).astype(np.uint64) for k in rng.integers(0, 60, size=40)]
    raw[3] = np.array([top, top, 5], dtype=np.uint64)
    raw[4] = np.array([top, 7], dtype=np.uint64)
    raw[5] = np.zeros(0, dtype=np.uint64)
    sets = ShingleSets(np.concatenate(raw), np.concatenate(([0], np.cumsum([len(r) for r in raw]))).astype(np.int64))
    distinct = sorted_sets(sets)
    i, j = np.triu_indices(len(raw), 1)
    got = jaccard_many(distinct, i, j)
    want = [jaccard(np.unique(raw[a]), np.unique(raw[b])) for a, b in zip(i.tolist(), j.tolist())]
    assert got.tolist() == want
    assert got[(i == 3) & (j == 4)].tolist() == [1 / 3]


# ------------------------------------------------------------------------------- answers must agree too


def doc_records(answers: list[str]) -> list[dict]:
    """Records sharing one long document in the user turn (retrieval-style), each with its own question."""
    document = " ".join(f"d{i}" for i in range(300))
    return [chat(("user", f"{document} question {k}"), ("assistant", a)) for k, a in enumerate(answers)]


def test_a_long_shared_prompt_with_different_answers_is_a_prompt_conflict_not_a_near_duplicate(tmp_path):
    # 5 records: the same 300-word document, 5 questions, 5 unrelated 10-word answers. Whole-record 5-grams:
    # 296 shared of 322 (J 0.919), so before the answer check 4 of them were lost as dup.near.
    answers = [text(20 * k, 10) for k in range(5)]
    records = doc_records(answers)
    copy = json.loads(json.dumps(records[0]))  # a true near-duplicate of record 1: one answer word changed
    copy["messages"][1]["content"] = answers[0].replace("w5", "changed")
    df = stage_frame(tmp_path, records + [copy])
    out, ctx = run_stage(df)
    assert reasons(out) == [[], [], [], [], [], ["dup.near"]]
    assert out.get_column("near_dup_of").to_list() == [None] * 5 + ["in.jsonl:1"]
    assert out.get_column("prompt_conflict").to_list() == [True] * 5 + [False]
    lines = [json.loads(x) for x in ctx.artifacts["duplicates.jsonl"].decode().splitlines()]
    assert [(x["kind"], x["size"]) for x in lines] == [("near_dup", 2), ("prompt_conflict", 5)]
    assert [m["answer_jaccard"] for m in lines[1]["members"]] == [None, 0.0, 0.0, 0.0, 0.0]
    summary = ctx.summaries["dedup_minhash"]
    assert (summary["near_duplicates_rejected"], summary["prompt_conflict_groups"]) == (1, 1)
    assert summary["answer_check_dropped_pairs"] == 14  # every pair of the 5 answers, and the copy with 4 of them
    assert ctx.manifest["dedup_minhash"]["answer_threshold"] == 0.3


def test_answer_jaccard_uses_the_short_ngram_for_short_answers(tmp_path):
    # 10-word answers, the middle word changed: bigrams share 7 of 11 (near-duplicates at the default 0.3);
    # 5-grams would share 1 of 11
    answer = text(0, 10)
    df = stage_frame(tmp_path, doc_records([answer, answer.replace("w5", "changed"), text(100, 60),
                                            text(100, 60).replace("w130", "changed")]))
    cfg = dedup_minhash.Config()
    answers = dedup_minhash.shingle_records(df.get_column(C.MESSAGES), cfg).answers
    got = answers.jaccard(np.array([0, 2]), np.array([1, 3]))
    assert got.tolist() == [7 / 11, 51 / 61]  # 60 words: 5-grams, 5 of 56 changed
    out, _ = run_stage(df)
    assert reasons(out) == [[], ["dup.near"], [], ["dup.near"]]
    out, _ = run_stage(df, answer_threshold=0.9)
    assert reasons(out) == [[], [], [], []]
    assert out.get_column("prompt_conflict").to_list() == [True] * 4


def test_prompt_conflicts_are_found_whatever_roles_says(tmp_path):
    df = stage_frame(tmp_path, conflict_records())
    out, ctx = run_stage(df, roles=["assistant"])
    assert out.get_column("prompt_conflict").to_list() == [True, True, False]
    assert ctx.summaries["dedup_minhash"]["prompt_conflict_groups"] == 1


def test_same_prompt_and_same_answer_is_not_called_a_different_answer(tmp_path):
    # Two unshared system prompts keep the pair below the near-duplicate threshold; user and answer are equal.
    prompt, answer = text(0, 6), text(10, 12)
    records = [
        chat(("system", text(100, 90)), ("user", prompt), ("assistant", answer)),
        chat(("system", text(200, 90)), ("user", prompt), ("assistant", answer)),
    ]
    df = stage_frame(tmp_path, records)
    out, ctx = run_stage(df, prompt_conflict="keep_best")
    assert reasons(out) == [[], []]
    assert out.get_column("prompt_conflict").to_list() == [False, False]
    keys = out.get_column(C.SPLIT_KEY).to_list()
    assert keys[0] == keys[1] == out.row(0, named=True)[C.CONTENT_HASH]
    line = json.loads(ctx.artifacts["duplicates.jsonl"])
    assert (line["kind"], line["size"], line["best"]) == ("same_answer", 2, "in.jsonl:1")
    assert [(m["answer_jaccard"], m["same_answer"]) for m in line["members"]] == [(None, True), (1.0, True)]
    summary = ctx.summaries["dedup_minhash"]
    assert (summary["prompt_conflict_groups"], summary["same_answer_groups"], summary["same_answer_records"]) == (
        0, 1, 2)
    # with a third record that answers differently, the group is a conflict and each detail says which answer
    records.append(chat(("user", prompt), ("assistant", text(300, 12))))
    out, ctx = run_stage(stage_frame(tmp_path, records), prompt_conflict="reject")
    assert reasons(out) == [["dup.prompt_conflict"]] * 3
    assert [d[0] for d in out.get_column(C.REJECT_DETAILS).to_list()] == [
        "prompt answered differently by 1 other record(s), first in.jsonl:3; policy reject",
        "same prompt as in.jsonl:1 (prompt jaccard 1.000) and the same answer (answer jaccard 1.000), in a group "
        "with 1 different answer(s); policy reject",
        "same prompt as in.jsonl:1 (prompt jaccard 1.000), different answer (answer jaccard 0.000); policy reject",
    ]
    out, _ = run_stage(stage_frame(tmp_path, records), prompt_conflict="keep_best")
    assert reasons(out) == [[], [], ["dup.prompt_conflict"]]  # the copy giving the best's answer is no conflict


def test_short_record_bound_is_exact():
    assert dedup_minhash.Config().short_words() == 49  # ceil(2*5 / (1 - 0.8)) - 1, not 50 from float error
    assert dedup_minhash.Config(threshold=0.9).short_words() == 99
    assert dedup_minhash.Config(threshold=0.7, ngram=3).short_words() == 19


def test_bands_that_cannot_exist_are_refused_at_config_load():
    from curator.config import load_config
    from curator.errors import CurateError

    with pytest.raises(CurateError, match=r"^-s dedup_minhash.num_perm=2: .*dedup_minhash.num_perm"):
        load_config(None, ["dedup_minhash.num_perm=2"])
    with pytest.raises(CurateError, match=r"prompt_threshold 0.3"):
        load_config(None, ["dedup_minhash.num_perm=4", "dedup_minhash.threshold=0.9",
                           "dedup_minhash.prompt_threshold=0.3"])
    load_config(None, ["dedup_minhash.num_perm=64"])


def test_disabled_stage_says_so_in_its_summary(tmp_path):
    df = stage_frame(tmp_path, conflict_records())
    _, ctx = run_stage(df, enabled=False)
    assert ctx.summaries["dedup_minhash"] == {"enabled": False}


def test_disabled_exact_dedup_says_so_in_its_summary(tmp_path):
    from curator.stages import dedup_exact

    df = stage_frame(tmp_path, conflict_records() + conflict_records())
    ctx = StageContext(config=CurateConfig.model_validate({"dedup_exact": {"enabled": False}}))
    out = dedup_exact.run(df, ctx)
    assert reasons(out) == [[]] * 6
    assert ctx.summaries["dedup_exact"] == {"enabled": False}


def test_short_view_takes_every_record_its_distinct_shingles_allow(tmp_path):
    """The distinct-token pre-filter only skips records that cannot qualify: the short view signs exactly the
    short records and those with at most (largest short set / threshold) distinct bigrams, as counted on all."""
    import math
    import random

    from curator.shingles import sorted_sets

    rng = random.Random(5)
    records = []
    for k in range(60):
        turns = []
        for _ in range(rng.choice([1, 1, 2, 3])):
            q = " ".join(rng.choice(WORDS[:80]) for _ in range(rng.randint(1, 8)))
            a = " ".join(rng.choice(WORDS[:120]) for _ in range(rng.randint(2, 40)))
            turns += [("user", q), ("assistant", " ".join([a] * rng.choice([1, 2, 4])))]  # answers said 1-4 times
        records.append(chat(*turns))
    df = stage_frame(tmp_path, records)
    out, ctx = run_stage(df)
    turns = tokenize_turns(df.get_column(C.MESSAGES), ["system", "user", "assistant"])
    words = turns.words()
    sizes = sorted_sets(shingle(turns, 2)).sizes()
    short = words < 49
    reach = math.floor(sizes[short].max() / 0.8 + 1e-9)
    expected = int(((short | (sizes <= reach)) & (sizes > 0)).sum())
    assert 0 < short.sum() < expected < len(records)  # the sample has records that only repetition lets in
    assert ctx.summaries["dedup_minhash"]["lsh"]["short"]["signed"] == expected


# ------------------------------------------------------------------------------------------------ chains


def edited(positions: list[int]) -> str:
    """text(0, 100) with the words at `positions` replaced; positions 10 apart change disjoint 5-grams."""
    words = text(0, 100).split()
    for p in positions:
        words[p] = f"edit{p}"
    return " ".join(words)


def chain_records(steps: int) -> list[dict]:
    """A chain: each record two substitutions from the previous one (J = 87 / 107 = 0.813 between
    neighbours with the shared user shingle), four from the one before (J = 77 / 117 = 0.658)."""
    return [chat(("user", "q"), ("assistant", edited(list(range(10, 10 + 20 * s, 10))))) for s in range(steps)]


def test_a_chain_keeps_the_far_end_and_removes_only_what_is_near_the_kept_copy(tmp_path):
    df = stage_frame(tmp_path, chain_records(3))  # A ~ B ~ C, J(A, C) = 0.658
    out, ctx = run_stage(df)
    assert reasons(out) == [[], ["dup.near"], []]
    assert out.get_column("near_dup_of").to_list() == [None, "in.jsonl:1", None]
    assert out.get_column("near_dup_jaccard").to_list() == [None, pytest.approx(87 / 107), None]
    assert out.get_column("near_dup_cluster").to_list() == [0, 0, 0]  # one cluster, two kept copies
    hashes = out.get_column(C.CONTENT_HASH).to_list()
    assert out.get_column(C.SPLIT_KEY).to_list() == [hashes[0]] * 3  # C stays on A's side
    summary = ctx.summaries["dedup_minhash"]
    assert (summary["clusters"], summary["near_duplicates_rejected"], summary["kept_apart_from_chains"]) == (1, 1, 1)
    assert summary["min_jaccard_to_kept"] == round(87 / 107, 4)
    [line] = [json.loads(x) for x in ctx.artifacts["duplicates.jsonl"].decode().splitlines()]
    assert (line["kept"], line["size"], line["min_jaccard"]) == ("in.jsonl:1", 3, round(87 / 107, 4))
    assert [(m["ref"], m["kept"], m["of"], m["jaccard"]) for m in line["members"]] == [
        ("in.jsonl:1", True, None, None),
        ("in.jsonl:2", False, "in.jsonl:1", round(87 / 107, 4)),
        ("in.jsonl:3", True, None, None),
    ]


def test_a_kept_middle_removes_both_ends(tmp_path):
    df = stage_frame(tmp_path, chain_records(3))
    out, _ = run_stage(df.with_columns(pl.Series("quality_score", [0.1, 0.9, 0.1], dtype=pl.Float64)))
    assert out.get_column("near_dup_of").to_list() == ["in.jsonl:2", None, "in.jsonl:2"]


def test_the_rest_of_a_chain_keeps_its_own_best_copy(tmp_path):
    df = stage_frame(tmp_path, chain_records(4))  # A ~ B ~ C ~ D: A keeps B, then C keeps D
    out, ctx = run_stage(df)
    assert reasons(out) == [[], ["dup.near"], [], ["dup.near"]]
    assert out.get_column("near_dup_of").to_list() == [None, "in.jsonl:1", None, "in.jsonl:3"]
    assert out.get_column("near_dup_jaccard").to_list() == [None, pytest.approx(87 / 107), None,
                                                            pytest.approx(87 / 107)]
    assert ctx.summaries["dedup_minhash"]["kept_apart_from_chains"] == 1
