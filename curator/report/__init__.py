"""Reports of a finished run: report.json (versioned), report.md and report.html.

Everything is built from the files the pipeline wrote into OUT (see `curator.report.load`), so
`curate report OUT` gives the same figures as `curate run`. Heavy imports (polars, jinja2) happen
inside the functions: `curator.report.commands` is imported by the CLI at start-up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FORMATS = ("json", "md", "html")


def dumps_json(report: dict) -> str:
    """report.json's text: sorted keys, so two runs' reports diff line by line."""
    return json.dumps(report, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def render(report: dict, fmt: str) -> str:
    """The report as text in one of FORMATS."""
    if fmt == "json":
        return dumps_json(report)
    if fmt == "md":
        from curator.report.render_md import render_markdown

        return render_markdown(report)
    if fmt == "html":
        from curator.report.render_html import render_html

        return render_html(report)
    raise ValueError(f"unknown report format {fmt!r}; expected one of {', '.join(FORMATS)}")


def build_report(out_dir: str | Path, compare: str | Path | None = None) -> dict[str, Any]:
    """The report dict of run folder `out_dir`; with `compare`, what changed since that earlier run."""
    from curator.report.build import report_from_run
    from curator.report.load import load_run

    run = load_run(out_dir)
    report = report_from_run(run)
    if compare is not None:
        from curator.report.compare import compare_runs

        report["compare"] = compare_runs(run, report, Path(compare))
    return report


def write_reports(out_dir: Path, compare: str | Path | None = None, formats: tuple[str, ...] = FORMATS) -> dict:
    """Build the report of `out_dir` and write report.json, report.md and report.html into it.

    Called by the pipeline after it wrote train/val/rejects/annotations/manifest, and by `curate report`.
    Each file is written to a temporary name and renamed, so a reader never sees half a report.
    """
    out_dir = Path(out_dir)
    report = build_report(out_dir, compare=compare)
    for fmt in formats:
        write_text_atomic(out_dir / f"report.{fmt}", render(report, fmt))
    return report


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
