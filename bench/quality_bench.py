"""Quality-score and secrets benchmark on the real data.

1. Separation: take real records from ../shared/data/chat, degrade copies of them (truncate the
   answer, repeat its paragraphs, swap in a refusal, strip its code fences, replace it with the
   question, insert a fake API key or PII) and report the ROC AUC of `quality_score` between the
   originals and their degraded copies, per degradation and overall (target >= 0.95). A row the
   pipeline rejects (a `reject` rule or policy) counts as score 0. AUC is the Mann-Whitney U
   statistic over n_orig * n_copy pairs (scipy.stats.mannwhitneyu), ties counting one half.
2. Secrets: the recall of each planted kind (target 1.0), and every finding on the untouched real
   data (target: no false positive), listed so a person can judge each one.
3. Rule hit rates on the untouched real data, per source file.
4. Speed: the quality stage (and the secrets stage) on the 50,000-record corpus (bench/corpus.py).

Records pass through the real pipeline stages: validate.build_frame, normalize, secrets, language,
code_language, tokens, quality. A column no upstream stage wrote is filled with null, which no rule
fires on, and the run says so.

    python bench/quality_bench.py [--n 3000] [--skip-speed]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import string
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
from scipy.stats import mannwhitneyu

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from corpus import build_corpus, real_records  # noqa: E402

from curator import columns as C  # noqa: E402
from curator.code_blocks import extract_code_blocks  # noqa: E402
from curator.config import CurateConfig  # noqa: E402
from curator.io.readers import iter_file  # noqa: E402
from curator.pipeline import run_stages  # noqa: E402
from curator.stages import normalize, quality, registry, secrets, validate  # noqa: E402
from curator.stages.base import StageContext  # noqa: E402

UPSTREAM = {
    "n_assistant_tokens": pl.Int64,
    "user_lang": pl.Utf8,
    "assistant_lang": pl.Utf8,
    "code_parse_error_frac": pl.Float64,
}

REFUSALS = [
    "I'm sorry, but I can't help with that request.",
    "I'm sorry, but as an AI language model, I cannot provide that information.",
    "As an AI language model, I am unable to complete this task.",
    "I cannot assist with that. If you have another question, feel free to ask.",
    "I'm afraid I can't do that. It would be against my guidelines.",
    "Sorry, I am not able to help with this request.",
    "I must decline to answer this question.",
    "I apologize, but I won't be able to write that for you.",
]

KIND_ORDER = ["aws_access_key", "aws_secret_key", "github_token", "openai_key", "slack_token",
              "private_key", "jwt", "email", "phone"]


# --- fake secrets, in the formats their vendors document ----------------------------------------



def stages(*names: str) -> list:
    """The registry's stages of these names, in the order given."""
    return [registry.BY_NAME[n] for n in names]

def fake_secret(kind: str, rng: random.Random) -> str:
    alnum = string.ascii_letters + string.digits

    def pick(chars: str, n: int) -> str:
        return "".join(rng.choice(chars) for _ in range(n))

    if kind == "aws_access_key":
        return "AKIA" + pick(string.ascii_uppercase + "234567", 16)
    if kind == "aws_secret_key":
        return "aws_secret_access_key = " + pick(alnum + "/+", 40)
    if kind == "github_token":
        return rng.choice(["ghp_", "gho_", "ghs_"]) + pick(alnum, 36)
    if kind == "openai_key":
        if rng.random() < 0.5:
            return "sk-" + pick(alnum, 20) + "T3BlbkFJ" + pick(alnum, 20)
        return "sk-proj-" + pick(alnum + "_-", 74) + "T3BlbkFJ" + pick(alnum + "_-", 74)
    if kind == "slack_token":
        if rng.random() < 0.5:
            return f"xoxb-{pick(string.digits, 12)}-{pick(string.digits, 13)}-{pick(alnum, 24)}"
        return f"https://hooks.slack.com/services/T{pick(string.ascii_uppercase + string.digits, 8)}/B{pick(string.ascii_uppercase + string.digits, 10)}/{pick(alnum, 24)}"
    if kind == "private_key":
        body = "\n".join(pick(alnum + "+/", 64) for _ in range(6))
        label = rng.choice(["RSA PRIVATE KEY", "PRIVATE KEY", "OPENSSH PRIVATE KEY", "EC PRIVATE KEY"])
        return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----"
    if kind == "jwt":
        def b64(obj: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")
        return f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64({'sub': pick(string.digits, 10), 'name': 'Jane Roe', 'iat': 1516239022})}.{pick(alnum + '_-', 43)}"
    if kind == "email":
        first = rng.choice(["maria", "li.wei", "j.smith", "ahmed", "olga.k", "tom_b"])
        return f"{first}{rng.randint(1, 99)}@{rng.choice(['gmail.com', 'outlook.com', 'acme-corp.io', 'yahoo.co.uk'])}"
    if kind == "phone":
        if rng.random() < 0.5:
            return f"({rng.randint(201, 989)}) {rng.randint(200, 999)}-{rng.randint(0, 9999):04d}"
        return f"+44 20 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}"
    raise ValueError(kind)


LEADS = {
    "email": ["Contact me at {}.", "You can reach the author at {}."],
    "phone": ["Call me at {}.", "My number is {}."],
}


def plant(answer: str, kind: str, rng: random.Random) -> str:
    secret = fake_secret(kind, rng)
    if kind in LEADS:
        line = rng.choice(LEADS[kind]).format(secret)
    elif kind == "private_key":
        line = "Here is the key I use:\n" + secret
    else:
        line = rng.choice(["Use this key: {}", "API_KEY = \"{}\"", "token: {}"]).format(secret)
    return f"{line}\n\n{answer}" if rng.random() < 0.5 else f"{answer}\n\n{line}"


# --- degradations of the last assistant turn ------------------------------------------------------


def _last(messages: list[dict], role: str) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == role and isinstance(messages[i].get("content"), str):
            return i
    return None


def degrade(rec: dict, kind: str, rng: random.Random, secret_kind: str | None = None) -> dict | None:
    """A degraded copy of `rec`, or None when the degradation does not apply to it."""
    copy = json.loads(json.dumps(rec))
    msgs = copy["messages"]
    ia = _last(msgs, "assistant")
    if ia is None:
        return None
    answer = msgs[ia]["content"]
    words = answer.split()
    if kind == "truncate":
        if len(words) < 8:
            return None
        cut = rng.uniform(0.3, 0.7) * len(answer)
        pos = answer.rfind(" ", 0, int(cut))
        new = answer[:pos].rstrip() if pos > 0 else None
        if not new:
            return None
    elif kind == "repeat_paragraphs":
        if len(words) < 3:
            return None
        new = "\n\n".join([answer] * 3)
    elif kind == "refusal":
        new = rng.choice(REFUSALS)
    elif kind == "strip_fences":
        if not extract_code_blocks(answer):
            return None
        # drop the fence lines (with their info strings), then any fence run glued to a line ("}```")
        kept = [line for line in answer.split("\n") if not line.lstrip().startswith(("```", "~~~"))]
        new = "\n".join(kept).replace("```", "")
    elif kind == "echo_question":
        iu = _last(msgs[:ia], "user")
        if iu is None or len(msgs[iu]["content"].strip()) < 20:
            return None
        new = msgs[iu]["content"]
    elif kind == "fake_secret":
        new = plant(answer, secret_kind, rng)
    else:
        raise ValueError(kind)
    msgs[ia]["content"] = new
    return copy


DEGRADATIONS = ["truncate", "repeat_paragraphs", "refusal", "strip_fences", "echo_question", "fake_secret"]


# --- running the stages -----------------------------------------------------------------------------


def run_pipeline(records: list[dict], ctx: StageContext) -> tuple[pl.DataFrame, list[str]]:
    """The records through validate .. quality; returns every row and the columns filled with null."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        frame = validate.build_frame(iter_file(path, "bench.jsonl"), ctx)
    frame, _, _ = run_stages(frame, ctx, stages("normalize", "secrets", "language", "code_language", "tokens"))
    filled = [c for c in UPSTREAM if c not in frame.columns]
    frame = frame.with_columns(pl.lit(None, dtype=UPSTREAM[c]).alias(c) for c in filled)
    frame, _, _ = run_stages(frame, ctx, stages("quality"))
    return frame, filled


def effective_score(df: pl.DataFrame) -> pl.Expr:
    """quality_score, or 0 for a row some stage rejected."""
    return pl.when(pl.col(C.REJECT_REASONS).list.len() > 0).then(0.0).otherwise(pl.col("quality_score").fill_null(0.0))


def auc(pos: list[float], neg: list[float]) -> float:
    if not pos or not neg:
        return float("nan")
    u = mannwhitneyu(pos, neg, alternative="two-sided").statistic
    return float(u) / (len(pos) * len(neg))


def separation(n: int, seed: int) -> None:
    rng = random.Random(seed)
    real = [r for r in real_records() if any(m.get("role") == "assistant" and (m.get("content") or "").strip()
                                             for m in r.get("messages", []))]
    sample = rng.sample(real, min(n, len(real)))
    records = []
    for i, rec in enumerate(sample):
        rec = json.loads(json.dumps(rec))
        rec["meta"] = {"bench_id": i, "degradation": "original", "source": (rec.get("meta") or {}).get("source", "")}
        records.append(rec)
    planted: dict[int, str] = {}
    for i, rec in enumerate(sample):
        for kind in DEGRADATIONS:
            skind = KIND_ORDER[(i + len(records)) % len(KIND_ORDER)] if kind == "fake_secret" else None
            copy = degrade(rec, kind, rng, skind)
            if copy is None:
                continue
            copy["meta"] = {"bench_id": i, "degradation": kind}
            if skind:
                planted[len(records)] = skind
            records.append(copy)
    ctx = StageContext(config=CurateConfig())
    t0 = time.perf_counter()
    df, filled = run_pipeline(records, ctx)
    elapsed = time.perf_counter() - t0
    df = df.sort(C.ROW).with_columns(
        pl.col(C.META).str.json_path_match("$.bench_id").cast(pl.Int64).alias("bench_id"),
        pl.col(C.META).str.json_path_match("$.degradation").alias("degradation"),
        effective_score(df).alias("score"),
    )
    print(f"## Separation: {len(sample)} real records, {len(records) - len(sample)} degraded copies "
          f"(stages took {elapsed:.1f} s)")
    if filled:
        print(f"note: columns not written by their stage yet, filled with null: {', '.join(filled)}")
    orig = df.filter(pl.col("degradation") == "original").select("bench_id", pl.col("score").alias("orig"))
    print(f"originals: mean score {orig['orig'].mean():.3f}, high quality "
          f"{df.filter(pl.col('degradation') == 'original')['high_quality'].fill_null(False).mean():.1%}")
    print()
    print("| degradation | copies | AUC | copy scored lower than its original | mean score copy | rejected |")
    print("|---|---:|---:|---:|---:|---:|")
    all_pos, all_neg = [], []
    for kind in DEGRADATIONS:
        copies = df.filter(pl.col("degradation") == kind).join(orig, on="bench_id")
        if copies.height == 0:
            continue
        pos, neg = copies["orig"].to_list(), copies["score"].to_list()
        all_neg += neg
        lower = (copies["score"] < copies["orig"]).mean()
        rejected = (copies[C.REJECT_REASONS].list.len() > 0).mean()
        print(f"| {kind} | {copies.height} | {auc(pos, neg):.3f} | {lower:.1%} | {copies['score'].mean():.3f} | {rejected:.1%} |")
    all_pos = orig["orig"].to_list()
    print(f"| **overall** (all originals vs all copies) | {len(all_neg)} | **{auc(all_pos, all_neg):.3f}** | | | |")
    print()

    # which rules fire on each degradation (the reasons behind the separation)
    fired = (
        df.select("degradation", pl.col("quality_flags").list.eval(pl.element().struct.field("rule")).alias("r"))
        .explode("r").drop_nulls("r").group_by("degradation", "r").len()
    )
    totals = df.group_by("degradation").len().rename({"len": "n"})
    top = (fired.join(totals, on="degradation").with_columns((pl.col("len") / pl.col("n")).alias("rate"))
           .sort("degradation", "rate", descending=[False, True]).group_by("degradation", maintain_order=True)
           .agg(pl.format("{} {}%", pl.col("r"), (pl.col("rate") * 100).round(0).cast(pl.Int64)).head(4).alias("top")))
    print("| rows | rules firing most (share of rows) |")
    print("|---|---|")
    for kind, rules in top.iter_rows():
        print(f"| {kind} | {', '.join(rules)} |")
    print()

    # secrets: recall per planted kind
    print("## Secrets: recall on planted kinds")
    print()
    print("| kind | planted | found | recall | action |")
    print("|---|---:|---:|---:|---|")
    policy = CurateConfig().secrets.policy.model_dump()
    found_rows = df.select(pl.col("secret_findings").list.eval(pl.element().struct.field("kind"))).to_series().to_list()
    for kind in KIND_ORDER:
        rows = [i for i, k in planted.items() if k == kind]
        hit = sum(1 for i in rows if kind in (found_rows[i] or []))
        print(f"| {kind} | {len(rows)} | {hit} | {hit / len(rows) if rows else float('nan'):.3f} | {policy[kind]} |")
    print()


def real_frame(records: list[dict], ctx: StageContext) -> pl.DataFrame:
    """The validated frame of `records`, read back through the real reader."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "real.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        return validate.build_frame(iter_file(path, "real.jsonl"), ctx)


def findings_on_real() -> None:
    records = real_records()
    ctx = StageContext(config=CurateConfig())
    frame = real_frame(records, ctx)
    raw_messages = frame.select(C.MESSAGES).to_series().to_list()
    frame, _, _ = run_stages(frame, ctx, stages("normalize", "secrets"))
    frame = frame.sort(C.ROW)
    hits = frame.filter(pl.col("secret_findings").list.len() > 0)
    print(f"## Secrets on the untouched real data ({frame.height} records): {hits.height} records with findings")
    print()
    print("| kind | records | what was matched (distinct strings) |")
    print("|---|---:|---|")
    for kind in KIND_ORDER:
        rows = hits.filter(pl.col("secret_findings").list.eval(pl.element().struct.field("kind") == kind).list.any())
        if rows.height == 0:
            print(f"| {kind} | 0 | |")
            continue
        det = secrets.DETECTORS[kind]
        pat = re.compile(det.redact_pattern or det.pattern)
        seen: dict[str, int] = {}
        for row in rows.get_column(C.ROW).to_list():
            for m in raw_messages[row]:
                for text in (m.get("content"), m.get("tool_calls")):
                    for match in pat.finditer(text or ""):
                        found = match.group(0).strip()
                        if kind == "email" and found.rsplit(".", 1)[0].endswith(("@example", ".example")):
                            continue  # reserved documentation domains are not reported by the stage
                        seen[found] = seen.get(found, 0) + 1
        shown = ", ".join(f"`{s}`" + (f" x{c}" if c > 1 else "") for s, c in sorted(seen.items(), key=lambda x: -x[1])[:12])
        print(f"| {kind} | {rows.height} | {shown} |")
    print()


def rule_rates() -> None:
    records = real_records()
    ctx = StageContext(config=CurateConfig())
    frame = real_frame(records, ctx)
    df, filled = run_pipeline_frame(frame, ctx)
    df = df.with_columns(pl.col(C.META).str.json_path_match("$.source").str.split("/").list.last().str.slice(0, 28).alias("src"))
    summary = ctx.summaries["quality"]
    print(f"## Untouched real data: {df.height} records, high-quality rate {summary['high_quality_rate']:.1%} of "
          f"{summary['rows']} scored (threshold {summary['high_quality_threshold']})")
    if filled:
        print(f"note: filled with null: {', '.join(filled)}")
    print()
    print("| rule | action | hits | rate |")
    print("|---|---|---:|---:|")
    for r in summary["rules"]:
        print(f"| {r['rule']} | {r['action']} | {r['hits']} | {r['rate']:.2%} |")
    print()
    per_src = df.filter(pl.col("quality_score").is_not_null()).group_by("src").agg(
        pl.len().alias("n"), pl.col("high_quality").mean().alias("hq"), pl.col("quality_score").mean().alias("mean")
    ).sort("src")
    print("| source | records | high quality | mean score |")
    print("|---|---:|---:|---:|")
    for src, n, hq, mean in per_src.iter_rows():
        print(f"| {src} | {n} | {hq:.1%} | {mean:.3f} |")
    print()


def run_pipeline_frame(frame: pl.DataFrame, ctx: StageContext) -> tuple[pl.DataFrame, list[str]]:
    frame, _, _ = run_stages(frame, ctx, stages("normalize", "secrets", "language", "code_language", "tokens"))
    filled = [c for c in UPSTREAM if c not in frame.columns]
    frame = frame.with_columns(pl.lit(None, dtype=UPSTREAM[c]).alias(c) for c in filled)
    frame, _, _ = run_stages(frame, ctx, stages("quality"))
    return frame.sort(C.ROW), filled


def speed(n: int) -> None:
    ctx = StageContext(config=CurateConfig())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for rec in build_corpus(n):
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        frame = validate.build_frame(iter_file(path, "corpus.jsonl"), ctx)
    frame = normalize.run(frame.filter(C.alive()), ctx)
    t, c = time.perf_counter(), time.process_time()
    frame = secrets.run(frame, ctx)
    t_secrets, c_secrets = time.perf_counter() - t, time.process_time() - c
    frame = frame.filter(C.alive())
    filled = [c for c in UPSTREAM if c not in frame.columns]
    # the columns of stages not built yet: realistic stand-ins so the rules reading them do work
    stand_in = {
        "n_assistant_tokens": pl.col(C.MESSAGES).list.eval(pl.element().struct.field("content").str.len_chars()).list.sum() // 4,
        "user_lang": pl.lit("en"),
        "assistant_lang": pl.lit("en"),
        "code_parse_error_frac": pl.lit(0.0),
    }
    frame = frame.with_columns(stand_in[c].alias(c) for c in filled)
    runs, cpu = [], []
    for _ in range(3):
        t, c = time.perf_counter(), time.process_time()
        quality.run(frame, ctx)
        runs.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    load = os.getloadavg()[0]
    print(f"## Speed on the {n:,}-record corpus ({frame.height:,} rows alive after validate/secrets)")
    print()
    print(f"{os.cpu_count()} CPUs, load average {load:.1f} while measuring (other engineers' jobs share them).")
    print("CPU seconds are the process's user+system time over all its threads: on an idle 2-core")
    print("box the wall time is at most that, and at least half of it.")
    print()
    print("| stage | wall s | CPU s | records/s (wall) |")
    print("|---|---:|---:|---:|")
    print(f"| secrets | {t_secrets:.2f} | {c_secrets:.2f} | {frame.height / t_secrets:,.0f} |")
    best = min(range(3), key=lambda i: runs[i])
    print(f"| quality (best of 3 runs; walls {', '.join(f'{r:.1f}' for r in runs)}) | {runs[best]:.2f} | {cpu[best]:.2f} "
          f"| {frame.height / runs[best]:,.0f} |")
    if filled:
        print(f"\nnote: stand-ins for columns of stages not built yet: {', '.join(filled)}")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="real records to degrade")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--speed-n", type=int, default=50_000)
    args = ap.parse_args()
    pl.Config(tbl_rows=50)
    separation(args.n, args.seed)
    findings_on_real()
    rule_rates()
    if not args.skip_speed:
        speed(args.speed_n)


if __name__ == "__main__":
    main()
