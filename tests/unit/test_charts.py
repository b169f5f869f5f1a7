"""The report's SVG curves: valid SVG that plots the points where they belong."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ElementTree

from rlhf_trainer.charts import HEIGHT, LEFT, TOP, WIDTH, line_chart, nice_ticks

SVG = "{http://www.w3.org/2000/svg}"


def _polyline(svg: str) -> list[tuple[float, float]]:
    root = ElementTree.fromstring(svg)
    line = root.find(f"{SVG}polyline")
    assert line is not None
    return [tuple(map(float, pair.split(","))) for pair in line.get("points", "").split()]  # type: ignore[misc]


def test_a_falling_loss_is_drawn_falling_inside_the_plot() -> None:
    points = [(step, 2.0 / (1 + step)) for step in range(0, 100, 5)]
    svg = line_chart(points, "training loss")
    drawn = _polyline(svg)
    assert len(drawn) == len(points)
    xs = [x for x, _ in drawn]
    ys = [y for _, y in drawn]
    assert xs == sorted(xs) and xs[0] == LEFT  # left to right, from the axis
    assert ys == sorted(ys)  # SVG y grows downwards: a falling loss goes down the page
    assert all(TOP <= y <= HEIGHT for y in ys) and all(x <= WIDTH for x in xs)
    assert "<title>training loss</title>" in svg
    assert len(re.findall("<circle", svg)) == len(points)


def test_flat_single_and_non_finite_series_still_make_valid_svg() -> None:
    flat = _polyline(line_chart([(1, 0.5), (2, 0.5), (3, 0.5)], "flat"))
    assert len({y for _, y in flat}) == 1
    with_nan = _polyline(line_chart([(1, 1.0), (2, math.nan), (3, 0.5)], "nan"))
    assert len(with_nan) == 2
    ElementTree.fromstring(line_chart([(1, 1.0)], "one point"))  # parses; no line to draw
    escaped = line_chart([(1, 1.0), (2, 2.0)], "score <a & b>")
    assert "score &lt;a &amp; b&gt;" in escaped
    ElementTree.fromstring(escaped)


def test_ticks_are_round_and_cover_the_range() -> None:
    assert nice_ticks(0, 1) == [0, 0.25, 0.5, 0.75, 1.0]
    assert nice_ticks(0, 100) == [0, 25, 50, 75, 100]
    ticks = nice_ticks(0.0013, 0.0871)
    assert ticks[0] >= 0.0013 and ticks[-1] <= 0.0871 and 3 <= len(ticks) <= 6
    assert nice_ticks(3, 3) == [3]
