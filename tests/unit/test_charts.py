"""The report's SVG curves: valid SVG that plots the points where they belong."""

from __future__ import annotations

import itertools
import math
import re
import xml.etree.ElementTree as ElementTree

from rlhf_trainer.charts import (
    HEIGHT,
    LEFT,
    TOP,
    WIDTH,
    Series,
    chart,
    line_chart,
    log_ticks,
    nice_ticks,
    smoothed,
    wants_log_scale,
)

SVG = "{http://www.w3.org/2000/svg}"


def _polyline(svg: str) -> list[tuple[float, float]]:
    root = ElementTree.fromstring(svg)
    line = root.find(f"{SVG}polyline")
    assert line is not None
    return [tuple(map(float, pair.split(","))) for pair in line.get("points", "").split()]  # type: ignore[misc]


def _polylines(svg: str) -> dict[str, list[list[tuple[float, float]]]]:
    """The drawn lines by class (raw, smoothed), in drawing order."""
    found: dict[str, list[list[tuple[float, float]]]] = {}
    for line in ElementTree.fromstring(svg).iter(f"{SVG}polyline"):
        points = [tuple(map(float, pair.split(","))) for pair in line.get("points", "").split()]
        found.setdefault(line.get("class", ""), []).append(points)  # type: ignore[arg-type]
    return found


def _texts(svg: str) -> list[str]:
    return [text.text or "" for text in ElementTree.fromstring(svg).iter(f"{SVG}text")]


def test_a_falling_loss_is_drawn_falling_inside_the_plot() -> None:
    points = [(step, 2.0 / (1 + step)) for step in range(0, 40, 5)]
    svg = line_chart(points, "training loss")
    drawn = _polyline(svg)
    assert len(drawn) == len(points)
    xs = [x for x, _ in drawn]
    ys = [y for _, y in drawn]
    assert xs == sorted(xs) and xs[0] == LEFT  # left to right, from the axis
    assert ys == sorted(ys)  # SVG y grows downwards: a falling loss goes down the page
    assert all(TOP <= y <= HEIGHT for y in ys) and all(x <= WIDTH for x in xs)
    assert "<title>training loss</title>" in svg
    assert len(re.findall("<circle", svg)) == len(points)  # few points: each one marked


def test_a_noisy_series_gets_a_smoothed_line_over_the_faint_raw_one() -> None:
    noise = [0.3 * (-1) ** step for step in range(60)]
    points = [(step, 2.0 - step / 60 + noise[step]) for step in range(60)]
    svg = line_chart(points, "loss", y_label="cross-entropy (nats)")
    lines = _polylines(svg)
    (raw,), (trend,) = lines["raw"], lines["smoothed"]
    assert len(raw) == len(trend) == 60
    faint = ElementTree.fromstring(svg).find(f"{SVG}polyline[@class='raw']")
    assert faint is not None and float(faint.get("stroke-opacity", "1")) < 0.5

    def wiggle(line: list[tuple[float, float]]) -> float:
        return sum(
            abs(a[1] - 2 * b[1] + c[1]) for a, b, c in zip(line, line[1:], line[2:], strict=False)
        )

    assert wiggle(trend) < wiggle(raw) / 4  # the trend, without the step-to-step noise
    assert trend[-1][1] > trend[0][1]  # and it still falls (down the page)
    assert smoothed([1.0, 1.0, 1.0]) == [1.0, 1.0, 1.0]  # debiased: no dip towards 0


def test_both_axes_say_what_they_measure() -> None:
    svg = line_chart([(0, 1.0), (64, 2.0), (128, 3.0)], "reward", "episodes", "score")
    texts = _texts(svg)
    assert "episodes" in texts and "score" in texts


def test_a_loss_falling_by_orders_of_magnitude_gets_a_log_scale() -> None:
    falling = [(step, 5.0 * 10 ** (-step / 25)) for step in range(0, 101, 5)]  # 5 -> 5e-4
    svg = line_chart(falling, "loss", y_label="nats", log_scale=True)
    texts = _texts(svg)
    assert "nats (log scale)" in texts
    assert {"0.0001", "0.001", "0.01", "0.1", "1", "10"} <= set(texts)  # decades as ticks
    (trend,) = _polylines(svg)["smoothed"]
    heights = [y for _, y in trend]
    # Equal ratios, equal distances: each 5 steps falls the same height on the page.
    drops = [b - a for a, b in itertools.pairwise(heights[5:])]
    assert max(drops) - min(drops) < 0.5
    # Not where the chart does not allow it, nor where the values span less than 100x.
    assert "log scale" not in " ".join(_texts(line_chart(falling, "lr", y_label="nats")))
    mild = [(step, 2.0 - step / 100) for step in range(100)]
    assert "log scale" not in " ".join(
        _texts(line_chart(mild, "loss", "step", "nats", log_scale=True))
    )
    assert wants_log_scale([1.0, 0.01]) and not wants_log_scale([1.0, 0.0, 0.001])
    assert log_ticks(0.0013, 8.0) == [0.001, 0.01, 0.1, 1.0, 10.0]
    assert log_ticks(1e-9, 1.0) == [1e-9, 1e-7, 1e-5, 1e-3, 0.1]  # many decades: every other


def test_train_and_eval_share_a_chart_with_a_legend_and_no_ids() -> None:
    train = [(step, 3.0 - step / 100) for step in range(0, 200, 10)]
    evaluation = [(step, 3.1 - step / 100) for step in range(0, 200, 50)]
    svg = chart([Series("train", train), Series("eval", evaluation)], "loss", "step", "nats")
    lines = _polylines(svg)
    assert len(lines["raw"]) == 2 and len(lines["smoothed"]) == 1  # eval: 4 points, marked
    assert {"train", "eval"} <= set(_texts(svg))
    assert " id=" not in svg  # many charts inline in one page cannot clash
    root = ElementTree.fromstring(svg)
    assert root.get("viewBox") == f"0 0 {WIDTH} {HEIGHT}"  # scales to a narrow screen


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
