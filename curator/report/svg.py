"""Charts as inline SVG, so report.html needs no network and no script to draw them.

Two shapes cover the report: horizontal bars (funnel, distributions) and a stacked histogram with
an optional marker line (quality score against the high-quality threshold, token lengths against the
budget). The SVG scales with its container through `viewBox`; text is escaped.
"""

from __future__ import annotations

import math
from html import escape

_TEXT_W = 6.5  # width of a character of the 11 px chart font, a safe overestimate
PALETTE = {"kept": "#2f7d4f", "rejected": "#c4553b", "bar": "#3b6fb6", "marker": "#222"}


def _fmt(n: float) -> str:
    if isinstance(n, float) and not n.is_integer():
        return f"{n:,.2f}"
    return f"{int(n):,}"


def bars(items: list[tuple[str, float]], title: str, unit: str = "", width: int = 640) -> str:
    """Horizontal bar chart, one bar per (label, value), in the given order."""
    if not items:
        return ""
    row, label_w, pad = 22, 170, 6
    height = row * len(items) + 2 * pad
    top = max(v for _, v in items) or 1
    plot_w = width - label_w - 90
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" preserveAspectRatio="xMinYMin meet" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
    ]
    for i, (label, value) in enumerate(items):
        y = pad + i * row
        w = max(1.0, plot_w * value / top) if value else 0
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" class="lbl">{escape(_clip(label))}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{PALETTE["bar"]}">'
            f"<title>{escape(label)}: {_fmt(value)}{escape(unit)}</title></rect>"
            f'<text x="{label_w + w + 4:.1f}" y="{y + 15}" class="val">{_fmt(value)}{escape(unit)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _clip(label: str, n: int = 26) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


LOG_WHEN_PEAK_HOLDS = 0.5  # a log scale when one bin holds at least half the rows ...
LOG_WHEN_SMALLEST_UNDER = 0.02  # ... and a non-empty bin would be drawn under 2% of its height (about 3 px)


def use_log_scale(totals: list[int]) -> bool:
    """True when linear bars would hide bins: most rows in one bin, some other bin all but invisible."""
    peak, total = max(totals, default=0), sum(totals)
    others = [t for t in totals if t]
    return bool(total) and peak >= LOG_WHEN_PEAK_HOLDS * total and min(others) < LOG_WHEN_SMALLEST_UNDER * peak


def _heights(count: int, total: int, peak: int, plot_h: float, log: bool) -> float:
    """Height of a stacked segment of `count` rows in a bar of `total` rows, the tallest bar `peak` rows."""
    if not log:
        return plot_h * count / peak
    # the bar's log height, shared between its series in proportion to their rows
    return plot_h * math.log10(1 + total) / math.log10(1 + peak) * count / total


def _y_ticks(peak: int, plot_h: float, top_pad: float, log: bool) -> list[tuple[float, str]]:
    if not log:
        return [(top_pad + 4, _fmt(peak)), (top_pad + plot_h, "0")]
    ticks = []  # no "0": on a log axis it would sit on top of the "1"
    power = 1
    while power <= peak:
        ticks.append((top_pad + plot_h - plot_h * math.log10(1 + power) / math.log10(1 + peak) + 4, _fmt(power)))
        power *= 10
    return ticks


def histogram(
    edges: list[float],
    series: dict[str, list[int]],
    title: str,
    marker: float | None = None,
    marker_label: str = "",
    width: int = 640,
    height: int = 220,
) -> str:
    """Stacked histogram: `series` maps a name (kept, rejected) to counts per bin [edges[i], edges[i+1]).

    The count axis is logarithmic when one bin holds most rows (`use_log_scale`); the chart says so.
    """
    n = len(edges) - 1
    if n <= 0:
        return ""
    left, right, top_pad, bottom = 48, 12, 22, 34
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    totals = [sum(s[i] for s in series.values()) for i in range(n)]
    peak = max(totals) or 1
    log = use_log_scale(totals)
    bw = plot_w / n
    lo, hi = edges[0], edges[-1]
    full_title = title + (" (log scale)" if log else "")
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" preserveAspectRatio="xMinYMin meet" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(full_title)}</title>',
        f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{left + plot_w}" y2="{top_pad + plot_h}" stroke="#888"/>',
    ]
    parts += [f'<text x="{left - 4}" y="{y:.1f}" text-anchor="end" class="val">{label}</text>'
              for y, label in _y_ticks(peak, plot_h, top_pad, log)]
    if log:
        parts.append(f'<text x="{left}" y="{top_pad - 8}" class="val">rows, log scale</text>')
    for i in range(n):
        base = top_pad + plot_h
        for name, counts in series.items():
            c = counts[i]
            if not c:
                continue
            h = _heights(c, totals[i], peak, plot_h, log)
            base -= h
            parts.append(
                f'<rect x="{left + i * bw + 1:.1f}" y="{base:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" '
                f'fill="{PALETTE.get(name, PALETTE["bar"])}"><title>{escape(name)} '
                f"[{_fmt(edges[i])}, {_fmt(edges[i + 1])}): {c:,}</title></rect>"
            )
    for i in range(0, n + 1, max(1, n // 5)):
        # the last label ends at the axis' end, so a wide number is not cut by the chart's edge
        anchor = "end" if i == n else "middle"
        parts.append(f'<text x="{left + i * bw:.1f}" y="{height - bottom + 16}" text-anchor="{anchor}" class="val">'
                     f"{_fmt(edges[i])}</text>")
    if marker is not None and lo <= marker <= hi:
        x = left + plot_w * (marker - lo) / (hi - lo)
        # a label that would run past the right edge is written leftwards of the line
        right_side = x + 4 + _TEXT_W * len(marker_label) <= width
        tx, anchor = (x + 4, "start") if right_side else (x - 4, "end")
        parts.append(
            f'<line x1="{x:.1f}" y1="{top_pad - 6}" x2="{x:.1f}" y2="{top_pad + plot_h}" stroke="{PALETTE["marker"]}" '
            f'stroke-dasharray="4 3"/><text x="{tx:.1f}" y="{top_pad - 8}" text-anchor="{anchor}" class="val">'
            f'{escape(marker_label)}</text>'
        )
    lx = left
    for name in series:
        parts.append(f'<rect x="{lx}" y="{height - 12}" width="10" height="10" fill="{PALETTE.get(name, PALETTE["bar"])}"/>'
                     f'<text x="{lx + 14}" y="{height - 3}" class="val">{escape(name)}</text>')
        lx += 90
    parts.append("</svg>")
    return "".join(parts)
