"""Code outside fences: accuracy, false detections on prose, coverage of bare-code data, speed.

    python bench/unfenced_code_bench.py                  # everything (a few minutes on 2 cores)
    python bench/unfenced_code_bench.py --only accuracy|prose|bare|speed [--before-rev REV] [--n 50000]

1. Accuracy: the assistant answers of the Exercism (8 tracks) and HumanEval-X (6 languages) records
   in ../shared/data/chat with their fences stripped (each fenced block replaced by its content, so
   `main.py`: captions, prose and code remain), through `unfenced_candidates` + `classify_unfenced`.
   A record's answer is the language with the most lines among its unfenced blocks; no block is a
   miss. The rules were tuned on the records with an even line number in each file ("tune") and
   are measured on the odd ones ("test"); `meta.language` is the truth.
2. False detections: the share of prose-only answers (GSM8K, GPTeacher Roleplay; and, for
   information, the other prose sets) holding any unfenced block.
3. Bare-code data (CodeAlpaca, GPTeacher Codegen): the share of assistant answers with a
   programming language, fenced blocks only (before) and with unfenced code; and agreement with
   the language the prompt names, when it names exactly one.
4. Speed: the language and code_language stages on the first `--n` records of the benchmark corpus
   (bench/corpus.py), the tree at `--before-rev` (exported with `git archive`) against this tree,
   each in its own process, alternated `--reps` times; wall and CPU seconds, and the ratio.
"""

from __future__ import annotations

import argparse
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
CHAT = ROOT.parent / "shared" / "data" / "chat"
sys.path.insert(0, str(ROOT / "bench"))
from language_bench import LANGS, META  # noqa: E402  (the labelled data's language names, one table)
PROSE_SETS = ["gsm8k_train.jsonl", "gpteacher_roleplay.jsonl"]
OTHER_PROSE = ["llamafactory_alpaca_en_demo.jsonl", "llamafactory_identity.jsonl", "fastchat_dummy_conversation.jsonl",
               "llamafactory_glaive_toolcall_en_demo.jsonl"]
BARE_SETS = ["codealpaca_2k.jsonl", "gpteacher_codegen.jsonl"]
# a language named in a prompt ("Write a C++ function ..."); `c` only as a word not followed by ++ or #
NAMED = {
    "python": r"\bpython\b", "javascript": r"\bjavascript\b|\bnode\.?js\b", "typescript": r"\btypescript\b",
    "java": r"\bjava\b", "cpp": r"c\+\+", "c": r"\bc\b(?![+#])", "csharp": r"c#", "go": r"\bgolang\b",
    "rust": r"\brust\b", "bash": r"\bbash\b|\bshell script\b", "sql": r"\bsql\b", "ruby": r"\bruby\b",
    "php": r"\bphp\b",
}


def _records(name: str):
    with (CHAT / name).open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            yield i, json.loads(line)


def strip_fences(text: str) -> str:
    """`text` with every fenced block replaced by its content (the fence lines removed)."""
    from curator.code_blocks import extract_code_blocks

    parts, prev = [], 0
    for b in extract_code_blocks(text):
        parts += [text[prev : b.start], b.code]
        prev = b.end
    return "".join(parts) + text[prev:]


def unfenced_langs(text: str) -> list[tuple[str, int]]:
    """(language, lines) of each unfenced block of `text` that gets a language."""
    from curator.code_blocks import unfenced_candidates
    from curator.code_langs import classify_unfenced

    out = []
    for block in unfenced_candidates(text):
        res = classify_unfenced(block.code)
        if res.lang is not None:
            out.append((res.lang, block.n_lines))
    return out


def predict(text: str) -> str | None:
    lines: Counter[str] = Counter()
    for lang, n in unfenced_langs(text):
        lines[lang] += n
    return lines.most_common(1)[0][0] if lines else None


def bench_accuracy() -> None:
    print("\n## Accuracy: Exercism + HumanEval-X answers, fences stripped")
    files = sorted(p.name for p in CHAT.glob("exercism_*.jsonl")) + ["humaneval_x_6lang.jsonl"]
    for half in ("tune", "test"):
        t0 = time.perf_counter()
        hits, totals, conf = Counter(), Counter(), defaultdict(Counter)
        for name in files:
            for i, rec in _records(name):
                if (i % 2 == 0) != (half == "tune"):
                    continue
                lang = META[rec["meta"]["language"]]
                answer = "\n\n".join(m["content"] for m in rec["messages"] if m["role"] == "assistant")
                got = predict(strip_fences(answer))
                totals[lang] += 1
                hits[lang] += got == lang
                conf[lang][got or "none"] += 1
        n = sum(totals.values())
        print(f"\n### {half} half ({'even' if half == 'tune' else 'odd'} line numbers): {n} records, "
              f"{time.perf_counter() - t0:.1f} s")
        print("| language | records | accuracy | no language |")
        print("|---|---:|---:|---:|")
        for lang in LANGS:
            print(f"| {lang} | {totals[lang]} | {hits[lang] / totals[lang]:.3f} | {conf[lang]['none']} |")
        print(f"| **overall** | {n} | **{sum(hits.values()) / n:.3f}** | {sum(c['none'] for c in conf.values())} |")
        cols = LANGS + sorted({g for c in conf.values() for g in c} - set(LANGS) - {"none"}) + ["none"]
        print("\nconfusion (rows: true, columns: detected)\n")
        print("| true \\ detected | " + " | ".join(cols) + " |")
        print("|---|" + "---:|" * len(cols))
        for lang in LANGS:
            print(f"| {lang} | " + " | ".join(str(conf[lang][c] or "") for c in cols) + " |")


def bench_prose() -> None:
    print("\n## False code detections on prose-only answers")
    print("| data | answers | with an unfenced block | share | languages |")
    print("|---|---:|---:|---:|---|")
    for name in PROSE_SETS + OTHER_PROSE:
        n, hit, langs = 0, 0, Counter()
        for _, rec in _records(name):
            for m in rec["messages"]:
                if m["role"] == "assistant" and isinstance(m.get("content"), str):
                    n += 1
                    found = unfenced_langs(m["content"])
                    hit += bool(found)
                    langs.update({lang for lang, _ in found})
        label = name if name in PROSE_SETS else f"{name} (information)"
        print(f"| {label} | {n} | {hit} | {hit / n:.4f} | {', '.join(f'{k} {v}' for k, v in langs.most_common())} |")


def bench_bare() -> None:
    from curator.code_blocks import extract_code_blocks
    from curator.code_langs import classify_block, is_programming

    print("\n## Bare-code data: answers with a programming language")
    print("| data | answers | fenced only | with unfenced code | prompt names one language | agrees |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in BARE_SETS:
        n = fenced = both = named_n = detected = agree = 0
        for _, rec in _records(name):
            answer = rec["messages"][-1]["content"]
            prompt = rec["messages"][0]["content"]
            f_langs = {classify_block(b.code, b.label).lang for b in extract_code_blocks(answer)}
            u_lang = predict(answer)
            has_f = any(is_programming(x) for x in f_langs)
            n += 1
            fenced += has_f
            both += has_f or u_lang is not None
            named = [lang for lang, pat in NAMED.items() if re.search(pat, prompt, re.I)]
            if len(named) == 1 and u_lang is not None:
                detected += 1
                agree += u_lang == named[0]
            named_n += len(named) == 1
        print(f"| {name} | {n} | {fenced} ({fenced / n:.1%}) | {both} ({both / n:.1%}) | {named_n} | "
              f"{agree} of {detected} ({agree / max(detected, 1):.1%}) |")


def time_stages(n: int) -> dict:
    """Wall and CPU seconds of language and code_language on the first `n` corpus records, with
    the curator package found first on sys.path (the tree under test)."""
    sys.path.insert(1, str(ROOT / "bench"))
    from corpus import build_corpus

    import polars as pl

    from curator import columns as C
    from curator.config import CurateConfig
    from curator.stages import code_language, language
    from curator.stages.base import StageContext

    records = build_corpus(n)
    rows = [
        [{"role": m["role"], "content": m.get("content") if isinstance(m.get("content"), str) else None,
          "weight": None, "tool_calls": None, "tool_call_id": None} for m in r["messages"]]
        for r in records
    ]
    df = pl.DataFrame(
        {C.MESSAGES: rows, C.REJECT_REASONS: [[]] * len(rows), C.REJECT_DETAILS: [[]] * len(rows)},
        schema={C.MESSAGES: pl.List(C.MESSAGE), C.REJECT_REASONS: pl.List(pl.Utf8), C.REJECT_DETAILS: pl.List(pl.Utf8)},
    )
    ctx = StageContext(config=CurateConfig())
    out = {}
    for name, stage in (("language", language), ("code_language", code_language)):
        w0, c0 = time.perf_counter(), time.process_time()
        result = stage.run(df, ctx)
        out[name] = (time.perf_counter() - w0, time.process_time() - c0)
    out["code_examples"] = int(result["has_code"].sum())
    return out


def _export(rev: str, dest: Path) -> None:
    """The curator package of `rev`, written under `dest` (git archive, no checkout touched)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "curator"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)


def bench_speed(n: int, before_rev: str, reps: int) -> None:
    print(f"\n## Speed: language + code_language on {n} corpus records, {before_rev} against this tree "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the start)")
    with tempfile.TemporaryDirectory() as tmp:
        _export(before_rev, Path(tmp))
        trees = {"before": tmp, "after": str(ROOT)}
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        for _ in range(reps):
            for version, tree in trees.items():
                cmd = [sys.executable, __file__, "--time-tree", tree, "--n", str(n)]
                res = subprocess.run(cmd, check=True, capture_output=True, text=True)
                runs[version].append(json.loads(res.stdout.strip().splitlines()[-1]))
    print("| version | run | language wall s | language CPU s | code_language wall s | code_language CPU s | "
          "**both, wall** | both, CPU | code examples |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    best = {}
    for version in ("before", "after"):
        for i, r in enumerate(runs[version], 1):
            (lw, lc), (cw, cc) = r["language"], r["code_language"]
            print(f"| {version} | {i} | {lw:.1f} | {lc:.1f} | {cw:.1f} | {cc:.1f} | **{lw + cw:.1f}** | "
                  f"{lc + cc:.1f} | {r['code_examples']} |")
        best[version] = min(runs[version], key=lambda r: r["language"][0] + r["code_language"][0])
    b, a = best["before"], best["after"]
    code_wall, code_cpu = (a["code_language"][k] / b["code_language"][k] for k in (0, 1))
    both_wall, both_cpu = ((a["language"][k] + a["code_language"][k]) / (b["language"][k] + b["code_language"][k])
                           for k in (0, 1))
    print(f"\nbest run of each (by wall), after/before: code_language wall {code_wall:.2f}, CPU {code_cpu:.2f}; "
          f"both stages wall {both_wall:.2f}, CPU {both_cpu:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["accuracy", "prose", "bare", "speed"])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--before-rev", default="HEAD~1", help="git revision of the tree to compare speed against")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--time-tree", help=argparse.SUPPRESS)  # internal: time the stages of this tree
    args = ap.parse_args()
    if args.time_tree:
        sys.path.insert(0, args.time_tree)
        print(json.dumps(time_stages(args.n)))
        return
    sys.path.insert(0, str(ROOT))
    if args.only in (None, "accuracy"):
        bench_accuracy()
    if args.only in (None, "prose"):
        bench_prose()
    if args.only in (None, "bare"):
        bench_bare()
    if args.only in (None, "speed"):
        bench_speed(args.n, args.before_rev, args.reps)


if __name__ == "__main__":
    main()
