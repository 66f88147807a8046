"""report.md: compact Markdown for a pull-request comment, gates first.

Long parts (samples, clusters, config) sit in <details> blocks, which GitHub and GitLab fold.
"""

from __future__ import annotations

import html
import json
import re
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


# what makes a link or an image (`](`), code spans and table cells; emphasis and a lone "[" are harmless
_MD_SPECIAL = re.compile(r"([\\`|]|\](?=\())")


def _data(value: Any) -> str:
    """Text from the data, inert in Markdown: HTML tags and entities escaped (a raw `<img onerror>` or
    `</details>` would run or break the pull-request comment), Markdown links, images and code spans
    backslashed, one line."""
    text = html.escape(str(value), quote=False).replace("\r", " ").replace("\n", " ⏎ ")
    return _MD_SPECIAL.sub(r"\\\1", text)


def _marked(turn: dict, limit: int = 200) -> str:
    """A turn's text, one line of at most about `limit` characters around its marks, each mark in <b>
    (the text itself escaped by `_data`)."""
    from curator.report.diff import fit

    text, marks = fit(turn["text"], [tuple(m) for m in turn.get("marks") or []], limit)
    out, prev = [], 0
    for start, end in marks:
        out += [_data(text[prev:start]), f"<b>{_data(text[start:end])}</b>"]
        prev = end
    return "".join(out) + _data(text[prev:])


def _first_difference(a: list[dict], b: list[dict]) -> tuple[dict | None, dict | None]:
    """Turn i of both conversations (aligned by index), for the first i where either side has marks."""
    for i in range(max(len(a), len(b))):
        ta, tb = (a[i] if i < len(a) else None), (b[i] if i < len(b) else None)
        if (ta and ta.get("marks")) or (tb and tb.get("marks")):
            return ta, tb
    return None, None


def _pair_line(p: dict) -> str:
    """One line per removed near duplicate: its ref and Jaccard, its kept copy, and the first turn where they
    differ, on both sides."""
    line = f"  - removed {_code(p['removed'])} J={_cell(p['jaccard'])}, kept {_code(p['kept'] or '?')}"
    mine, theirs = _first_difference(p["removed_turns"], p["kept_turns"])
    if mine is not None:
        line += f": **{_data(mine['role'] or 'line')}** {_marked(mine, 160)}"
    elif theirs is not None:  # the kept copy goes on where the removed one ends
        line += f": *(no {_data(theirs['role'] or 'such')} turn here)*"
    if theirs is not None:
        line += f" ⟷ kept: {_marked(theirs, 160)}"
    return line


def _code(text: Any) -> str:
    """`text` as a Markdown code span that no backtick inside it can close (a file name is the user's
    text: `` `a`<img onerror=...>`.jsonl `` would otherwise end the span and put HTML in the report)."""
    text = str(text).replace("\r", " ").replace("\n", " ").replace("|", "\\|")  # | would end a table cell
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _exact(value: Any) -> str:
    """A gate figure with all its (up to 6) decimals: 0.953668 is not shown as its threshold 0.9537."""
    if isinstance(value, float) and not value.is_integer() and abs(value) < 1000:
        return f"{value:,.6f}".rstrip("0").rstrip(".")
    return _cell(value)


OTHER_BELOW = 0.005  # a language under 0.5% of its table goes into the "other" row ...
OTHER_BEYOND = 15  # ... and so does any beyond the first fifteen (the diversity gate counts languages over 2%)


def collapse(items: list[dict], below: float = OTHER_BELOW, beyond: int = OTHER_BEYOND) -> tuple[list[dict], dict | None]:
    """(rows shown, the "other (n)" row or None): the items beyond the first `beyond` or under `below` share
    summed into one row that lists them (`members`). A single such item stays a row of its own."""
    keep = [i < beyond and x["share"] >= below for i, x in enumerate(items)]
    shown = [x for x, k in zip(items, keep) if k]
    rest = [x for x, k in zip(items, keep) if not k]
    if len(rest) < 2:
        return list(items), None
    other = {"key": f"other ({len(rest)})", "count": sum(x["count"] for x in rest),
             "share": round(sum(x["share"] for x in rest), 4), "members": rest}
    return shown, other


def _shares_text(items: list[dict]) -> str:
    shown, other = collapse(items)
    return ", ".join(f"{x['key']} {x['count']:,} ({_pct(x['share'])})" for x in shown + ([other] if other else []))


def tokens_policy_text(t: dict) -> str | None:
    """What the over-budget policy did, in words (report.md and report.html say the same)."""
    policy, over = t.get("policy"), t.get("over_budget")
    if policy is None or over is None:
        return None
    ctx = f"the {t['budget']:,}-token context" if t.get("budget") is not None else "the context"
    rows = "1 row was" if over == 1 else f"{over:,} rows were"
    if over == 0:
        return f"Policy {policy}: no row was over {ctx}, so nothing was rejected or truncated for length."
    if policy == "truncate":
        cut, turns = t.get("truncated_examples") or 0, t.get("truncated_turns") or 0
        text = (f"Policy truncate: {rows} over {ctx} before the policy; {cut:,} {'was' if cut == 1 else 'were'} "
                f"truncated to fit (earliest exchanges dropped, {turns:,} messages in all)")
        if t.get("kept_truncated") is not None:
            k = t["kept_truncated"]
            text += f", of which {k:,} {'is' if k == 1 else 'are'} in the kept set"
        if over - cut:
            left = over - cut
            text += f"; {left:,} could not fit and {'was' if left == 1 else 'were'} rejected (`tokens.over_budget`)"
        return text + "."
    if policy == "reject":
        return f"Policy reject: {rows} over {ctx} and rejected (`tokens.over_budget`); none was truncated."
    if policy == "report":
        return f"Policy report: {rows} over {ctx}; the tokens stage neither rejected nor truncated them."
    return f"Policy {policy}: {rows} over {ctx} before the policy."


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
            [["✅" if x["passed"] else "❌", f"`{x['name']}`", _exact(x["value"]), _exact(x["threshold"]),
              _exact(x["margin"]), x["message"]]
             for x in g["items"]],
        ))
    if g["not_measured"]:
        lines.append("")
        lines += [f"- {m['family']} gate, {m['what']}: not measured" for m in g["not_measured"]]
    return lines


def _compare(c: dict) -> list[str]:
    lines = ["## Changes since previous run", "", f"Previous: {_code(c['previous'])}", ""]
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
            lines += [f"- {_code(x['ref'])} `{x['content_hash']}`" for x in rec[key]]
            lines += ["", "</details>", ""]
    for title, key in (("config key", "config_changes"), ("package", "version_changes")):
        if c[key]:
            lines += [table([title, "previous", "current"],
                            [[f"`{x['key']}`", json.dumps(x["previous"]), json.dumps(x["current"])]
                             for x in c[key]]), ""]
    return lines


def disabled_text(stage: str) -> str:
    """What a disabled stage's figures say instead of a count (report.md; report.html drops the backticks)."""
    return f"disabled (`{stage}.enabled: false`)"


def duplicates_text(d: dict) -> str:
    """The Duplicates section's first sentence in report.md (the HTML template words it alike, with markup)."""
    if d.get("exact_disabled"):
        exact = f"Exact duplicates: {disabled_text('dedup_exact')}"
    else:
        exact = f"Exact duplicates rejected: {d['exact_rejected']:,} ({_cell(d['exact_groups'])} groups)"
    if d.get("near_disabled"):
        return f"{exact}; near duplicates and prompt conflicts: {disabled_text('dedup_minhash')}."
    return (f"{exact}; near duplicates rejected: {d['near_rejected']:,} ({_cell(d['near_clusters'])} clusters"
            f"{lowest_text(d)}); prompt conflicts (same prompt with different answers): {conflicts_text(d)}.")


def lowest_text(d: dict) -> str:
    """The lowest Jaccard of a removed copy to its kept copy, when a copy was removed."""
    low = d.get("near_min_jaccard")
    return "" if low is None else f"; lowest Jaccard of a removed copy to its kept copy: {_cell(low)}"


def conflicts_text(d: dict) -> str:
    if d["prompt_conflicts"] is None:
        return "–"
    records = f"{d['prompt_conflicts']:,} record" + ("" if d["prompt_conflicts"] == 1 else "s")
    groups = d.get("prompt_conflict_groups")
    if groups is None:
        return records
    return f"{records} in {groups:,} group" + ("" if groups == 1 else "s")


def _gate_state(x: dict, side: str) -> str:
    passed = x[f"{side}_passed"]
    state = "–" if passed is None else ("pass" if passed else "FAIL")
    return f"{state} ({_cell(x[f'{side}_value'])})"


def _advice_lines(advice: list[dict]) -> list[str]:
    """advice_lines with the subject as code (the same words as the CLI summary)."""
    from curator.report.advice import advice_lines

    return [line.replace(a["subject"], f"`{a['subject']}`", 1) for a, line in zip(advice, advice_lines(advice))]


def render_markdown(rep: dict) -> str:
    c = rep["counts"]
    lines = ["# Dataset report", ""]
    lines += _gates(rep) + [""]
    lines.append(f"**{c['read']:,} read → {c['kept']:,} kept** ({_pct(c['kept'] / c['read'] if c['read'] else 0)}), "
                 f"{c['rejected']:,} rejected; split {c['train']:,} train / {c['val']:,} val.")
    if not c["consistent_with_manifest"]:
        lines.append("\n**Warning:** manifest counts disagree with annotations.parquet.")
    if rep.get("advice"):
        lines += ["", "## What to do next", ""] + [f"- {line}" for line in _advice_lines(rep["advice"])]
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
                where = f" at {_code(s['highlight'])}" if s["highlight"] else ""
                lines.append(f"- `{r['code']}` {_code(s['ref'])}{where}: {_data(s['detail'])}")
                for t in s["turns"]:
                    if t["highlight"]:
                        lines.append(f"  > **{_data(t['role'] or 'line')}**: {_marked(t)}")
                if s.get("duplicate_of"):
                    dup = s["duplicate_of"]
                    j = "" if dup["jaccard"] is None else f" (J={_cell(dup['jaccard'])})"
                    lines.append(f"  > duplicate of {_code(dup['ref'])}{j}")
                    _, theirs = _first_difference(s["turns"], dup["turns"])
                    if theirs is not None:
                        lines.append(f"  > **{_data(theirs['role'] or 'line')}** there: {_marked(theirs)}")
        lines += ["", "</details>"]
    else:
        lines.append("No row was rejected.")

    w = rep.get("warnings") or {"items": []}
    if w["items"]:
        lines += ["", f"Rows with a warning (a repair made or a note taken, without a reject): {w['rows_with_warnings']:,}", "",
                  table(["warning", "rows", "kept"], [[f"`{x['code']}`", x["count"], x["kept"]] for x in w["items"]])]

    q = rep["quality"]
    lines += ["", "## Quality", ""]
    if q["measured"]:
        rate = q["kept_high_quality_rate"]
        lines.append(f"High-quality rate of the kept set: **{_pct(rate) if rate is not None else 'n/a (no example kept)'}** "
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
        lines.append("Natural: " + _shares_text(nat["items"]))
    else:
        lines.append(_not_measured("Natural languages"))
    lines.append("")
    if code["measured"]:
        lines.append(f"Programming ({code['examples_with_code']:,} examples with a programming-language block, "
                     f"{_pct(code['share_with_code'])} of kept; shares are of these, as the diversity gate counts): "
                     + (_shares_text(code["items"]) or "none"))
        if code.get("other_items"):
            lines += ["", "Also seen, not counted by the gate (data and markup; share of kept examples): "
                      + _shares_text(code["other_items"])]
    else:
        lines.append(_not_measured("Programming languages"))

    t = rep["tokens"]
    lines += ["", "## Tokens", ""]
    if t["measured"]:
        lines.append(f"Budget: {_cell(t['budget'])} tokens; rows over it: {_cell(t['over_budget_rows'])}.")
        if (policy := tokens_policy_text(t)) is not None:
            lines += ["", policy]
        lines += ["", table(["set", "examples", "total tokens", "trained tokens", "mean", "p50", "p90", "p99", "max"],
                            [[name, s["examples"], s["total"], s["trained"], s["mean"], s["p50"], s["p90"], s["p99"],
                              s["max"]] for name in ("kept", "train", "val") if (s := t[name])])]
    else:
        lines.append(_not_measured("Token counts"))

    d = rep["duplicates"]
    lines += ["", "## Duplicates", "", duplicates_text(d)]
    if d["largest_near"]:
        lines += ["", "<details><summary>Largest near-duplicate clusters</summary>", ""]
        for cl in d["largest_near"]:
            low = "" if cl.get("min_jaccard") is None else f", lowest J {_cell(cl['min_jaccard'])}"
            lines.append(f"- cluster {cl['id']} ({cl['size']} rows{low}): " + "; ".join(
                f"{_code(m['ref'])}{' (kept)' if m['kept'] else ''} J={_cell(m['jaccard'])}" for m in cl["members"]))
            lines += [_pair_line(p) for p in cl.get("pairs") or []]
        lines += ["", "</details>"]
    elif d.get("near_disabled"):
        lines += ["", f"_Near-duplicate clusters: {disabled_text('dedup_minhash')}._"]
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

    lines += ["", "## Sources", ""]
    if rep["sources"]:
        lines.append(table(["file", "read", "kept", "rejected", "train", "val", "kept share"],
                           [[f"{_code(x['source_file'])}", x["read"], x["kept"], x["rejected"], x["train"], x["val"],
                             _pct(x["kept_share"])] for x in rep["sources"]]))
    else:
        lines.append("_No source files._")

    lines += ["", "## Training cost estimate", ""]
    if rep["cost"]["measured"]:
        lines.append(_render_value(rep["cost"]["estimate"]))
    elif rep["cost"].get("note"):
        lines.append(f"_Cost estimate: not shown: {rep['cost']['note']}._")
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
