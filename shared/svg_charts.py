"""Small hand-written SVG charts (stacked bars, lines over time, a labelled scatter).

The cost report must be one self-contained file with no scripts or external styles; these
few chart kinds do not justify a plotting dependency. Every function returns an <svg> string.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

WIDTH, HEIGHT = 920, 340
LEFT, RIGHT, TOP, BOTTOM = 78, 170, 36, 48
COLORS = ("#3b6ea5", "#e07b39", "#5a9e4b", "#a05195", "#7f7f7f")


@dataclass(frozen=True)
class Marker:
    """A labelled point to mark on a time chart (the crossover)."""

    at: datetime
    value: float
    label: str


@dataclass(frozen=True)
class Point:
    """One labelled point of a scatter; `highlight` draws it larger and darker."""

    x: float
    y: float
    label: str
    highlight: bool = False


@dataclass(frozen=True)
class _Scale:
    lo: float
    hi: float
    a: float  # pixel of lo
    b: float  # pixel of hi

    def __call__(self, value: float) -> float:
        span = self.hi - self.lo or 1.0
        return self.a + (value - self.lo) / span * (self.b - self.a)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] with steps of 1, 2 or 5 times a power of ten."""
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    return [first + i * step for i in range(math.ceil((hi - first) / step) + 1)]


def _number(value: float) -> str:
    return f"{value:.3g}" if value else "0"


def _frame(title: str, body: str, *, y_label: str, x_label: str = "") -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}">'
        f'<text x="{LEFT}" y="20" class="title">{escape(title)}</text>'
        f'<text transform="translate(16 {(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" '
        f'text-anchor="middle" class="axis-label">{escape(y_label)}</text>'
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 8}" text-anchor="middle" '
        f'class="axis-label">{escape(x_label)}</text>{body}</svg>'
    )


def _y_axis(scale: _Scale, ticks: Sequence[float]) -> str:
    parts = []
    for tick in ticks:
        y = scale(tick)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_number(tick)}</text>'
        )
    return "".join(parts)


def _legend(names: Sequence[str]) -> str:
    x = WIDTH - RIGHT + 14
    return "".join(
        f'<rect x="{x}" y="{TOP + 18 * i}" width="12" height="12" fill="{COLORS[i % 5]}"/>'
        f'<text x="{x + 18}" y="{TOP + 10 + 18 * i}">{escape(name)}</text>'
        for i, name in enumerate(names)
    )


def _time_labels(times: Sequence[datetime], place: Callable[[datetime], float]) -> str:
    """Up to seven evenly picked time labels under the x axis, at place(time)."""
    if not times:
        return ""
    span = (times[-1] - times[0]).total_seconds()
    fmt = "%m-%d %H:%M" if span <= 3 * 86400 else "%Y-%m-%d"
    step = max(1, math.ceil(len(times) / 7))
    y = HEIGHT - BOTTOM + 16
    return "".join(
        f'<text x="{place(t):.1f}" y="{y}" text-anchor="middle">{t.strftime(fmt)}</text>'
        for t in times[::step]
    )


def _y_scale(values: Sequence[float]) -> tuple[_Scale, list[float]]:
    ticks = nice_ticks(0.0, max([0.0, *values]))
    return _Scale(ticks[0], ticks[-1], HEIGHT - BOTTOM, TOP), ticks


def stacked_bars(
    title: str, times: Sequence[datetime], series: dict[str, Sequence[float]], *, y_label: str
) -> str:
    """One bar per time, its series stacked, in legend order from the bottom."""
    totals = [sum(values[i] for values in series.values()) for i in range(len(times))]
    y, ticks = _y_scale(totals)
    slot = (WIDTH - LEFT - RIGHT) / max(len(times), 1)
    bars = []
    for i, at in enumerate(times):
        base = 0.0
        for k, (name, values) in enumerate(series.items()):
            top = base + values[i]
            bars.append(
                f'<rect x="{LEFT + i * slot + slot * 0.15:.1f}" y="{y(top):.1f}" '
                f'width="{slot * 0.7:.1f}" height="{max(y(base) - y(top), 0):.1f}" '
                f'fill="{COLORS[k % 5]}"><title>{escape(name)} {at:%Y-%m-%d %H:%M}: '
                f"{values[i]:.6g}</title></rect>"
            )
            base = top
    centers = _Scale(0, max(len(times) - 1, 1), LEFT + slot / 2, LEFT + slot * (len(times) - 0.5))
    labels = _time_labels(times, lambda t: centers(times.index(t)))
    body = _y_axis(y, ticks) + "".join(bars) + labels + _legend(list(series))
    return _frame(title, body, y_label=y_label)


def time_lines(
    title: str,
    times: Sequence[datetime],
    series: dict[str, Sequence[float | None]],
    *,
    y_label: str,
    markers: Sequence[Marker] = (),
) -> str:
    """Lines over time (None leaves a gap); markers drawn as circled, labelled points."""
    known = [v for values in series.values() for v in values if v is not None]
    y, ticks = _y_scale(known + [m.value for m in markers])
    stamps = [t.timestamp() for t in times]
    x = _Scale(min(stamps, default=0), max(stamps, default=1), LEFT, WIDTH - RIGHT)
    lines = [
        _polyline(
            [(x(s), None if v is None else y(v)) for s, v in zip(stamps, values, strict=True)],
            COLORS[k % 5],
        )
        for k, values in enumerate(series.values())
    ]
    marks = [_marker(x(m.at.timestamp()), y(m.value), m.label) for m in markers]
    body = _y_axis(y, ticks) + "".join(lines) + "".join(marks)
    labels = _time_labels(times, lambda t: x(t.timestamp()))
    return _frame(title, body + labels + _legend(list(series)), y_label=y_label)


def _polyline(points: Sequence[tuple[float, float | None]], color: str) -> str:
    """Runs of known points as polylines, with a dot where a run is a single point."""
    runs: list[list[tuple[float, float]]] = [[]]
    for px, py in points:
        if py is None:
            runs.append([])
        else:
            runs[-1].append((px, py))
    parts = []
    for run in (r for r in runs if r):
        coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in run)
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>'
            if len(run) > 1
            else f'<circle cx="{run[0][0]:.1f}" cy="{run[0][1]:.1f}" r="3" fill="{color}"/>'
        )
    return "".join(parts)


def _marker(px: float, py: float, label: str) -> str:
    anchor = "end" if px > (LEFT + WIDTH - RIGHT) / 2 else "start"
    dx = -10 if anchor == "end" else 10
    return (
        f'<g class="crossover"><line x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" '
        f'y2="{HEIGHT - BOTTOM}" class="marker-line"/>'
        f'<circle cx="{px:.1f}" cy="{py:.1f}" r="7" fill="none" stroke="#c0392b" '
        f'stroke-width="2.5"/><text x="{px + dx:.1f}" y="{TOP + 14}" text-anchor="{anchor}" '
        f'class="marker-text">{escape(label)}</text></g>'
    )


def scatter(title: str, points: Sequence[Point], *, x_label: str, y_label: str) -> str:
    """Labelled points; both axes start at zero."""
    x_ticks = nice_ticks(0.0, max([0.0, *(p.x for p in points)]))
    y_ticks = nice_ticks(0.0, max([0.0, *(p.y for p in points)]))
    x = _Scale(x_ticks[0], x_ticks[-1], LEFT, WIDTH - RIGHT)
    y = _Scale(y_ticks[0], y_ticks[-1], HEIGHT - BOTTOM, TOP)
    dots = "".join(
        f'<circle cx="{x(p.x):.1f}" cy="{y(p.y):.1f}" r="{7 if p.highlight else 5}" '
        f'fill="{COLORS[1] if p.highlight else COLORS[0]}"><title>{escape(p.label)}: '
        f"cost {p.x:.6g}, NDCG {p.y:.4f}</title></circle>"
        f'<text x="{x(p.x) + 9:.1f}" y="{y(p.y) - 7:.1f}" class="point-label">'
        f"{escape(p.label)}</text>"
        for p in points
    )
    x_axis = "".join(
        f'<text x="{x(t):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{_number(t)}</text>'
        for t in x_ticks
    )
    body = _y_axis(y, y_ticks) + x_axis + dots
    return _frame(title, body, y_label=y_label, x_label=x_label)
