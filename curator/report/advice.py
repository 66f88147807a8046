"""Why a reject code or failed gate happens and what to do about it: the one table report.json,
report.md, report.html and `curate run`'s summary all print from.

Each entry is (why, do). `do` names the exact option or command; every `-s KEY=VALUE` in it is loaded
through `curator.config.load_config` by tests/test_report_advice.py, so a renamed key fails a test.
A key ending in `.*` covers every code of that family; `{code}` and `{rule}` in its text are the
code and the part after the first dot (a quality rule's id).
"""

from __future__ import annotations

import re
from typing import Any

# A reject code is advised on when it holds more than this share of the rows read.
MIN_SHARE = 0.01

ADVICE: dict[str, tuple[str, str]] = {
    # --- reject codes ------------------------------------------------------------------------
    "structure.not_alternating": (
        "user and assistant turns do not alternate; typical of ShareGPT captures with repeated or "
        "renamed speakers",
        "keep the ShareGPT repairs on (-s input.repairs=[role_alias,leading_assistant,merge_turns]) and "
        "read those files as ShareGPT: --input-format 'x/*.json=sharegpt'",
    ),
    "format.ambiguous_shape": (
        "a record fits more than one input shape, so auto-detection will not guess",
        "name the shape of those files: --input-format 'GLOB=alpaca' (or chat, sharegpt, gpteacher)",
    ),
    "format.unknown_shape": (
        "a record fits none of the known input shapes (chat, alpaca, sharegpt, gpteacher)",
        "if the files are in a known shape with odd fields, name it: --input-format 'GLOB=alpaca'; "
        "otherwise convert them to chat messages",
    ),
    "dup.exact": (
        "the same example appears more than once; expected when sources were merged",
        "nothing to do for merged sources (one copy is kept); -s dedup_exact.enabled=false keeps every copy",
    ),
    "dup.near": (
        "examples nearly identical to a kept one; expected when sources were merged or templated",
        "raise the similarity needed to count as a duplicate, e.g. -s dedup_minhash.threshold=0.9",
    ),
    "tokens.over_budget": (
        "examples longer than the model's context",
        "cut them to fit instead of rejecting them: -s tokens.policy=truncate "
        "(or a longer context: -s tokens.context_length=N, or --model)",
    ),
    # the same code once the rows were already cut: even the last exchange alone is too long
    "tokens.over_budget@truncate": (
        "examples whose last exchange alone is longer than the model's context, so cutting cannot make them fit",
        "a longer context: -s tokens.context_length=N (up to the model's), or --model with a longer one; or "
        "split such answers at the source",
    ),
    "secrets.private_key": (
        "a private key is in the text; such examples are rejected by default",
        "remove the keys at the source; or -s secrets.policy.private_key=redact to keep the rows redacted",
    ),
    "secrets.phone": (
        "phone numbers found in the text (often false positives on numeric data)",
        "only mark them instead: -s secrets.policy.phone=flag",
    ),
    "secrets.email": (
        "email addresses found in the text",
        "only mark them instead: -s secrets.policy.email=flag; test domains are listed under "
        "secrets.ignore_email_domains",
    ),
    "quality.*": (
        "quality rule {rule} rejected these rows",
        "if rule {rule} is too strict for this data, change or drop it in a copy of rules/default.yaml "
        "and pass it with --rules FILE",
    ),
    "io.bad_json": (
        "lines that are not valid JSON (truncated writes, concatenated objects)",
        "fix or re-export the source files; rejects.jsonl holds each raw line with its file and line number",
    ),
    "io.bad_utf8": (
        "lines that are not valid UTF-8 (another text encoding)",
        "re-encode the source files as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
    ),
    # --- gates -------------------------------------------------------------------------------
    "size.min_examples": (
        "fewer examples were kept than the minimum for a useful fine-tune",
        "add data, or fix the largest reject reasons; for a small test run lower the bar: "
        "-s gates.min_examples=1000 (or --no-gate)",
    ),
    "size.kept": (
        "no example was kept",
        "look at the reject reasons and rejects.jsonl; check RAW points at the data and --input-format matches it",
    ),
    "quality.high_quality_rate": (
        "too few kept examples reach the high-quality score",
        "look at the quality rules that fire most; adjust them with --rules FILE, or change the bar: "
        "-s quality.min_high_quality_rate=0.5 or -s quality.high_quality_threshold=0.6",
    ),
    "code.language_diversity": (
        "the code in the kept set covers too few programming languages",
        "add code examples in more languages, or lower the bar: -s code_language.min_languages=3",
    ),
    "tokens.within_context": (
        "a kept example is longer than the model's context",
        "-s tokens.policy=truncate to cut long examples (or reject, the default), or -s tokens.context_length=N",
    ),
}

_OVERRIDE = re.compile(r"-s (\S+=\S+)")


def cited_overrides() -> list[str]:
    """Every `-s KEY=VALUE` the table cites (N stands for a number)."""
    out = []
    for why, do in ADVICE.values():
        for m in _OVERRIDE.finditer(why + " " + do):
            out.append(m.group(1).rstrip(";,)").replace("=N", "=8192"))
    return out


def lookup(subject: str, config: dict | None = None) -> tuple[str, str] | None:
    """(why, do) for a reject code or gate name under the run's resolved `config`, or None when the table
    has nothing for it. An entry `CODE@VALUE` replaces CODE's when the setting CODE's advice would
    suggest is already VALUE (advice never suggests what the run already did)."""
    entry = ADVICE.get(f"{subject}@{_setting(subject, config)}") or ADVICE.get(subject)
    if entry is None and "." in subject:
        entry = ADVICE.get(subject.split(".", 1)[0] + ".*")
    if entry is None:
        return None
    rule = subject.split(".", 1)[1] if "." in subject else subject
    return tuple(s.replace("{code}", subject).replace("{rule}", rule) for s in entry)  # type: ignore[return-value]


# The setting whose value picks a `CODE@VALUE` variant of an entry.
_VARIANT_SETTING = {"tokens.over_budget": ("tokens", "policy"), "tokens.within_context": ("tokens", "policy")}


def _setting(subject: str, config: dict | None) -> Any:
    where = _VARIANT_SETTING.get(subject)
    if where is None or not config:
        return None
    return (config.get(where[0]) or {}).get(where[1])


def build_advice(gates: dict, rejects: dict, read: int, config: dict | None = None) -> list[dict[str, Any]]:
    """Advice lines: each failed gate first (in gate order), then each reject code over MIN_SHARE of
    the rows read (largest first); `config` is the run's resolved config (manifest.json)."""
    out: list[dict[str, Any]] = []
    for g in gates.get("items") or []:
        if g["passed"]:
            continue
        found = lookup(g["name"], config)
        if found:
            out.append({"subject": g["name"], "kind": "gate", "rows": None, "why": found[0], "do": found[1]})
    for r in rejects.get("items") or []:
        if not read or r["count"] / read <= MIN_SHARE:
            continue
        found = lookup(r["code"], config)
        if found:
            out.append({"subject": r["code"], "kind": "reject", "rows": int(r["count"]), "why": found[0],
                        "do": found[1]})
    return out


def advice_lines(advice: list[dict]) -> list[str]:
    """One plain-text line per advice entry (the CLI summary and report.md use this wording)."""
    lines = []
    for a in advice:
        what = f"gate {a['subject']} failed" if a["kind"] == "gate" else f"{a['subject']} ({a['rows']:,} rows)"
        lines.append(f"{what}: {a['why']}. Do: {a['do']}")
    return lines
