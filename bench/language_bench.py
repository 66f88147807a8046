"""Language tagging benchmark: accuracy on real labelled data, and speed on the corpus.

    python bench/language_bench.py            # everything (a few minutes on 2 cores)
    python bench/language_bench.py --only code|mismatch|natural|speed --n 50000

1. Code detection: every fenced block of the Exercism and HumanEval-X records in ../shared/data/chat
   whose fence label names the record's language (`meta.language`), label stripped, through
   `detect_language`; full blocks and blocks cut to their first half (by lines). Blocks that are
   another file type under a language label (Exercism's `Cargo.toml` under ```rust) are left out:
   the file name before the fence says what they are. Accuracy per language, overall, by size
   (lines of code, comments excluded), and the confusion matrix.
2. Label mismatch: the same blocks with a wrong label (the next language in a fixed rotation) must
   be flagged; with their true label they must not be.
3. Text blocks: Exercism blocks labelled text/plaintext, label stripped, should be detected as
   no language.
4. Natural language: bench/data/udhr_langs.jsonl (UDHR paragraphs, 26 languages, see
   bench/data/build_udhr_set.py for the source) by text length; and on the real chat data, how
   often langdetect agrees with the English fast path on the samples the fast path takes.
5. Speed: both stages on the first `--n` records of the benchmark corpus (bench/corpus.py), wall
   and CPU seconds (this process and its pool workers), and the variants (fast path off, process
   pools, every grammar tried) on a slice, as ratios.
6. Chinese, Japanese, Korean (`--only cjk`): the stage on ../shared/data/native/alpaca_zh_sample.json,
   split in two halves: records 0-999 are the tuning half (the thresholds were chosen on them),
   records 1000-1999 the held-out half; of the records with at least 20 Han/Kana/Hangul
   characters, the share tagged `zh` and `und`. And the language distribution of
   native/sharegpt_v3_sample.json (2,000 real conversations).

`--before REV` also runs the language stage as it was at git revision REV (for example the commit
before a change) on the same data in the same process: sections 4-6 then print both, and section 5
the ratio of the stage times.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402

from curator import columns as C  # noqa: E402
from curator.code_blocks import extract_code_blocks  # noqa: E402
from curator.code_langs import (  # noqa: E402
    NOT_PROGRAMMING,
    classify_block,
    detect_language,
    normalize_label,
    parse_error_frac,
)
from curator.config import CurateConfig  # noqa: E402
from curator.stages import code_language, language  # noqa: E402
from curator.stages.base import StageContext  # noqa: E402

CHAT = ROOT.parent / "shared" / "data" / "chat"
NATIVE = ROOT.parent / "shared" / "data" / "native"
META = {
    "C++": "cpp", "cpp": "cpp", "Go": "go", "go": "go", "Java": "java", "java": "java",
    "JavaScript": "javascript", "javascript": "javascript", "Python": "python", "python": "python",
    "Rust": "rust", "rust": "rust", "TypeScript": "typescript", "SQL (SQLite)": "sql",
}
LANGS = ["python", "javascript", "typescript", "java", "cpp", "go", "rust", "sql"]
_FILE_BEFORE = re.compile(r"`([^`\n]+\.(\w+))`:\s*\n?$")
_COMMENTS = re.compile(r"/\*.*?(\*/|$)|\"\"\".*?(\"\"\"|$)", re.S)
_COMMENT_LINE = re.compile(r"\s*(//|--|# |\*)")


def labelled_blocks() -> list[tuple[str, str]]:
    """(true language, code) of every block labelled with its record's language."""
    out = []
    files = sorted(CHAT.glob("exercism_*.jsonl")) + [CHAT / "humaneval_x_6lang.jsonl"]
    for path in files:
        for line in path.open(encoding="utf-8"):
            rec = json.loads(line)
            lang = META[rec["meta"]["language"]]
            for msg in rec["messages"]:
                text = msg["content"] or ""
                for b in extract_code_blocks(text):
                    if normalize_label(b.label) != lang or not b.code.strip():
                        continue
                    named = _FILE_BEFORE.search(text[max(0, b.start - 200) : b.start])
                    if named and normalize_label(named.group(2)) in NOT_PROGRAMMING:
                        continue  # Cargo.toml under a rust label: not rust
                    out.append((lang, b.code))
    return out


def code_lines(code: str) -> int:
    return sum(1 for ln in _COMMENTS.sub("", code).split("\n") if ln.strip() and not _COMMENT_LINE.match(ln))


def first_half(code: str) -> str:
    lines = code.split("\n")
    return "\n".join(lines[: (len(lines) + 1) // 2])


def bench_code(blocks) -> None:
    print("\n## Code-language detection, fence labels stripped (Exercism + HumanEval-X)")
    for variant, cut in (("full blocks", lambda c: c), ("first half", first_half)):
        t0 = time.perf_counter()
        hits, totals, conf = Counter(), Counter(), defaultdict(Counter)
        size_hits, size_totals = Counter(), Counter()
        for lang, code in blocks:
            code = cut(code)
            n = code_lines(code)
            if n == 0:
                continue  # comments only: nothing to detect (reported below)
            got = detect_language(code).lang
            totals[lang] += 1
            hits[lang] += got == lang
            conf[lang][got or "none"] += 1
            size = "1-2" if n <= 2 else ("3-9" if n <= 9 else "10+")
            size_totals[size] += 1
            size_hits[size] += got == lang
        secs = time.perf_counter() - t0
        n_all = sum(totals.values())
        skipped = len(blocks) - n_all
        print(f"\n### {variant}: {n_all} blocks ({skipped} comment-only left out), {secs:.1f} s")
        print("| language | blocks | accuracy |")
        print("|---|---:|---:|")
        for lang in LANGS:
            print(f"| {lang} | {totals[lang]} | {hits[lang] / totals[lang]:.3f} |")
        print(f"| **overall** | {n_all} | **{sum(hits.values()) / n_all:.3f}** |")
        print("\n| lines of code | blocks | accuracy |")
        print("|---|---:|---:|")
        for size in ("1-2", "3-9", "10+"):
            print(f"| {size} | {size_totals[size]} | {size_hits[size] / size_totals[size]:.3f} |")
        cols = LANGS + sorted({g for c in conf.values() for g in c} - set(LANGS) - {"none"}) + ["none"]
        print("\nconfusion (rows: true, columns: detected)\n")
        print("| true \\ detected | " + " | ".join(cols) + " |")
        print("|---|" + "---:|" * len(cols))
        for lang in LANGS:
            print(f"| {lang} | " + " | ".join(str(conf[lang][c] or "") for c in cols) + " |")


def bench_mismatch(blocks) -> None:
    print("\n## Label mismatch")
    rotate = {lang: LANGS[(i + 1) % len(LANGS)] for i, lang in enumerate(LANGS)}
    flagged = Counter()
    wrong_total = 0
    false_flags = 0
    for lang, code in blocks:
        if code_lines(code) < 3:
            continue
        wrong_total += 1
        flagged[lang] += classify_block(code, rotate[lang]).label_mismatch
        false_flags += classify_block(code, lang).label_mismatch
    print(f"| blocks (3+ code lines) | wrong label flagged | true label flagged |")
    print("|---:|---:|---:|")
    print(f"| {wrong_total} | {sum(flagged.values()) / wrong_total:.3f} | {false_flags / wrong_total:.4f} |")
    print("per language (wrong label -> flagged): " + ", ".join(
        f"{lang}->{rotate[lang]} {flagged[lang]}" for lang in LANGS))


def bench_text_blocks() -> None:
    texts = []
    for path in sorted(CHAT.glob("exercism_*.jsonl")):
        for line in path.open(encoding="utf-8"):
            for msg in json.loads(line)["messages"]:
                texts += [b.code for b in extract_code_blocks(msg["content"]) if normalize_label(b.label) == "text"
                          and b.code.strip()]
    got = Counter(detect_language(t).lang or "none" for t in texts)
    print("\n## Exercism `text` blocks, label stripped (should be no language)")
    print(f"{len(texts)} blocks: none {got['none'] / len(texts):.3f}; detected as code: "
          + ", ".join(f"{k} {v}" for k, v in got.most_common() if k != "none"))


def bench_natural(mod=language, title: str = "") -> None:
    """UDHR accuracy and the fast path's agreement with langdetect, of `mod` (the stage now, or
    as it was at --before)."""
    rows = [json.loads(x) for x in (ROOT / "bench" / "data" / "udhr_langs.jsonl").open(encoding="utf-8")]
    det = mod.Detector(mod.Config(), seed=0)
    buckets = {"20+ words": lambda w: w >= 20, "5-19 words": lambda w: 5 <= w < 20, "<5 words": lambda w: w < 5}
    print(f"\n## Natural language{title}: UDHR paragraphs, 26 languages (bench/data/udhr_langs.jsonl)")
    print("| length | texts | accuracy | und |")
    print("|---|---:|---:|---:|")
    per_lang = defaultdict(lambda: [0, 0])
    for name, keep in buckets.items():
        sel = [r for r in rows if keep(r["words"])]
        got = det.detect_all([r["text"] for r in sel])
        acc = sum(g[0] == r["lang"] for g, r in zip(got, sel)) / len(sel)
        und = sum(g[0] == "und" for g in got) / len(sel)
        print(f"| {name} | {len(sel)} | {acc:.3f} | {und:.3f} |")
        if name == "20+ words":
            for g, r in zip(got, sel):
                per_lang[r["lang"]][0] += g[0] == r["lang"]
                per_lang[r["lang"]][1] += 1
    worst = sorted(per_lang.items(), key=lambda kv: kv[1][0] / kv[1][1])[:5]
    print("lowest per-language accuracy on 20+ words: " + ", ".join(f"{k} {a / n:.2f} ({n})" for k, (a, n) in worst))
    cjk = [r for r in rows if r["lang"] in ("zh", "ja", "ko")]
    got = det.detect_all([r["text"] for r in cjk])
    print("zh/ja/ko paragraphs of any length: " + ", ".join(
        f"{lg} {sum(g[0] == lg for g, r in zip(got, cjk) if r['lang'] == lg)}/{sum(r['lang'] == lg for r in cjk)}"
        for lg in ("zh", "ja", "ko")))
    # agreement of the fast path with langdetect on real chat prose
    fast = mod.Detector(mod.Config(), seed=0)
    slow = mod.Detector(mod.Config(fast_path=False), seed=0)
    texts = []
    for path in sorted(CHAT.glob("*.jsonl")):
        for i, line in enumerate(path.open(encoding="utf-8")):
            if i % 10:
                continue
            for m in json.loads(line)["messages"]:
                if isinstance(m.get("content"), str) and m["role"] in ("user", "assistant"):
                    texts.append(m["content"])
    flat = mod.prose_of_turns(pl.Series(texts, dtype=pl.Utf8), 1000)["flat"]
    samples = pl.select(mod._cut(pl.lit(flat), 1000)).to_series().to_list()
    distinct = list(dict.fromkeys(samples))
    taken = [s for s, v in zip(distinct, fast.cheap_all(distinct)) if v == ("en", mod.FAST_CONFIDENCE, None)]
    agree = sum(v[0] == "en" for v in slow.detect_all(taken))
    print(f"\nfast path on real chat prose (every 10th record): takes {len(taken)} of {len(set(samples))} distinct "
          f"samples; langdetect says en on {agree / len(taken):.4f} of them")


def _frame(records: list[dict]) -> pl.DataFrame:
    rows = [
        [{"role": m["role"], "content": m.get("content") if isinstance(m.get("content"), str) else None,
          "weight": None, "tool_calls": None, "tool_call_id": None} for m in r["messages"]]
        for r in records
    ]
    return pl.DataFrame(
        {C.MESSAGES: rows, C.REJECT_REASONS: [[]] * len(rows), C.REJECT_DETAILS: [[]] * len(rows)},
        schema={C.MESSAGES: pl.List(C.MESSAGE), C.REJECT_REASONS: pl.List(pl.Utf8), C.REJECT_DETAILS: pl.List(pl.Utf8)},
    )


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (a process pool's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _time_stages(df: pl.DataFrame, overrides: dict, lang_mod=language) -> tuple[tuple[float, float], tuple[float, float]]:
    """((wall, cpu) of language, (wall, cpu) of code_language) on `df`."""
    ctx = StageContext(config=CurateConfig.model_validate(overrides))
    parse_error_frac.cache_clear()  # no variant profits from the parses of the one before
    w0, c0 = time.perf_counter(), _cpu()
    lang_mod.run(df, ctx)
    w1, c1 = time.perf_counter(), _cpu()
    code_language.run(df, ctx)
    w2, c2 = time.perf_counter(), _cpu()
    return (w1 - w0, c1 - c0), (w2 - w1, c2 - c1)


def _corpus(n: int) -> pl.DataFrame:
    """The first `n` records of bench/corpus/corpus50k.jsonl when it holds them, else built."""
    path = ROOT / "bench" / "corpus" / "corpus50k.jsonl"
    if n <= 50_000 and path.exists():
        with path.open(encoding="utf-8") as fh:
            return _frame([json.loads(line) for _, line in zip(range(n), fh)])
    sys.path.insert(0, str(ROOT / "bench"))
    from corpus import build_corpus

    return _frame(build_corpus(n))


def bench_speed(n: int, before=None) -> None:
    df = _corpus(n)
    print(f"\n## Speed: language + code_language on {df.height} corpus records (load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the start)")
    (lw, lc), (cw, cc) = _time_stages(df, {})
    print("| stage | wall s | CPU s |")
    print("|---|---:|---:|")
    print(f"| language | {lw:.1f} | {lc:.1f} |\n| code_language | {cw:.1f} | {cc:.1f} |")
    print(f"| **both** | **{lw + cw:.1f}** | **{lc + cc:.1f}** |")
    if before is not None:
        # before, now, before, now: the load of the box drifts, the alternation shares it out
        runs = {"before": [], "now": []}
        for name, mod in [("before", before), ("now", language)] * 2:
            runs[name].append(_time_stages(df, {}, mod)[0])
        print("\nlanguage stage, as it was (--before) and now, alternated twice on the same records")
        print("| version | wall s | CPU s |")
        print("|---|---:|---:|")
        for name, times in runs.items():
            print(f"| {name} | " + " / ".join(f"{w:.1f}" for w, _ in times) + " | "
                  + " / ".join(f"{c:.1f}" for _, c in times) + " |")
        ratio = [sum(t[i] for t in runs["now"]) / sum(t[i] for t in runs["before"]) for i in (0, 1)]
        print(f"| ratio now/before | {ratio[0]:.2f} | {ratio[1]:.2f} |")
    part = df.head(min(10_000, df.height))
    variants = [
        ("language, default", {}, 0),
        ("language, fast path off", {"language": {"fast_path": False}}, 0),
        ("language, 2 processes for langdetect from 1 sample", {"language": {"workers": 2, "pool_min_samples": 1}}, 0),
        ("code_language, default", {}, 1),
        ("code_language, 2 processes from 1 block", {"code_language": {"workers": 2, "pool_min_blocks": 1}}, 1),
        ("code_language, every cued grammar", {"code_language": {"max_candidates": 13}}, 1),
    ]
    print(f"\nvariants on the first {part.height} records, same run (ratio to the stage's default)")
    print("| variant | wall s | CPU s | wall ratio | CPU ratio |")
    print("|---|---:|---:|---:|---:|")
    base: dict[int, tuple[float, float]] = {}
    for name, overrides, which in variants:
        wall, cpu = _time_stages(part, overrides)[which]
        base.setdefault(which, (wall, cpu))
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {wall / base[which][0]:.2f} | {cpu / base[which][1]:.2f} |")


def load_before(rev: str):
    """The language stage module as it was at git revision `rev` (imported as `language_before`)."""
    src = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:curator/stages/language.py"],
        capture_output=True, text=True, check=True,
    ).stdout
    folder = Path(tempfile.mkdtemp(prefix="language_before_"))
    (folder / "language_before.py").write_text(src, encoding="utf-8")
    sys.path.insert(0, str(folder))  # a process pool's workers import it by name
    spec = importlib.util.spec_from_file_location("language_before", folder / "language_before.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["language_before"] = module
    spec.loader.exec_module(module)
    return module


CJK_CHARS = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]")
HALF = 1000  # alpaca_zh_sample.json: records [0, 1000) tune, [1000, 2000) held out


def native_frame(records: list[dict]) -> pl.DataFrame:
    """Native Alpaca/ShareGPT records through the format converter, as the stage's input frame."""
    from curator.io.formats import detect_format, to_chat

    return _frame([to_chat(r, detect_format(r)) for r in records])


def cjk_chars(record: dict) -> int:
    """Han, Kana and Hangul characters in an Alpaca record's instruction, input and output."""
    return len(CJK_CHARS.findall(" ".join(str(record.get(k) or "") for k in ("instruction", "input", "output"))))


def _langs(df: pl.DataFrame, lang_mod, summary: dict | None = None, **overrides) -> pl.DataFrame:
    """The stage's language columns on `df` (its summary into `summary` when given)."""
    ctx = StageContext(config=CurateConfig.model_validate({"language": {"workers": 1, **overrides}}))
    out = lang_mod.run(df, ctx).select("lang", "lang_reason", "user_lang", "assistant_lang")
    if summary is not None:
        summary.update(ctx.summaries["language"])
    return out


def sweep_cjk(tuning: pl.DataFrame, sharegpt: pl.DataFrame) -> None:
    """The script thresholds on the tuning half, and how many ShareGPT examples each setting
    labels otherwise than the defaults."""
    default = _langs(sharegpt, language)["lang"]
    print("\nthresholds on the tuning half (defaults: weight 2.5, share 0.5, kana 0.1)")
    print("| cjk_letter_weight | script_min_share | zh | und | ShareGPT examples labelled otherwise |")
    print("|---:|---:|---:|---:|---:|")
    for weight in (1.0, 2.0, 2.5, 3.0):
        for share in (0.3, 0.5, 0.7):
            cfg = {"cjk_letter_weight": weight, "script_min_share": share}
            got = Counter(_langs(tuning, language, **cfg)["lang"].to_list())
            moved = int((_langs(sharegpt, language, **cfg)["lang"] != default).sum())
            print(f"| {weight} | {share} | {got['zh'] / tuning.height:.3f} | {got['und'] / tuning.height:.3f} | {moved} |")


def bench_cjk(before=None, sweep: bool = False) -> None:
    versions = ([("before", before)] if before is not None else []) + [("now", language)]
    alpaca = json.loads((NATIVE / "alpaca_zh_sample.json").read_text(encoding="utf-8"))
    print("\n## Chinese Alpaca (native/alpaca_zh_sample.json), records with >= 20 Han/Kana/Hangul characters")
    print("| half | version | records | zh | und | other labels |")
    print("|---|---|---:|---:|---:|---|")
    for half, part in (("tuning 0-999", alpaca[:HALF]), ("held out 1000-1999", alpaca[HALF:])):
        part = [r for r in part if cjk_chars(r) >= 20]
        df = native_frame(part)
        for name, mod in versions:
            langs = _langs(df, mod)["lang"].to_list()
            got = Counter(langs)
            others = ", ".join(f"{k} {v}" for k, v in got.most_common() if k not in ("zh", "und"))
            print(f"| {half} | {name} | {len(part)} | {got['zh'] / len(part):.3f} | {got['und'] / len(part):.3f} "
                  f"| {others or '-'} |")
    sharegpt = json.loads((NATIVE / "sharegpt_v3_sample.json").read_text(encoding="utf-8"))
    df = native_frame(sharegpt)
    out = {name: _langs(df, mod) for name, mod in versions}
    print(f"\n## ShareGPT (native/sharegpt_v3_sample.json, {df.height} conversations): example language")
    for name, frame in out.items():
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in Counter(frame["lang"].to_list()).most_common()))
    if before is not None:
        moved = Counter(
            f"{b} -> {a}" for b, a in zip(out["before"]["lang"], out["now"]["lang"]) if a != b
        )
        print("changed: " + (", ".join(f"{k} {v}" for k, v in moved.most_common()) or "none"))
        for role in ("user_lang", "assistant_lang"):
            moved = Counter(f"{b} -> {a}" for b, a in zip(out["before"][role], out["now"][role]) if a != b)
            print(f"changed {role}: " + (", ".join(f"{k} {v}" for k, v in moved.most_common()) or "none"))
        corpus = _corpus(50_000)
        summaries: dict[str, dict] = {"before": {}, "now": {}}
        was, now = (_langs(corpus, mod, summaries[name]) for name, mod in versions)
        print(f"\n## Benchmark corpus ({corpus.height} records, bench/corpus.py): labels that changed")
        for name, summary in summaries.items():
            print(f"{name}: distinct samples by decision {summary['distinct_samples_by_decision']}, "
                  f"und reasons {summary['und_reasons']}")
        for col in ("lang", "user_lang", "assistant_lang"):
            moved = Counter(f"{b} -> {a}" for b, a in zip(was[col], now[col]) if a != b)
            print(f"{col}: " + (", ".join(f"{k} {v}" for k, v in moved.most_common()) or "none"))
    if sweep:
        sweep_cjk(native_frame([r for r in alpaca[:HALF] if cjk_chars(r) >= 20]), df)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["code", "mismatch", "natural", "speed", "cjk"])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--before", metavar="REV", help="also run the language stage as it was at this git revision")
    ap.add_argument("--sweep", action="store_true", help="cjk: also try the script thresholds on the tuning half")
    args = ap.parse_args()
    before = load_before(args.before) if args.before else None
    blocks = labelled_blocks() if args.only in (None, "code", "mismatch") else []
    if args.only in (None, "code"):
        bench_code(blocks)
        bench_text_blocks()
    if args.only in (None, "mismatch"):
        bench_mismatch(blocks)
    if args.only in (None, "natural"):
        if before is not None:
            bench_natural(before, f" (before: {args.before})")
        bench_natural()
    if args.only in (None, "cjk"):
        bench_cjk(before, args.sweep)
    if args.only in (None, "speed"):
        bench_speed(args.n, before)


if __name__ == "__main__":
    main()
