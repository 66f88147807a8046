"""Charts as inline SVG, so report.html needs no network and no script to draw them (issue 7).

Two shapes cover the report: horizontal bars (funnel, distributions) and a stacked histogram with
an optional marker line (quality score against the high-quality threshold, token lengths against the
budget). The SVG scales with its container through `viewBox`; text is escaped.
"""

from __future__ import annotations

from html import escape

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


def histogram(
    edges: list[float],
    series: dict[str, list[int]],
    title: str,
    marker: float | None = None,
    marker_label: str = "",
    width: int = 640,
    height: int = 220,
) -> str:
    """Stacked histogram: `series` maps a name (kept, rejected) to counts per bin [edges[i], edges[i+1])."""
    n = len(edges) - 1
    if n <= 0:
        return ""
    left, right, top_pad, bottom = 48, 12, 22, 34
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    totals = [sum(s[i] for s in series.values()) for i in range(n)]
    peak = max(totals) or 1
    bw = plot_w / n
    lo, hi = edges[0], edges[-1]
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" preserveAspectRatio="xMinYMin meet" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{left + plot_w}" y2="{top_pad + plot_h}" stroke="#888"/>',
        f'<text x="{left - 4}" y="{top_pad + 4}" text-anchor="end" class="val">{_fmt(peak)}</text>',
        f'<text x="{left - 4}" y="{top_pad + plot_h}" text-anchor="end" class="val">0</text>',
    ]
    for i in range(n):
        base = top_pad + plot_h
        for name, counts in series.items():
            c = counts[i]
            if not c:
                continue
            h = plot_h * c / peak
            base -= h
            parts.append(
                f'<rect x="{left + i * bw + 1:.1f}" y="{base:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" '
                f'fill="{PALETTE.get(name, PALETTE["bar"])}"><title>{escape(name)} '
                f"[{_fmt(edges[i])}, {_fmt(edges[i + 1])}): {c:,}</title></rect>"
            )
    for i in range(0, n + 1, max(1, n // 5)):
        x = left + i * bw
        parts.append(f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle" class="val">'
                     f"{_fmt(edges[i])}</text>")
    if marker is not None and lo <= marker <= hi:
        x = left + plot_w * (marker - lo) / (hi - lo)
        parts.append(
            f'<line x1="{x:.1f}" y1="{top_pad - 6}" x2="{x:.1f}" y2="{top_pad + plot_h}" stroke="{PALETTE["marker"]}" '
            f'stroke-dasharray="4 3"/><text x="{x + 4:.1f}" y="{top_pad - 8}" class="val">{escape(marker_label)}</text>'
        )
    lx = left
    for name in series:
        parts.append(f'<rect x="{lx}" y="{height - 12}" width="10" height="10" fill="{PALETTE.get(name, PALETTE["bar"])}"/>'
                     f'<text x="{lx + 14}" y="{height - 3}" class="val">{escape(name)}</text>')
        lx += 90
    parts.append("</svg>")
    return "".join(parts)
