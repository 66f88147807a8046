"""`curate report` and `curate sample`, registered on the `curate` group by curator.cli.

Only click is imported here; the library (polars, jinja2) loads when a command runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from curator.errors import CurateError

_SUFFIX_FORMAT = {".html": "html", ".htm": "html", ".md": "md", ".json": "json"}


@click.command("report")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--compare", "previous", type=click.Path(path_type=Path), default=None,
              help="An earlier run folder: add what changed since it (counts, gates, distributions, records).")
@click.option("--format", "fmt", type=click.Choice(["html", "md", "json"]), default=None,
              help="Write only this format (default: all three, or the one --output's suffix names).")
@click.option("--output", type=click.Path(path_type=Path, allow_dash=True), default=None,
              help="Write one report to this path ('-' for stdout) instead of OUT/report.<format>.")
def report(out: Path, previous: Path | None, fmt: str | None, output: Path | None) -> None:
    """Rebuild the report of run folder OUT from its files (same figures as `curate run`).

    Without --output, writes OUT/report.html, OUT/report.md and OUT/report.json (or the one
    --format names). With --compare, the report gains a "Changes since previous run" section.

    \b
    Example:
      curate report out/ --compare out-last-week/ --format md --output pr-comment.md
    """
    from curator.report import FORMATS, build_report, render, write_text_atomic

    if output is None:
        formats = (fmt,) if fmt else FORMATS
        rep = build_report(out, compare=previous)
        for f in formats:
            path = out / f"report.{f}"
            write_text_atomic(path, render(rep, f))
            click.echo(str(path))
        return
    fmt = fmt or _SUFFIX_FORMAT.get(output.suffix.lower(), "html")
    text = render(build_report(out, compare=previous), fmt)
    if str(output) == "-":
        click.echo(text, nl=False)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(output, text)
        click.echo(str(output))


@click.command("sample")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--n", "n", type=click.IntRange(min=1), default=200, show_default=True, help="Examples to sample.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the order within each stratum.")
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Folder for review_sample.csv and review_sample.html (default: OUT).")
@click.option("--format", "fmt", type=click.Choice(["both", "csv", "html"]), default="both", show_default=True,
              help="Write the CSV, the HTML sheet, or both; they have the same columns.")
def sample(out: Path, n: int, seed: int, output: Path | None, fmt: str) -> None:
    """Write a stratified sample of OUT's kept examples for human review, as CSV and HTML with empty
    rating columns (strata: language x quality band, plus borderline scores). The conversation comes
    first, then the score and quality flags that put it in its stratum, then the ratings.

    \b
    Example:
      curate sample out/ --n 200 --format csv
    """
    from curator.report.sample import FORMATS, write_sample

    if output is not None and output.exists() and not output.is_dir():  # one line, not click's usage block
        raise CurateError(f"{output}: not a folder (--output is where the review sheet is written)")
    formats = FORMATS if fmt == "both" else (fmt,)
    for path in write_sample(out, n=n, seed=seed, dest=output, formats=formats):
        click.echo(str(path))
