"""No near-duplicate pair straddles train and val, proved by brute force on real records."""

from __future__ import annotations

import json
import random

import numpy as np
import polars as pl

from curator import columns as C
from curator.config import CurateConfig
from curator.shingles import jaccard, shingle, tokenize_turns
from curator.stages import dedup_minhash, split
from curator.stages.base import StageContext
from tests.conftest import CHAT_DATA
from tests.test_dedup_minhash import stage_frame


def sample_records() -> list[dict]:
    rng = random.Random(0)
    base = []
    for name, n in (("gsm8k_train.jsonl", 120), ("codealpaca_2k.jsonl", 120), ("gpteacher_codegen.jsonl", 80)):
        lines = (CHAT_DATA / name).read_text(encoding="utf-8").splitlines()
        base += [json.loads(x) for x in lines[:n]]
    planted = []
    for rec in base[::3]:  # edited copies, from one deleted word to a quarter of the answer rewritten
        copy = json.loads(json.dumps(rec))
        turn = copy["messages"][-1]
        words = turn["content"].split(" ")
        for _ in range(rng.choice([1, 1, 2, 3, max(1, len(words) // 4)])):
            at = rng.randrange(len(words))
            if rng.random() < 0.5:
                del words[at]
            else:
                words.insert(at, rng.choice(["also", "then", "indeed", "note"]))
            if not words:
                words = ["x"]
        turn["content"] = " ".join(words)
        planted.append(copy)
    conflicts = []
    for k, rec in enumerate(base[1:60:6]):  # the same prompt answered by another record's answer
        other = base[(k * 37 + 100) % len(base)]
        conflicts.append({"messages": [rec["messages"][0], other["messages"][-1]]})
    return base + planted + conflicts


def pair_sets(df: pl.DataFrame, cfg: dedup_minhash.Config):
    turns = tokenize_turns(df.get_column(C.MESSAGES), cfg.roles, cfg.system_prompt, cfg.shared_system_min_records)
    words = turns.words()
    long_sets, short_sets = shingle(turns, cfg.ngram), shingle(turns, cfg.short_ngram)
    prompt_sets = shingle(turns, cfg.prompt_ngram, turns.role == "user")
    answer = turns.role == "assistant"
    answer_sets = (turns.words(answer), shingle(turns, cfg.ngram, answer), shingle(turns, cfg.short_ngram, answer))
    return words, long_sets, short_sets, prompt_sets, answer_sets


_MEMO: dict = {}


def set_of(sets, i: int) -> np.ndarray:
    key = (id(sets), i)
    if key not in _MEMO:
        _MEMO[key] = sets.set_of(i)
    return _MEMO[key]


def test_no_near_duplicate_pair_crosses_the_split(real_data, tmp_path):
    _MEMO.clear()
    df = stage_frame(tmp_path, sample_records())
    cfg = CurateConfig.model_validate({"seed": 3, "dedup_minhash": {"prompt_conflict": "keep_all"}})
    ctx = StageContext(config=cfg)
    out = dedup_minhash.run(df, ctx)
    kept = split.run(out.filter(C.alive()), ctx)
    side = dict(zip(kept.get_column(C.ROW).to_list(), kept.get_column(C.SPLIT).to_list()))
    keys = out.get_column(C.SPLIT_KEY).to_list()
    rows = out.get_column(C.ROW).to_list()

    mcfg = cfg.dedup_minhash
    words, long_sets, short_sets, prompt_sets, (answer_words, answer_long, answer_short) = pair_sets(df, mcfg)
    short = mcfg.short_words()
    n = df.height
    near, same_prompt, answers_differ = 0, 0, 0
    for i in range(n):
        for j in range(i + 1, n):
            sets = short_sets if min(words[i], words[j]) < short else long_sets
            a, b = set_of(sets, i), set_of(sets, j)
            # |A| / |B| >= J, so a size ratio below the threshold rules the pair out without the intersection
            if len(a) and len(b) and min(len(a), len(b)) >= mcfg.threshold * max(len(a), len(b)) \
                    and jaccard(a, b) >= mcfg.threshold:
                # a near-duplicate needs its answers to agree too; a pair whose answers differ is a prompt conflict
                # when its prompts are near-identical (checked below), else two records
                answer_sets = answer_short if min(answer_words[i], answer_words[j]) < short else answer_long
                if jaccard(set_of(answer_sets, i), set_of(answer_sets, j)) < mcfg.answer_threshold:
                    answers_differ += 1
                    continue
                near += 1
                assert keys[i] is not None and keys[i] == keys[j], (i, j)
                if rows[i] in side and rows[j] in side:  # both kept: possible only in a conflict group
                    assert side[rows[i]] == side[rows[j]]
            pa, pb = set_of(prompt_sets, i), set_of(prompt_sets, j)
            if len(pa) and len(pb) and min(len(pa), len(pb)) >= mcfg.prompt_threshold * max(len(pa), len(pb)) \
                    and jaccard(pa, pb) >= mcfg.prompt_threshold:
                same_prompt += 1
                assert keys[i] is not None and keys[i] == keys[j], (i, j)
                if rows[i] in side and rows[j] in side:
                    assert side[rows[i]] == side[rows[j]]
    # the sample must exercise both rules, with both sides present
    assert near >= 60 and same_prompt >= 10
    # one planted edit broke an answer ("SELECT COUNT(*) FROM tableName;" lost COUNT(*): answer bigrams 1 of 4):
    # a prompt conflict now, on one side of the split through its prompt
    assert answers_differ == 1
    assert {"train", "val"} == set(side.values())
    assert int(out.get_column("prompt_conflict").sum()) >= 10


def test_a_kept_singleton_keeps_its_side_when_duplicates_arrive(real_data, tmp_path):
    """The split key of a cluster is its kept copy's content hash, the key the split uses for singletons."""
    records = sample_records()[:120]
    cfg = CurateConfig.model_validate({"seed": 3})
    before = dedup_minhash.run(stage_frame(tmp_path, records, "a.jsonl"), StageContext(config=cfg))
    before = split.run(before.filter(C.alive()), StageContext(config=cfg))
    copies = [json.loads(json.dumps(r)) for r in records[:40]]
    for r in copies:
        r["messages"][-1]["content"] += " Thanks."
    after = dedup_minhash.run(stage_frame(tmp_path, records + copies, "a.jsonl"), StageContext(config=cfg))
    after = split.run(after.filter(C.alive()), StageContext(config=cfg))
    side_before = dict(zip(before.get_column(C.CONTENT_HASH), before.get_column(C.SPLIT)))
    side_after = dict(zip(after.get_column(C.CONTENT_HASH), after.get_column(C.SPLIT)))
    common = set(side_before) & set(side_after)
    assert len(common) >= 100
    assert all(side_before[h] == side_after[h] for h in common)
    assert np.count_nonzero(after.get_column("near_dup_cluster").is_not_null().to_numpy()) >= 30


def test_a_short_record_and_its_repeated_copy_cluster_on_one_side(tmp_path):
    """The shape of the reviewer's in_leak: a 42-word record and its copy with the answer said twice (78 words).

    Jaccard bounds the number of distinct shingles, not of words: the copy has 41 distinct bigrams to the
    original's 40 (J 40/41), so it must be in the short view although it is longer than any short record
    could be without repetition. Also the exchange repeated three times in one record (in_repeat).
    """
    counter = iter(range(10_000))

    def words(n: int) -> str:
        return " ".join(f"t{next(counter)}" for _ in range(n))

    records = []
    for _ in range(40):
        q, a = words(6), words(36)
        records += [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]},
                    {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a + " " + a}]}]
    for _ in range(10):
        q, a = words(6), words(20)
        once = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        records += [{"messages": once}, {"messages": once * 3}]
    df = stage_frame(tmp_path, records)
    cfg = CurateConfig.model_validate({"seed": 3})
    ctx = StageContext(config=cfg)
    out = dedup_minhash.run(df, ctx)
    clusters = out.get_column("near_dup_cluster").to_list()
    assert clusters == [k // 2 for k in range(100)]
    assert out.get_column(C.REJECT_REASONS).to_list() == [[], ["dup.near"]] * 50
    keys = out.get_column(C.SPLIT_KEY).to_list()
    assert all(keys[2 * k] == keys[2 * k + 1] is not None for k in range(50))
    kept = split.run(out.filter(C.alive()), ctx)
    assert kept.height == 50 and {"train", "val"} == set(kept.get_column(C.SPLIT).to_list())
    assert ctx.summaries["dedup_minhash"]["lsh"]["short"]["signed"] == 100
