"""Line charts as SVG text: the report's training curves, drawn in milliseconds.

matplotlib took ~1 s after training (importing it and rendering the PNGs; measured by
bench/trainer_overhead.py), which every job paid for a handful of curves. An SVG is a
few kilobytes of text any browser shows, scales without blur, and needs no dependency.

A chart draws one or more series (train and eval loss together) with a legend, labels
both axes with their units, draws a noisy series faint with an exponentially smoothed
line over it (as TensorBoard does), and switches the y axis to a log scale when a
series falls by orders of magnitude. It uses no element ids, so any number of charts
can sit inline in one HTML page; its viewBox lets the page scale it to a narrow screen.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 480, 280
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 40, 40
TICKS = 5
LOG_TICKS = 7
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
SMOOTH_FROM = 10
"""Series with at least this many points get a smoothed line over the faint raw one."""
LOG_RATIO = 100.0
"""A positive series whose largest value is this many times its smallest is drawn on a
log scale (when the chart allows it): two orders of magnitude."""


@dataclass(frozen=True)
class Series:
    """One line: its legend name and (x, y) points."""

    name: str
    points: Sequence[tuple[float, float]]


def nice_ticks(low: float, high: float, count: int = TICKS) -> list[float]:
    """About ``count`` round values (1, 2, 2.5, 5 x 10^k apart) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        return [low]
    raw = (high - low) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        if value >= low - step * 1e-9:
            ticks.append(round(value, 12))
        value += step
    return ticks


def decades(low: float, high: float) -> tuple[int, int]:
    """The powers of ten just below ``low`` and just above ``high`` (both > 0)."""
    return math.floor(math.log10(low)), math.ceil(math.log10(high))


def log_ticks(low: float, high: float, count: int = LOG_TICKS) -> list[float]:
    """Powers of ten from below ``low`` to above ``high`` (both > 0); every k-th decade
    when there are more than ``count``."""
    first, last = decades(low, high)
    stride = max(1, math.ceil((last - first) / max(1, count - 1)))
    return [10.0**exponent for exponent in range(first, last + 1, stride)]


def smoothed(values: Sequence[float], weight: float | None = None) -> list[float]:
    """An exponential moving average, debiased at the start (TensorBoard's smoothing).

    ``weight`` defaults to one that grows with the number of points (0.25 for 20, 0.8 from
    75), so a short run is barely smoothed and a long, noisy one reads as a trend.
    """
    if weight is None:
        weight = min(0.8, max(0.0, 1 - 15 / max(1, len(values))))
    average, result = 0.0, []
    for count, value in enumerate(values, start=1):
        average = average * weight + (1 - weight) * value
        result.append(average / (1 - weight**count))
    return result


def wants_log_scale(values: Sequence[float]) -> bool:
    """True for positive values spanning two orders of magnitude or more."""
    return bool(values) and min(values) > 0 and max(values) / min(values) >= LOG_RATIO


def _label(value: float) -> str:
    """``0.25``, ``1e-05``, ``64k``, ``1.2M``: short enough for a tick."""
    if abs(value) >= 1e6:
        return f"{value / 1e6:.4g}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.4g}k"
    return f"{value:.4g}"


def line_chart(
    points: Sequence[tuple[float, float]],
    title: str,
    x_label: str = "step",
    y_label: str = "",
    *,
    log_scale: bool = False,
) -> str:
    """One series; see ``chart``."""
    return chart([Series(title, points)], title, x_label, y_label, log_scale=log_scale)


def chart(
    series: Sequence[Series],
    title: str,
    x_label: str = "step",
    y_label: str = "",
    *,
    log_scale: bool = False,
) -> str:
    """An SVG document plotting every series as a line, with axes, ticks, grid and legend.

    Non-finite values (a NaN loss) are left out, as are points at or below 0 on a log
    scale; a series with fewer than two points draws no line. ``log_scale`` allows a log
    y axis, used when the values span ``LOG_RATIO`` or more.
    """
    lines = [
        (
            item.name,
            [
                (float(x), float(y))
                for x, y in item.points
                if math.isfinite(float(x)) and math.isfinite(float(y))
            ],
        )
        for item in series
    ]
    all_ys = [y for _, points in lines for _, y in points]
    logarithmic = log_scale and wants_log_scale(all_ys)
    if logarithmic:
        lines = [(name, [(x, y) for x, y in points if y > 0]) for name, points in lines]
    drawable = [(name, points) for name, points in lines if len(points) >= 2]
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}"'
        f' viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11"'
        f' role="img" aria-label="{html.escape(title)}">',
        f"<title>{html.escape(title)}</title>",
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" font-size="13">'
        f"{html.escape(title)}</text>",
        f'<text x="{LEFT + plot_width / 2}" y="{HEIGHT - 6}" text-anchor="middle">'
        f"{html.escape(x_label)}</text>",
    ]
    if y_label:
        middle = TOP + plot_height / 2
        parts.append(
            f'<text x="14" y="{middle}" text-anchor="middle"'
            f' transform="rotate(-90 14 {middle})">'
            f"{html.escape(y_label + (' (log scale)' if logarithmic else ''))}</text>"
        )
    if drawable:
        xs = [x for _, points in drawable for x, _ in points]
        ys = [y for _, points in drawable for _, y in points]
        x_low, x_high = min(xs), max(xs)
        if x_high == x_low:
            x_low, x_high = x_low - 1, x_high + 1
        if logarithmic:
            y_ticks = log_ticks(min(ys), max(ys))
            y_low, y_high = decades(min(ys), max(ys))

            def scale(y: float) -> float:
                return math.log10(y)
        else:
            y_low, y_high = min(ys), max(ys)
            if y_high == y_low:
                y_low, y_high = y_low - 0.5 * (abs(y_low) or 1), y_high + 0.5 * (abs(y_high) or 1)
            margin = 0.05 * (y_high - y_low)
            y_low, y_high = y_low - margin, y_high + margin
            y_ticks = nice_ticks(y_low, y_high)

            def scale(y: float) -> float:
                return y

        def to_x(x: float) -> float:
            return LEFT + (x - x_low) / (x_high - x_low) * plot_width

        def to_y(y: float) -> float:
            return TOP + (y_high - scale(y)) / (y_high - y_low) * plot_height

        for tick in y_ticks:
            y = to_y(tick)
            parts.append(
                f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_width}" y2="{y:.1f}"'
                ' stroke="#ddd"/>'
                f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_label(tick)}</text>'
            )
        for tick in nice_ticks(x_low, x_high):
            x = to_x(tick)
            parts.append(
                f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + plot_height}"'
                ' stroke="#eee"/>'
                f'<text x="{x:.1f}" y="{TOP + plot_height + 16}" text-anchor="middle">'
                f"{_label(tick)}</text>"
            )
        for index, (name, points) in enumerate(lines):
            if len(points) < 2:
                continue
            color = COLORS[index % len(COLORS)]
            parts.extend(_series_lines(points, color, to_x, to_y, logarithmic))
            if len(lines) > 1:
                parts.append(_legend_entry(index, name, color))
    else:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">not enough points</text>'
        )
    parts.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_width}" height="{plot_height}"'
        ' fill="none" stroke="#444"/>'
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _series_lines(  # type: ignore[no-untyped-def]
    points: list[tuple[float, float]], color: str, to_x, to_y, logarithmic: bool
) -> list[str]:
    """The raw line (faint when a smoothed one is drawn over it) and its dots. On a log
    scale the average is taken of the logarithms: the trend of a loss falling by orders of
    magnitude then follows it instead of lagging a decade behind."""
    raw = " ".join(f"{to_x(x):.1f},{to_y(y):.1f}" for x, y in points)
    if len(points) < SMOOTH_FROM:
        parts = [
            f'<polyline points="{raw}" fill="none" stroke="{color}" stroke-width="1.5"'
            ' class="raw"/>'
        ]
        parts.extend(
            f'<circle cx="{to_x(x):.1f}" cy="{to_y(y):.1f}" r="2" fill="{color}"/>'
            for x, y in points
        )
        return parts
    if logarithmic:
        trend = [10**value for value in smoothed([math.log10(y) for _, y in points])]
    else:
        trend = smoothed([y for _, y in points])
    line = " ".join(f"{to_x(x):.1f},{to_y(y):.1f}" for (x, _), y in zip(points, trend, strict=True))
    return [
        f'<polyline points="{raw}" fill="none" stroke="{color}" stroke-width="1"'
        ' stroke-opacity="0.3" class="raw"/>',
        f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"'
        ' class="smoothed"/>',
    ]


def _legend_entry(index: int, name: str, color: str) -> str:
    x = LEFT + 8 + 110 * index
    y = TOP - 8
    return (
        f'<line x1="{x}" y1="{y - 4}" x2="{x + 16}" y2="{y - 4}" stroke="{color}"'
        ' stroke-width="2"/>'
        f'<text x="{x + 20}" y="{y}">{html.escape(name)}</text>'
    )
