"""report.html: one self-contained file (inline CSS, inline SVG charts, a small inline script that
sorts tables), readable on a laptop and a phone, with a table of contents.

Rendered with Jinja2 with autoescaping on, so text from the data (answers, file names) cannot
inject markup; the page's Content-Security-Policy forbids every network fetch.
"""

from __future__ import annotations

import re
from functools import lru_cache

from curator.report import svg
from curator.report.render_md import collapse


def slug(key: str) -> str:
    """A language key as a fragment id: letters, digits, '-' and '_' only."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", key)


@lru_cache(maxsize=1)
def _template():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("curator.report", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["marked"] = marked
    env.filters["slug"] = slug
    env.globals["collapse"] = collapse
    return env.get_template("report.html.j2")


def marked(turn: dict):
    """A turn's text as HTML: its marks (or the whole text, when highlighted without marks) in <mark>."""
    from markupsafe import Markup, escape

    text = turn["text"]
    marks = turn.get("marks")
    if not marks:
        whole = turn.get("highlight") and turn.get("field") != "role"
        return Markup("<mark>%s</mark>") % text if whole else escape(text)
    out, prev = [], 0
    for start, end in marks:
        out.append(escape(text[prev:start]))
        out.append(Markup("<mark>%s</mark>") % text[start:end])
        prev = end
    out.append(escape(text[prev:]))
    return Markup("").join(out)


def _sections(rep: dict) -> list[tuple[str, str]]:
    items = [("gates", "Gates")]
    if rep.get("advice"):
        items.append(("advice", "What to do next"))
    if rep.get("compare"):
        items.append(("compare", "Changes"))
    items += [("funnel", "Funnel"), ("rejects", "Reject reasons"), ("quality", "Quality"),
              ("languages", "Languages"), ("tokens", "Tokens"), ("duplicates", "Duplicates"),
              ("split", "Split"), ("sources", "Sources"), ("cost", "Cost"), ("config", "Config and versions")]
    return items


def _charts(rep: dict) -> dict[str, str]:
    from markupsafe import Markup

    charts: dict[str, str] = {}
    charts["funnel"] = svg.bars([(s["step"], s["count"]) for s in rep["funnel"]], "Rows alive after each step")
    charts["reasons"] = svg.bars([(r["code"], r["count"]) for r in rep["rejects"]["items"][:25]],
                                 "Rows per reject reason")
    q = rep["quality"]
    charts["quality"] = (
        svg.histogram(q["histogram"]["edges"], {"kept": q["histogram"]["kept"], "rejected": q["histogram"]["rejected"]},
                      "Quality score histogram", marker=q["high_quality_threshold"],
                      marker_label=f"high quality ≥ {q['high_quality_threshold']}")
        if q["measured"] else ""
    )
    nat, code = rep["languages"]["natural"], rep["languages"]["code"]
    charts["natural"] = svg.bars(_collapsed_bars(nat["items"]), "Natural languages") if nat["measured"] else ""
    charts["code"] = svg.bars(_collapsed_bars(code["items"]), "Programming languages") if code["measured"] else ""
    t = rep["tokens"]
    charts["tokens"] = (
        svg.histogram(t["histogram"]["edges"], {"kept": t["histogram"]["kept"], "rejected": t["histogram"]["rejected"]},
                      "Tokens per example", marker=t["budget"], marker_label=f"budget {t['budget']:,}" if t["budget"] else "")
        if t["measured"] else ""
    )
    s = rep["split"]
    charts["split"] = svg.bars([("train", s["train"]), ("val", s["val"])], "Split") if s["measured"] else ""
    return {k: Markup(v) for k, v in charts.items()}


def _collapsed_bars(items: list[dict]) -> list[tuple[str, float]]:
    shown, other = collapse(items)
    return [(x["key"], x["count"]) for x in shown + ([other] if other else [])]


def render_html(rep: dict) -> str:
    from curator.report.render_md import conflicts_text, lowest_text, tokens_policy_text

    # the same sentences as report.md; backticks are Markdown, the HTML shows the code plain
    policy = tokens_policy_text(rep["tokens"]) if rep["tokens"]["measured"] else None
    return _template().render(rep=rep, sections=_sections(rep), charts=_charts(rep),
                              policy_text=policy.replace("`", "") if policy else None,
                              conflicts_text=conflicts_text(rep["duplicates"]),
                              lowest_text=lowest_text(rep["duplicates"]))
