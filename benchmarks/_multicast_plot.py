"""
A small SVG line plot for ``benchmarks/multicast.py --plot``: completion
time against the number of members, on log-log axes, one panel per message
size.  Written by hand so that the benchmark needs nothing the project
does not install (matplotlib is no dependency of the project).
"""

from __future__ import annotations

import math
from xml.sax.saxutils import escape

from attrs import define, field

WIDTH, HEIGHT = 420, 320
LEFT, RIGHT, TOP, BOTTOM = 60, 20, 30, 70
COLOURS = ["#1b6ca8", "#d1495b", "#2a9d8f", "#8d6a9f", "#444444"]


@define
class Series:
    """
    One line: its name and its (n, seconds) points.
    """

    name: str
    points: list[tuple[float, float]]
    dashed: bool = field(default=False, kw_only=True)


def _decades(low: float, high: float) -> list[float]:
    first = math.floor(math.log10(low))
    last = math.ceil(math.log10(high))
    return [10.0**k for k in range(first, last + 1)]


def _label(value: float) -> str:
    if value >= 1:
        return f"{value:,.0f}"
    return f"{value:g}"


def _panel(title: str, series: list[Series], x0: float) -> list[str]:
    points = [p for s in series for p in s.points if p[0] > 0 and p[1] > 0]
    if not points:
        return []
    xs = _decades(min(p[0] for p in points), max(p[0] for p in points))
    ys = _decades(min(p[1] for p in points), max(p[1] for p in points))
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        span = math.log10(xs[-1]) - math.log10(xs[0]) or 1.0
        return x0 + LEFT + inner_w * (math.log10(x) - math.log10(xs[0])) / span

    def py(y: float) -> float:
        span = math.log10(ys[-1]) - math.log10(ys[0]) or 1.0
        return TOP + inner_h * (1 - (math.log10(y) - math.log10(ys[0])) / span)

    out = [
        f'<text x="{x0 + WIDTH / 2:.1f}" y="18" text-anchor="middle" '
        f'font-weight="bold">{escape(title)}</text>',
        f'<rect x="{x0 + LEFT}" y="{TOP}" width="{inner_w}" height="{inner_h}" '
        'fill="none" stroke="#888"/>',
    ]
    for x in xs:
        out.append(
            f'<line x1="{px(x):.1f}" y1="{TOP}" x2="{px(x):.1f}" y2="{TOP + inner_h}" '
            'stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{px(x):.1f}" y="{TOP + inner_h + 16}" text-anchor="middle">'
            f"{_label(x)}</text>"
        )
    for y in ys:
        out.append(
            f'<line x1="{x0 + LEFT}" y1="{py(y):.1f}" x2="{x0 + LEFT + inner_w}" '
            f'y2="{py(y):.1f}" stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{x0 + LEFT - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{_label(y)}</text>'
        )
    out.append(
        f'<text x="{x0 + LEFT + inner_w / 2:.1f}" y="{TOP + inner_h + 34}" '
        'text-anchor="middle">members (n)</text>'
    )
    out.append(
        f'<text x="{x0 + 14}" y="{TOP + inner_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 {x0 + 14} {TOP + inner_h / 2:.1f})">completion (s)</text>'
    )
    for k, line in enumerate(series):
        colour = COLOURS[k % len(COLOURS)]
        dash = ' stroke-dasharray="6 4"' if line.dashed else ""
        shown = [p for p in line.points if p[0] > 0 and p[1] > 0]
        if shown:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in shown)
            out.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
            )
            out += [
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>'
                for x, y in shown
            ]
        legend_x = x0 + LEFT + (k % 3) * 120
        legend_y = TOP + inner_h + 52 + (k // 3) * 14
        out.append(
            f'<line x1="{legend_x}" y1="{legend_y - 4}" x2="{legend_x + 20}" '
            f'y2="{legend_y - 4}" stroke="{colour}" stroke-width="2"{dash}/>'
        )
        out.append(f'<text x="{legend_x + 24}" y="{legend_y}">{escape(line.name)}</text>')
    return out


def svg_panels(panels: list[tuple[str, list[Series]]]) -> str:
    """
    An SVG document with one log-log panel per ``(title, series)``.
    """
    body: list[str] = []
    for k, (title, series) in enumerate(panels):
        body += _panel(title, series, k * WIDTH)
    width = max(1, len(panels)) * WIDTH
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT}" '
        f'viewBox="0 0 {width} {HEIGHT}" font-family="sans-serif" font-size="11">\n'
        f'<rect width="{width}" height="{HEIGHT}" fill="white"/>\n'
        + "\n".join(body)
        + "\n</svg>\n"
    )
