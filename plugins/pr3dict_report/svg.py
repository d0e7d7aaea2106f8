"""Small, dependency-free SVG charts: a line chart, a histogram and horizontal bars.

Every chart is a standalone ``<svg>`` string with its own text, so a report made of them
opens in any browser with no script, no server and no network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563")
FONT = "font-family='system-ui,-apple-system,Segoe UI,sans-serif' font-size='11'"


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    if magnitude >= 0.01:
        return f"{value:.3g}"
    return f"{value:.2g}"


def nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """Round tick values covering [lo, hi] (whole numbers only with ``integer``)."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 2.5, 5, 10):
        if raw <= step * mult:
            step *= mult
            break
    if integer:
        step = max(1, math.ceil(step))
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 0.5:
        ticks.append(round(v, 12))
        v += step
    return ticks


class _Frame:
    """Plot area geometry and the open SVG element list."""

    def __init__(self, width: int, height: int, title: str, left: int = 56, bottom: int = 36):
        self.w, self.h = width, height
        self.left, self.right, self.top, self.bottom = left, 16, 28, bottom
        self.parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' "
                      f"height='{height}' viewBox='0 0 {width} {height}' role='img' "
                      f"aria-label='{escape(title)}' {FONT}>",
                      f"<rect width='{width}' height='{height}' fill='white'/>",
                      f"<text x='{self.left}' y='16' font-size='13' font-weight='600'>"
                      f"{escape(title)}</text>"]

    @property
    def pw(self) -> float:
        return self.w - self.left - self.right

    @property
    def ph(self) -> float:
        return self.h - self.top - self.bottom

    def x(self, frac: float) -> float:
        return self.left + frac * self.pw

    def y(self, frac: float) -> float:
        return self.top + (1 - frac) * self.ph

    def axes(self, x_label: str, y_label: str) -> None:
        self.parts.append(f"<line x1='{self.left}' y1='{self.y(0)}' x2='{self.x(1)}' "
                          f"y2='{self.y(0)}' stroke='#9ca3af'/>")
        self.parts.append(f"<line x1='{self.left}' y1='{self.top}' x2='{self.left}' "
                          f"y2='{self.y(0)}' stroke='#9ca3af'/>")
        self.parts.append(f"<text x='{self.x(0.5)}' y='{self.h - 4}' text-anchor='middle' "
                          f"fill='#4b5563'>{escape(x_label)}</text>")
        self.parts.append(f"<text transform='translate(12 {self.y(0.5)}) rotate(-90)' "
                          f"text-anchor='middle' fill='#4b5563'>{escape(y_label)}</text>")

    def legend(self, names: Sequence[str]) -> None:
        """Series names in the title row, right-aligned, in series colours."""
        x = self.w - self.right
        for i in reversed(range(len(names))):
            self.parts.append(f"<text x='{x:.0f}' y='16' text-anchor='end' "
                              f"fill='{PALETTE[i % len(PALETTE)]}'>&#9632; "
                              f"{escape(names[i])}</text>")
            x -= 6.2 * len(names[i]) + 24

    def empty(self, message: str = "no data") -> str:
        self.parts.append(f"<text x='{self.w / 2}' y='{self.h / 2}' text-anchor='middle' "
                          f"fill='#6b7280'>{escape(message)}</text>")
        return self.done()

    def done(self) -> str:
        self.parts.append("</svg>")
        return "\n".join(self.parts)


def line_chart(series: Sequence[tuple[str, Sequence[tuple[float, float]]]], *, title: str,
               x_label: str, y_label: str, width: int = 720, height: int = 280) -> str:
    """Lines through (x, y) points; each series is (name, points)."""
    f = _Frame(width, height, title)
    points = [p for _, pts in series for p in pts]
    if not points:
        return f.empty()
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x1 = x0 + 1
    yt = nice_ticks(min(0.0, min(ys)), max(0.0, max(ys)))
    y0, y1 = yt[0], yt[-1]
    f.axes(x_label, y_label)
    for t in yt:
        yy = f.y((t - y0) / (y1 - y0))
        f.parts.append(f"<line x1='{f.left}' y1='{yy:.1f}' x2='{f.x(1):.1f}' y2='{yy:.1f}' "
                       f"stroke='{'#6b7280' if t == 0 else '#e5e7eb'}'/>")
        f.parts.append(f"<text x='{f.left - 4}' y='{yy + 4:.1f}' text-anchor='end' "
                       f"fill='#4b5563'>{_fmt(t)}</text>")
    for t in nice_ticks(x0, x1):
        if x0 <= t <= x1:
            xx = f.x((t - x0) / (x1 - x0))
            f.parts.append(f"<text x='{xx:.1f}' y='{f.y(0) + 14:.1f}' text-anchor='middle' "
                           f"fill='#4b5563'>{_fmt(t)}</text>")
    for i, (name, pts) in enumerate(series):
        if not pts:
            continue
        color = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{f.x((x - x0) / (x1 - x0)):.1f},{f.y((y - y0) / (y1 - y0)):.1f}"
                        for x, y in pts)
        dash = " stroke-dasharray='5 3'" if i else ""
        f.parts.append(f"<polyline fill='none' stroke='{color}' stroke-width='1.8'{dash} "
                       f"points='{path}'><title>{escape(name)}</title></polyline>")
    f.legend([name for name, _ in series])
    return f.done()


def histogram(groups: Sequence[tuple[str, Sequence[float]]], *, title: str, x_label: str,
              bins: int = 30, log: bool = True, width: int = 720, height: int = 260,
              markers: bool = True) -> str:
    """Overlaid histograms of positive values (log-spaced bins by default), with each
    group's p50 and p99 marked."""
    f = _Frame(width, height, title)
    values = [v for _, vs in groups for v in vs if v > 0 or not log]
    if not values:
        return f.empty()
    lo, hi = min(values), max(values)
    if log:
        lo, hi = math.log10(lo), math.log10(hi)
    if hi <= lo:
        hi = lo + (0.1 if log else 1)
    edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]

    def frac(v: float) -> float:
        return ((math.log10(v) if log else v) - lo) / (hi - lo)

    counts = []
    for _, vs in groups:
        c = [0] * bins
        for v in vs:
            if log and v <= 0:
                continue
            c[min(int(frac(v) * bins), bins - 1)] += 1
        counts.append(c)
    top = max(max(c) for c in counts) or 1
    f.axes(x_label, "trades" if len(groups) == 1 else "count")
    for t in nice_ticks(0, top, 4, integer=True):
        if t <= top:
            yy = f.y(t / top)
            f.parts.append(f"<line x1='{f.left}' y1='{yy:.1f}' x2='{f.x(1):.1f}' "
                           f"y2='{yy:.1f}' stroke='#e5e7eb'/>")
            f.parts.append(f"<text x='{f.left - 4}' y='{yy + 4:.1f}' text-anchor='end' "
                           f"fill='#4b5563'>{_fmt(t)}</text>")
    for e in edges[:: max(1, bins // 6)]:
        label = 10 ** e if log else e
        f.parts.append(f"<text x='{f.x((e - lo) / (hi - lo)):.1f}' y='{f.y(0) + 14:.1f}' "
                       f"text-anchor='middle' fill='#4b5563'>{_fmt(label)}</text>")
    bw = f.pw / bins
    for g, ((name, vs), c) in enumerate(zip(groups, counts, strict=True)):
        color = PALETTE[g % len(PALETTE)]
        opacity = 0.75 if len(groups) == 1 else 0.45
        for i, n in enumerate(c):
            if n:
                hh = n / top * f.ph
                f.parts.append(f"<rect x='{f.x(i / bins) + 0.5:.1f}' y='{f.y(0) - hh:.1f}' "
                               f"width='{max(bw - 1, 0.5):.1f}' height='{hh:.1f}' "
                               f"fill='{color}' fill-opacity='{opacity}'>"
                               f"<title>{escape(name)}: {n}</title></rect>")
        ordered = sorted(v for v in vs if v > 0 or not log)
        if markers and ordered:
            p50 = ordered[max(0, math.ceil(0.5 * len(ordered)) - 1)]
            p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
            for q, v in (("p50", p50), ("p99", p99)):
                xx = f.x(frac(v))
                right = xx > f.x(0.85)  # label on the left of the marker near the edge
                f.parts.append(f"<line x1='{xx:.1f}' y1='{f.top}' x2='{xx:.1f}' y2='{f.y(0)}' "
                               f"stroke='{color}' stroke-dasharray='3 3'/>")
                f.parts.append(f"<text x='{xx + (-3 if right else 3):.1f}' "
                               f"y='{f.top + 10 + 12 * g}' text-anchor="
                               f"'{'end' if right else 'start'}' fill='{color}'>"
                               f"{q} {_fmt(v)}</text>")
    f.legend([f"{name} (n={len([v for v in vs if v > 0 or not log])})" for name, vs in groups])
    return f.done()


def bars(items: Sequence[tuple[str, float | None, str]], *, title: str, maximum: float = 1.0,
         percent: bool = True, width: int = 720) -> str:
    """Horizontal bars: (label, value or None, note shown after the value)."""
    row = 22
    height = 40 + row * max(len(items), 1)
    label_w = min(220, 14 + 7 * max((len(lbl) for lbl, _, _ in items), default=4))
    f = _Frame(width, height, title, left=label_w, bottom=10)
    if not items:
        return f.empty()
    plot_w = f.pw - 150
    for i, (label, value, note) in enumerate(items):
        y = f.top + i * row
        f.parts.append(f"<text x='{label_w - 6}' y='{y + 14}' text-anchor='end'>"
                       f"{escape(label)}</text>")
        f.parts.append(f"<rect x='{label_w}' y='{y + 3}' width='{plot_w:.1f}' height='{row - 6}'"
                       " fill='#f3f4f6'/>")
        if value is not None:
            w = max(0.0, min(value / maximum, 1.0)) * plot_w if maximum else 0
            f.parts.append(f"<rect x='{label_w}' y='{y + 3}' width='{w:.1f}' "
                           f"height='{row - 6}' fill='{PALETTE[i % len(PALETTE)]}'/>")
        text = "-" if value is None else (f"{value:.1%}" if percent else _fmt(value))
        f.parts.append(f"<text x='{label_w + plot_w + 6:.1f}' y='{y + 14}'>{escape(text)} "
                       f"<tspan fill='#6b7280'>{escape(note)}</tspan></text>")
    return f.done()
