"""Line charts as SVG text: the report's training curves, drawn in milliseconds.

matplotlib took ~1 s after training (importing it and rendering the PNGs; measured by
bench/trainer_overhead.py), which every job paid for a handful of curves. An SVG is a
few kilobytes of text any browser shows, scales without blur, and needs no dependency.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

WIDTH, HEIGHT = 480, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 32, 40
TICKS = 5


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


def _label(value: float) -> str:
    return f"{value:.4g}"


def line_chart(points: Sequence[tuple[float, float]], title: str, x_label: str = "step") -> str:
    """An SVG document plotting ``points`` (x, y) as a line with axes, ticks and grid.

    Non-finite values (a NaN loss) are left out; fewer than two points draw no line.
    """
    finite = [(float(x), float(y)) for x, y in points if math.isfinite(x) and math.isfinite(y)]
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}"'
        f' viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
        f"<title>{html.escape(title)}</title>",
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" font-size="13">'
        f"{html.escape(title)}</text>",
        f'<text x="{LEFT + plot_width / 2}" y="{HEIGHT - 6}" text-anchor="middle">'
        f"{html.escape(x_label)}</text>",
    ]
    if len(finite) >= 2:
        xs, ys = [x for x, _ in finite], [y for _, y in finite]
        x_low, x_high = min(xs), max(xs)
        y_low, y_high = min(ys), max(ys)
        if y_high == y_low:
            y_low, y_high = y_low - 0.5 * (abs(y_low) or 1), y_high + 0.5 * (abs(y_high) or 1)
        if x_high == x_low:
            x_low, x_high = x_low - 1, x_high + 1
        margin = 0.05 * (y_high - y_low)
        y_low, y_high = y_low - margin, y_high + margin

        def to_x(x: float) -> float:
            return LEFT + (x - x_low) / (x_high - x_low) * plot_width

        def to_y(y: float) -> float:
            return TOP + (y_high - y) / (y_high - y_low) * plot_height

        for tick in nice_ticks(y_low, y_high):
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
        line = " ".join(f"{to_x(x):.1f},{to_y(y):.1f}" for x, y in finite)
        parts.append(f'<polyline points="{line}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>')
        if len(finite) <= 60:
            parts.extend(
                f'<circle cx="{to_x(x):.1f}" cy="{to_y(y):.1f}" r="2" fill="#1f77b4"/>'
                for x, y in finite
            )
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
