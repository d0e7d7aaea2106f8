"""Small, dependency-free SVG charts: a line chart, a histogram and horizontal bars.

Every chart is a standalone ``<svg>`` string with its own text, so a report made of them
opens in any browser with no script, no server and no network. Charts are drawn at the
page's content width and scale with it; each has a title, a legend naming every colour,
and labelled axes (classes ``axis-label x`` / ``axis-label y`` and ``legend``). Labels are
laid out in rows above the plot, never on top of the data or of each other.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from html import escape

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563")
FONT = "font-family='system-ui,-apple-system,Segoe UI,sans-serif' font-size='11'"
WIDTH = 1040  # the report's content width: charts fill it
CHAR_W = 6.4  # average width of an 11 px character, for laying labels out
MUTED = "#4b5563"


def fmt_num(value: float) -> str:
    """One number format for every chart and table: three significant digits below 100,
    whole numbers (with thousands separators) above."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 0.001:
        return f"{value:.3g}"
    digits = -math.floor(math.log10(magnitude)) + 2
    return f"{value:.{digits}f}".rstrip("0")


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


def log_ticks(lo: float, hi: float) -> list[float]:
    """Round ticks for a log axis: 1, 2, 5 times a power of ten from the one at or below
    ``lo`` to the one at or above ``hi``; only powers of ten when that is too many."""
    lo, hi = max(lo, 1e-12), max(hi, lo * 1.0001, 1e-12)
    candidates = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)) - 1,
                                               math.ceil(math.log10(hi)) + 2)
                  for m in (1, 2, 5)]
    candidates = [round(c, 12) for c in candidates]
    start = max(c for c in candidates if c <= lo * 1.0000001)
    end = min(c for c in candidates if c >= hi / 1.0000001)
    ticks = [c for c in candidates if start <= c <= end]
    if len(ticks) > 9:
        start = 10.0 ** math.floor(math.log10(start))
        end = 10.0 ** math.ceil(math.log10(end))
        ticks = [round(10.0 ** e, 12) for e in range(round(math.log10(start)),
                                                      round(math.log10(end)) + 1)]
    return ticks


_TIME_STEPS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30,
               60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def time_ticks(t0: float, t1: float, count: int = 6) -> tuple[list[float], Callable[[float], str]]:
    """Round clock-time ticks between unix times t0 and t1, and their UTC label format."""
    span = max(t1 - t0, 1e-3)
    step = next((s for s in _TIME_STEPS if span / s <= count), _TIME_STEPS[-1])
    ticks = [k * step for k in range(math.ceil(t0 / step), math.floor(t1 / step) + 1)]
    decimals = 0 if step >= 1 else (1 if step >= 0.1 else (2 if step >= 0.01 else 3))

    def label(t: float) -> str:
        whole = time.strftime("%H:%M:%S", time.gmtime(t))
        return whole + (f"{t % 1:.{decimals}f}"[1:] if decimals else "")

    return ticks, label


class _Frame:
    """Chart geometry: a title row, a legend row, rows of marker labels, then the plot."""

    def __init__(self, title: str, *, width: int = WIDTH, plot_height: int = 220,
                 left: int = 64, bottom: int = 42, label_rows: int = 0):
        self.w, self.left, self.right, self.bottom = width, left, 20, bottom
        self.top = 48 + 14 * label_rows + (8 if label_rows else 0)
        self.h = self.top + plot_height + bottom
        self.parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{self.w}' "
                      f"height='{self.h}' viewBox='0 0 {self.w} {self.h}' role='img' "
                      f"aria-label='{escape(title)}' {FONT}>",
                      f"<rect width='{self.w}' height='{self.h}' fill='white'/>",
                      f"<text x='{self.left}' y='18' font-size='13' font-weight='600'>"
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
        self.axis_labels(x_label, y_label)

    def axis_labels(self, x_label: str, y_label: str) -> None:
        self.parts.append(f"<text class='axis-label x' x='{self.x(0.5):.1f}' y='{self.h - 6}' "
                          f"text-anchor='middle' fill='{MUTED}'>{escape(x_label)}</text>")
        self.parts.append(f"<text class='axis-label y' transform='translate(14 "
                          f"{self.y(0.5):.1f}) rotate(-90)' text-anchor='middle' "
                          f"fill='{MUTED}'>{escape(y_label)}</text>")

    def y_grid(self, ticks: Sequence[float], lo: float, hi: float,
               fmt: Callable[[float], str] = fmt_num) -> None:
        for t in ticks:
            yy = self.y((t - lo) / (hi - lo))
            stroke = "#6b7280" if t == 0 and lo < 0 else "#e5e7eb"
            self.parts.append(f"<line x1='{self.left}' y1='{yy:.1f}' x2='{self.x(1):.1f}' "
                              f"y2='{yy:.1f}' stroke='{stroke}'/>")
            self.parts.append(f"<text x='{self.left - 6}' y='{yy + 4:.1f}' text-anchor='end' "
                              f"fill='{MUTED}'>{escape(fmt(t))}</text>")

    def x_tick(self, frac: float, label: str) -> None:
        xx = self.x(frac)
        self.parts.append(f"<line x1='{xx:.1f}' y1='{self.y(0):.1f}' x2='{xx:.1f}' "
                          f"y2='{self.y(0) + 4:.1f}' stroke='#9ca3af'/>")
        self.parts.append(f"<text x='{xx:.1f}' y='{self.y(0) + 16:.1f}' text-anchor='middle' "
                          f"fill='{MUTED}'>{escape(label)}</text>")

    def legend(self, items: Sequence[tuple[str, str, str]]) -> None:
        """(name, colour, swatch) in the row under the title; swatch is ``box`` (as a
        histogram's translucent bars), ``solid``, ``line`` or ``dash``."""
        x = float(self.left)
        self.parts.append("<g class='legend'>")
        for name, color, swatch in items:
            if swatch in ("box", "solid"):
                opacity = " fill-opacity='0.75'" if swatch == "box" else ""
                self.parts.append(f"<rect x='{x:.1f}' y='28' width='10' height='10' "
                                  f"fill='{color}'{opacity}/>")
            else:
                dash = " stroke-dasharray='5 3'" if swatch == "dash" else ""
                self.parts.append(f"<line x1='{x:.1f}' y1='33' x2='{x + 18:.1f}' y2='33' "
                                  f"stroke='{color}' stroke-width='2'{dash}/>")
            offset = 14 if swatch in ("box", "solid") else 22
            self.parts.append(f"<text x='{x + offset:.1f}' y='37' fill='#111827'>"
                              f"{escape(name)}</text>")
            x += offset + CHAR_W * len(name) + 18
        self.parts.append("</g>")

    def empty(self, message: str = "no data") -> str:
        self.parts.append(f"<text x='{self.w / 2}' y='{self.top + self.ph / 2}' "
                          f"text-anchor='middle' fill='#6b7280'>{escape(message)}</text>")
        return self.done()

    def done(self) -> str:
        self.parts.append("</svg>")
        return "\n".join(self.parts)


def _rows(labels: Sequence[tuple[float, str]], width: float) -> list[int]:
    """A row for each (x, text) label so that no two in a row overlap (greedy)."""
    ends: list[float] = []
    rows = []
    for x, text in labels:
        w = CHAR_W * len(text) + 10
        start = x - w / 2
        row = next((i for i, end in enumerate(ends) if end <= start), len(ends))
        if row == len(ends):
            ends.append(0.0)
        ends[row] = x + w / 2
        rows.append(row)
    return rows


def line_chart(series: Sequence[tuple[str, Sequence[tuple[float, float]]]], *, title: str,
               x_label: str, y_label: str, x_time: bool = False, width: int = WIDTH,
               plot_height: int = 220, y_format: Callable[[float], str] = fmt_num) -> str:
    """Lines through (x, y) points; each series is (name, points). With ``x_time`` the x
    values are unix times, shown as UTC clock time."""
    f = _Frame(title, width=width, plot_height=plot_height)
    f.legend([(name, PALETTE[i % len(PALETTE)], "dash" if i else "line")
              for i, (name, _) in enumerate(series)])
    points = [p for _, pts in series for p in pts]
    if not points:
        f.axis_labels(x_label, y_label)
        return f.empty()
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x1 = x0 + 1
    yt = nice_ticks(min(0.0, min(ys)), max(0.0, max(ys)))
    y0, y1 = yt[0], yt[-1]
    f.axes(x_label, y_label)
    f.y_grid(yt, y0, y1, y_format)
    if x_time:
        ticks, label = time_ticks(x0, x1)
    else:
        ticks, label = nice_ticks(x0, x1), fmt_num
    for t in ticks:
        if x0 <= t <= x1:
            f.x_tick((t - x0) / (x1 - x0), label(t))
    for i, (name, pts) in enumerate(series):
        if not pts:
            continue
        color = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{f.x((x - x0) / (x1 - x0)):.1f},{f.y((y - y0) / (y1 - y0)):.1f}"
                        for x, y in pts)
        dash = " stroke-dasharray='5 3'" if i else ""
        f.parts.append(f"<polyline fill='none' stroke='{color}' stroke-width='1.8'{dash} "
                       f"points='{path}'><title>{escape(name)}</title></polyline>")
    return f.done()


def histogram(groups: Sequence[tuple[str, Sequence[float]]], *, title: str, x_label: str,
              y_label: str = "trades", bins: int = 40, log: bool = True, width: int = WIDTH,
              plot_height: int = 200, markers: bool = True,
              fmt: Callable[[float], str] = fmt_num, unit: str = "") -> str:
    """Overlaid histograms of positive values (log-spaced bins between round ticks by
    default), with each group's p50 and p99 marked by a dashed line labelled above the
    plot. ``y_label`` says what is counted (trades, legs)."""
    values = [v for _, vs in groups for v in vs if v > 0 or not log]
    labels: list[tuple[float, str, str]] = []  # (fraction, text, colour) of the markers
    if log and values:
        ticks = log_ticks(min(values), max(values))
        lo, hi = math.log10(ticks[0]), math.log10(ticks[-1])
    elif values:
        ticks = nice_ticks(min(values), max(values))
        lo, hi = ticks[0], ticks[-1]
    else:
        ticks, lo, hi = [], 0.0, 1.0
    if hi <= lo:
        hi = lo + 1

    def frac(v: float) -> float:
        return ((math.log10(v) if log else v) - lo) / (hi - lo)

    for g, (_, vs) in enumerate(groups):
        ordered = sorted(v for v in vs if v > 0 or not log)
        if markers and ordered:
            p50 = ordered[max(0, math.ceil(0.5 * len(ordered)) - 1)]
            p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
            suffix = f" {unit}" if unit else ""
            labels += [(frac(p50), f"p50 {fmt(p50)}{suffix}", PALETTE[g % len(PALETTE)]),
                       (frac(p99), f"p99 {fmt(p99)}{suffix}", PALETTE[g % len(PALETTE)])]
    probe = _Frame(title, width=width)
    rows = _rows([(probe.x(fr), text) for fr, text, _ in labels], probe.pw)
    f = _Frame(title, width=width, plot_height=plot_height,
               label_rows=(max(rows) + 1) if rows else 0)
    f.legend([(f"{name} (n={len([v for v in vs if v > 0 or not log])})",
               PALETTE[g % len(PALETTE)], "box") for g, (name, vs) in enumerate(groups)]
             + ([("p50 / p99 (dashed)", MUTED, "dash")] if labels else []))
    if not values:
        f.axis_labels(x_label, y_label)
        return f.empty()
    counts = []
    for _, vs in groups:
        c = [0] * bins
        for v in vs:
            if log and v <= 0:
                continue
            c[min(max(int(frac(v) * bins), 0), bins - 1)] += 1
        counts.append(c)
    yt = nice_ticks(0, max(max(c) for c in counts) * 1.1 or 1, 4, integer=True)
    top = yt[-1]
    f.axes(x_label, y_label)
    f.y_grid(yt, 0, top)
    for t in ticks:
        f.x_tick(frac(t), fmt(t))
    bw = f.pw / bins
    for g, c in enumerate(counts):
        color = PALETTE[g % len(PALETTE)]
        opacity = 0.75 if len(groups) == 1 else 0.45
        for i, n in enumerate(c):
            if n:
                hh = n / top * f.ph
                f.parts.append(f"<rect x='{f.x(i / bins) + 0.5:.1f}' y='{f.y(0) - hh:.1f}' "
                               f"width='{max(bw - 1, 0.5):.1f}' height='{hh:.1f}' "
                               f"fill='{color}' fill-opacity='{opacity}'>"
                               f"<title>{escape(groups[g][0])}: {n}</title></rect>")
    for (fr, text, color), row in zip(labels, rows, strict=True):
        xx = f.x(fr)
        ly = 52 + 14 * row
        f.parts.append(f"<line x1='{xx:.1f}' y1='{ly + 3}' x2='{xx:.1f}' y2='{f.y(0)}' "
                       f"stroke='{color}' stroke-dasharray='3 3'/>")
        f.parts.append(f"<text x='{xx:.1f}' y='{ly}' text-anchor='middle' "
                       f"fill='{color}'>{escape(text)}</text>")
    return f.done()


def bars(items: Sequence[tuple[str, float | None, str] | tuple[str, float | None, str, str]],
         *, title: str, x_label: str = "rate", y_label: str = "", maximum: float = 1.0,
         percent: bool = True, width: int = WIDTH) -> str:
    """Horizontal bars: (label, value or None, note after the value[, group]). Bars are
    coloured by group, and the legend names each group."""
    row = 22
    groups = list(dict.fromkeys(item[3] if len(item) > 3 else title  # type: ignore[misc]
                                for item in items))
    label_w = int(min(280, 44 + CHAR_W * max((len(i[0]) for i in items), default=4)))
    f = _Frame(title, width=width, plot_height=row * max(len(items), 1) + 4, left=label_w,
               bottom=40)
    f.legend([(g, PALETTE[i % len(PALETTE)], "solid") for i, g in enumerate(groups)])
    f.axis_labels(x_label, y_label)
    if not items:
        return f.empty()
    plot_w = f.pw - 24 - CHAR_W * max(len(i[2]) + 7 for i in items)  # room for value, note
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        xx = label_w + t * plot_w
        f.parts.append(f"<line x1='{xx:.1f}' y1='{f.top}' x2='{xx:.1f}' y2='{f.y(0)}' "
                       "stroke='#e5e7eb'/>")
        text = f"{t * maximum:.0%}" if percent else fmt_num(t * maximum)
        f.parts.append(f"<text x='{xx:.1f}' y='{f.y(0) + 16:.1f}' text-anchor='middle' "
                       f"fill='{MUTED}'>{text}</text>")
    for i, item in enumerate(items):
        label, value, note = item[0], item[1], item[2]
        color = PALETTE[groups.index(item[3] if len(item) > 3 else title)  # type: ignore[misc]
                        % len(PALETTE)]
        y = f.top + i * row
        f.parts.append(f"<text x='{label_w - 8}' y='{y + 15}' text-anchor='end'>"
                       f"{escape(label)}</text>")
        f.parts.append(f"<rect x='{label_w}' y='{y + 4}' width='{plot_w:.1f}' "
                       f"height='{row - 6}' fill='#f3f4f6'/>")
        if value is not None:
            w = max(0.0, min(value / maximum, 1.0)) * plot_w if maximum else 0
            f.parts.append(f"<rect x='{label_w}' y='{y + 4}' width='{w:.1f}' "
                           f"height='{row - 6}' fill='{color}'/>")
        text = "-" if value is None else (f"{value:.1%}" if percent else fmt_num(value))
        f.parts.append(f"<text x='{label_w + plot_w + 8:.1f}' y='{y + 15}'>{escape(text)} "
                       f"<tspan fill='#6b7280'>{escape(note)}</tspan></text>")
    return f.done()
