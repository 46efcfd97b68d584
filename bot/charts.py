"""Server-rendered inline SVG charts a supervisor reads at a glance (no JavaScript).

Every chart is a ``<figure>`` holding an ``<svg role="img">`` named by ``aria-label`` and
``<title>``/``<desc>`` (the figures in words), followed by a data table with the same numbers: the
table is what screen readers, text browsers and copy-paste use; the picture is for the eye.
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Sequence

_ids = itertools.count(1)

BAR = "#1f5fbf"
BAR_FLAG = "#b3261e"
LINE_COLORS = ("#1f5fbf", "#b3261e", "#2e7d32", "#6a1b9a", "#8a4b00", "#00696b")
INK = "#1a1a1a"
GRID = "#c4c4c4"


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "–"
    return (f"{v:.1f}" if isinstance(v, float) and not float(v).is_integer() else f"{v:g}") + unit


def _table(caption: str, head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    e = html.escape
    th = "".join(f'<th scope="col">{e(h)}</th>' for h in head)
    body = "".join("<tr>" + f'<th scope="row">{e(r[0])}</th>' + "".join(f"<td>{e(c)}</td>" for c in r[1:]) + "</tr>"
                   for r in rows)
    return f'<table class="chart-data"><caption>{e(caption)}</caption><thead><tr>{th}</tr></thead>' \
           f"<tbody>{body}</tbody></table>"


def bar_chart(title: str, items: Sequence[tuple[str, float | None]], unit: str = "",
              flagged: Sequence[str] = (), value_head: str = "값 / Value") -> str:
    """Horizontal bars, one per ``(label, value)``; labels in ``flagged`` are drawn in red and marked."""
    e = html.escape
    n = next(_ids)
    values = [v or 0 for _, v in items]
    top = max(values, default=0) or 1
    row_h, label_w, bar_w, pad = 24, 190, 330, 70
    height = max(1, len(items)) * row_h + 8
    desc = "; ".join(f"{label} {_fmt(v, unit)}" + (" (!)" if label in flagged else "") for label, v in items) \
        or "자료 없음 / no data"
    parts = [f'<svg role="img" aria-labelledby="c{n}t c{n}d" width="{label_w + bar_w + pad}" height="{height}" '
             f'viewBox="0 0 {label_w + bar_w + pad} {height}" xmlns="http://www.w3.org/2000/svg">',
             f'<title id="c{n}t">{e(title)}</title><desc id="c{n}d">{e(desc)}</desc>']
    for i, (label, v) in enumerate(items):
        y = 4 + i * row_h
        w = 0 if not v else max(1.0, (v / top) * bar_w)
        color = BAR_FLAG if label in flagged else BAR
        short = label if len(label) <= 26 else label[:25] + "…"
        parts.append(f'<text x="{label_w - 6}" y="{y + 16}" text-anchor="end" font-size="13" fill="{INK}">'
                     f"{e(short)}</text>")
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" fill="{color}"/>')
        parts.append(f'<text x="{label_w + w + 5:.1f}" y="{y + 16}" font-size="13" fill="{INK}">'
                     f"{e(_fmt(v, unit))}{' !' if label in flagged else ''}</text>")
    parts.append("</svg>")
    return f'<figure class="chart">{"".join(parts)}<figcaption>{e(title)}</figcaption></figure>'


def line_chart(title: str, x_labels: Sequence[str], series: dict[str, Sequence[float | None]],
               unit: str = "") -> str:
    """One line per series over ``x_labels`` (days or weeks), with a legend; missing values break the line."""
    e = html.escape
    n = next(_ids)
    width, height, left, right, top_pad, bottom = 640, 220, 48, 16, 12, 40
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    flat = [v for vs in series.values() for v in vs if v is not None]
    top = max(flat, default=0) or 1
    count = max(1, len(x_labels))

    def xy(i: int, v: float) -> tuple[float, float]:
        x = left + (plot_w * (i / (count - 1)) if count > 1 else plot_w / 2)
        return x, top_pad + plot_h - (v / top) * plot_h

    desc = "; ".join(f"{name}: " + ", ".join(f"{x} {_fmt(v, unit)}" for x, v in zip(x_labels, vs, strict=False))
                     for name, vs in series.items()) or "자료 없음 / no data"
    parts = [f'<svg role="img" aria-labelledby="c{n}t c{n}d" width="{width}" height="{height + 22 * len(series)}" '
             f'viewBox="0 0 {width} {height + 22 * len(series)}" xmlns="http://www.w3.org/2000/svg">',
             f'<title id="c{n}t">{e(title)}</title><desc id="c{n}d">{e(desc)}</desc>']
    for frac in (0, 0.5, 1):
        y = top_pad + plot_h - frac * plot_h
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="{INK}">'
                     f"{e(_fmt(round(top * frac, 1)))}</text>")
    step = max(1, len(x_labels) // 8)
    for i, x_label in enumerate(x_labels):
        if i % step == 0 or i == len(x_labels) - 1:
            x, _ = xy(i, 0)
            parts.append(f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle" font-size="11" '
                         f'fill="{INK}">{e(x_label[5:] if len(x_label) == 10 else x_label)}</text>')
    for k, (name, vs) in enumerate(series.items()):
        color = LINE_COLORS[k % len(LINE_COLORS)]
        segments: list[list[str]] = [[]]
        for i, v in enumerate(vs):
            if v is None:
                segments.append([])
                continue
            x, y = xy(i, v)
            segments[-1].append(f"{x:.1f},{y:.1f}")
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>')
        for seg in segments:
            if len(seg) > 1:
                parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(seg)}"/>')
        ly = height + 22 * k + 6
        parts.append(f'<rect x="{left}" y="{ly}" width="14" height="4" fill="{color}"/>'
                     f'<text x="{left + 20}" y="{ly + 6}" font-size="12" fill="{INK}">{e(name)}</text>')
    parts.append("</svg>")
    return f'<figure class="chart">{"".join(parts)}<figcaption>{e(title)}</figcaption></figure>'


def data_table(caption: str, head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The table under a chart (first column = row header)."""
    return _table(caption, head, rows)
