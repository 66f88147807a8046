"""report.md: compact Markdown for a pull-request comment, gates first (issue 7).

Long parts (samples, clusters, config) sit in <details> blocks, which GitHub and GitLab fold.
"""

from __future__ import annotations

import json
from typing import Any


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    text = str(value).replace("\r", " ").replace("\n", " ⏎ ").replace("|", "\\|")
    return text


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _not_measured(what: str) -> str:
    return f"_{what}: not measured (the stage that writes it did not run)._"


def _gates(rep: dict) -> list[str]:
    g = rep["gates"]
    head = "all passed" if g["all_passed"] else f"{g['n_failed']} failed"
    lines = [f"## Gates: {head}", ""]
    if g["items"]:
        lines.append(table(
            ["", "gate", "value", "threshold", "margin", "message"],
            [["✅" if x["passed"] else "❌", f"`{x['name']}`", x["value"], x["threshold"], x["margin"], x["message"]]
             for x in g["items"]],
        ))
    if g["not_measured"]:
        lines.append("")
        lines += [f"- {m['family']} gate, {m['what']}: not measured" for m in g["not_measured"]]
    return lines


def _compare(c: dict) -> list[str]:
    lines = ["## Changes since previous run", "", f"Previous: `{c['previous']}`", ""]
    lines.append(table(["count", "previous", "current", "delta"],
                       [[x["name"], x["previous"], x["current"], x["delta"]] for x in c["counts"]]))
    rec = c["records"]
    lines += ["", f"Kept records by content hash: **{rec['added']:,} added**, **{rec['removed']:,} removed**, "
              f"{rec['unchanged']:,} unchanged, {rec['moved_split']:,} moved between train and val.", ""]
    moved = [x for x in c["figures"] if x["delta"]]
    if moved:
        lines.append(table(["figure", "previous", "current", "delta"],
                           [[x["name"], x["previous"], x["current"], x["delta"]] for x in moved]))
        lines.append("")
    changed = [x for x in c["gates"] if x["previous_passed"] != x["current_passed"] or x["delta"]]
    if changed:
        lines.append(table(["gate", "previous", "current", "delta"],
                           [[f"`{x['name']}`", _gate_state(x, "previous"), _gate_state(x, "current"), x["delta"]]
                            for x in changed]))
        lines.append("")
    for title, key in (("Reject reasons", "reasons"), ("Natural languages", "natural_languages"),
                       ("Programming languages", "code_languages")):
        rows = [[f"`{x['key']}`", x["previous"], x["current"], x["delta"]] for x in c[key] if x["delta"]]
        if rows:
            lines += [f"<details><summary>{title} ({len(rows)} changed)</summary>", "",
                      table(["key", "previous", "current", "delta"], rows), "", "</details>", ""]
    for title, key in (("Added", "added_samples"), ("Removed", "removed_samples")):
        if rec[key]:
            lines += [f"<details><summary>{title} records (first {len(rec[key])})</summary>", ""]
            lines += [f"- `{x['ref']}` `{x['content_hash']}`" for x in rec[key]]
            lines += ["", "</details>", ""]
    for title, key in (("config key", "config_changes"), ("package", "version_changes")):
        if c[key]:
            lines += [table([title, "previous", "current"],
                            [[f"`{x['key']}`", json.dumps(x["previous"]), json.dumps(x["current"])]
                             for x in c[key]]), ""]
    return lines


def _gate_state(x: dict, side: str) -> str:
    passed = x[f"{side}_passed"]
    state = "–" if passed is None else ("pass" if passed else "FAIL")
    return f"{state} ({_cell(x[f'{side}_value'])})"


def render_markdown(rep: dict) -> str:
    c = rep["counts"]
    lines = ["# Dataset report", ""]
    lines += _gates(rep) + [""]
    lines.append(f"**{c['read']:,} read → {c['kept']:,} kept** ({_pct(c['kept'] / c['read'] if c['read'] else 0)}), "
                 f"{c['rejected']:,} rejected; split {c['train']:,} train / {c['val']:,} val.")
    if not c["consistent_with_manifest"]:
        lines.append("\n**Warning:** manifest counts disagree with annotations.parquet.")
    if rep.get("compare"):
        lines += [""] + _compare(rep["compare"])
    lines += ["", "## Funnel", "", table(
        ["step", "count", "removed", "share of read"],
        [[s["step"], s["count"], s["removed"], _pct(s["share_of_read"])] for s in rep["funnel"]])]

    rj = rep["rejects"]
    lines += ["", f"## Reject reasons ({rj['rows_rejected']:,} rows)", ""]
    if rj["items"]:
        lines.append(table(["code", "rows", "first reason of", "share of read"],
                           [[f"`{r['code']}`", r["count"], r["first_reason"], _pct(r["share_of_read"])]
                            for r in rj["items"]]))
        lines += ["", "<details><summary>Samples</summary>", ""]
        for r in rj["items"]:
            for s in r["samples"]:
                where = f" at `{s['highlight']}`" if s["highlight"] else ""
                lines.append(f"- `{r['code']}` `{s['ref']}`{where}: {_cell(s['detail'])}")
                for t in s["turns"]:
                    if t["highlight"]:
                        lines.append(f"  > **{_cell(t['role'] or 'line')}**: {_cell(t['text'][:200])}")
        lines += ["", "</details>"]
    else:
        lines.append("No row was rejected.")

    q = rep["quality"]
    lines += ["", "## Quality", ""]
    if q["measured"]:
        lines.append(f"High-quality rate of the kept set: **{_pct(q['kept_high_quality_rate'])}** "
                     f"(threshold score {_cell(q['high_quality_threshold'])}); mean kept score "
                     f"{_cell(q['kept_mean_score'])}; {q['scored_rows']:,} rows scored.")
        if q["rules"]:
            lines += ["", table(["rule", "action", "rows hit", "hit rate", "kept rows hit"],
                                [[f"`{r['rule']}`", r["action"], r["hits"], _pct(r["hit_rate"]), r["kept_hits"]]
                                 for r in q["rules"]])]
    else:
        lines.append(_not_measured("Quality scores"))

    lines += ["", "## Languages", ""]
    nat, code = rep["languages"]["natural"], rep["languages"]["code"]
    if nat["measured"]:
        lines.append("Natural: " + ", ".join(f"{x['key']} {x['count']:,} ({_pct(x['share'])})" for x in nat["items"]))
    else:
        lines.append(_not_measured("Natural languages"))
    lines.append("")
    if code["measured"]:
        lines.append(f"Programming ({code['examples_with_code']:,} examples with code, {_pct(code['share_with_code'])}): "
                     + ", ".join(f"{x['key']} {x['count']:,} ({_pct(x['share'])})" for x in code["items"]))
    else:
        lines.append(_not_measured("Programming languages"))

    t = rep["tokens"]
    lines += ["", "## Tokens", ""]
    if t["measured"]:
        lines.append(f"Budget: {_cell(t['budget'])} tokens; rows over it: {_cell(t['over_budget_rows'])}.")
        lines += ["", table(["set", "examples", "total tokens", "trained tokens", "mean", "p50", "p90", "p99", "max"],
                            [[name, s["examples"], s["total"], s["trained"], s["mean"], s["p50"], s["p90"], s["p99"],
                              s["max"]] for name in ("kept", "train", "val") if (s := t[name])])]
    else:
        lines.append(_not_measured("Token counts"))

    d = rep["duplicates"]
    lines += ["", "## Duplicates", "",
              f"Exact duplicates rejected: {d['exact_rejected']:,} ({_cell(d['exact_groups'])} groups); "
              f"near duplicates rejected: {d['near_rejected']:,} ({_cell(d['near_clusters'])} clusters); "
              f"prompt conflicts: {_cell(d['prompt_conflicts'])}."]
    if d["largest_near"]:
        lines += ["", "<details><summary>Largest near-duplicate clusters</summary>", ""]
        for cl in d["largest_near"]:
            lines.append(f"- cluster {cl['id']} ({cl['size']} rows): " + "; ".join(
                f"`{m['ref']}`{' (kept)' if m['kept'] else ''} J={_cell(m['jaccard'])}" for m in cl["members"]))
        lines += ["", "</details>"]
    elif not d["near_measured"]:
        lines += ["", _not_measured("Near-duplicate clusters")]

    s = rep["split"]
    lines += ["", "## Split", ""]
    if s["measured"]:
        lines.append(f"{s['train']:,} train / {s['val']:,} val (val share {_pct(s['val_share'])}); "
                     f"content hashes on both sides: {_cell(s['content_hash_in_both'])}; "
                     f"near-duplicate clusters on both sides: {_cell(s['near_clusters_in_both'])}.")
    else:
        lines.append(_not_measured("Split"))

    lines += ["", "## Training cost estimate", ""]
    if rep["cost"]["measured"]:
        lines.append(_render_value(rep["cost"]["estimate"]))
    else:
        lines.append(_not_measured("Cost estimate"))

    lines += ["", "## Config and versions", "",
              ", ".join(f"{k} {v}" for k, v in sorted(rep["versions"].items())) or "versions: not recorded",
              "", "<details><summary>Resolved config</summary>", "", "```json",
              json.dumps(rep["config"], indent=1, sort_keys=True), "```", "", "</details>"]
    if rep["not_measured"]:
        lines += ["", "Not measured in this run: " + ", ".join(f"`{x}`" for x in rep["not_measured"]) + "."]
    return "\n".join(lines) + "\n"


def _render_value(value: Any) -> str:
    """A summary object of unknown shape: a list of records becomes a table, a mapping a key/value table."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        headers = list(dict.fromkeys(k for v in value for k in v))
        return table(headers, [[v.get(h) for h in headers] for v in value])
    if isinstance(value, dict):
        rows, nested = [], []
        for k, v in value.items():
            if isinstance(v, (dict, list)):
                nested.append(f"\n\n**{k}**\n\n" + _render_value(v))
            else:
                rows.append([k, v])
        return (table(["key", "value"], rows) if rows else "") + "\n".join(nested)
    return f"`{json.dumps(value)}`"
