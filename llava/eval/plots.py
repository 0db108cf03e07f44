"""Scatter plots of the comparison harness, drawn with Pillow (no plotting library in the environment).

One plot: labelled points, a linear or log x axis with round tick values, the Pareto front (the points
no other point beats on both axes) joined by a step line and ringed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 960, 640
LEFT, RIGHT, TOP, BOTTOM = 90, 40, 50, 80
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str
    group: str  # points of one group share a colour (the method)
    front: bool = False
    hollow: bool = False  # drawn as an open marker (e.g. counted another way)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Per point, whether no other point has lower-or-equal x and higher-or-equal y with one strict
    (lower cost, higher accuracy is better)."""
    front = []
    for i, (x, y) in enumerate(points):
        beaten = any((ox <= x and oy >= y) and (ox < x or oy > y) for j, (ox, oy) in enumerate(points) if j != i)
        front.append(not beaten)
    return front


def _nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    if high <= low:
        high = low + 1.0
    step = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(step))
    step = min((m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= step), default=10 * magnitude)
    first = math.floor(low / step) * step
    return [first + i * step for i in range(int(math.ceil((high - first) / step)) + 1)]


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    exponent = math.floor(math.log10(abs(value)))
    if exponent >= 4:
        units = {3: "k", 6: "M", 9: "G", 12: "T", 15: "P"}
        e = min(15, 3 * (exponent // 3))
        return f"{value / 10 ** e:g}{units[e]}"
    return f"{value:g}"


def scatter(points: Sequence[Point], x_label: str, y_label: str, title: str, path: Path,
            log_x: bool = False) -> Path:
    """Writes a PNG of ``points`` to ``path``."""
    if not points:
        raise ValueError(f"nothing to plot in {path}")
    font = ImageFont.load_default()
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    if log_x and min(p.x for p in points) <= 0:
        log_x = False
    fx = math.log10 if log_x else (lambda v: v)
    xs, ys = [fx(p.x) for p in points], [p.y for p in points]
    x_ticks = (list(range(math.floor(min(xs)), math.ceil(max(xs)) + 1)) if log_x
               else _nice_ticks(min(xs), max(xs)))
    if len(x_ticks) < 2:
        x_ticks = [x_ticks[0], x_ticks[0] + 1]
    y_ticks = _nice_ticks(min(ys), max(ys))
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def to_px(x: float, y: float) -> tuple[float, float]:
        return LEFT + (x - x0) / (x1 - x0) * plot_w, TOP + plot_h - (y - y0) / (y1 - y0) * plot_h

    draw.rectangle([LEFT, TOP, LEFT + plot_w, TOP + plot_h], outline="black")
    for tick in x_ticks:
        px, _ = to_px(tick, y0)
        draw.line([px, TOP, px, TOP + plot_h], fill=(230, 230, 230))
        draw.text((px, TOP + plot_h + 6), _fmt(10 ** tick if log_x else tick), fill="black", font=font, anchor="mt")
    for tick in y_ticks:
        _, py = to_px(x0, tick)
        draw.line([LEFT, py, LEFT + plot_w, py], fill=(230, 230, 230))
        draw.text((LEFT - 6, py), _fmt(tick), fill="black", font=font, anchor="rm")
    draw.text((LEFT + plot_w / 2, HEIGHT - 30), x_label + (" (log scale)" if log_x else ""), fill="black",
              font=font, anchor="mm")
    draw.text((12, TOP - 20), y_label, fill="black", font=font, anchor="lm")
    draw.text((LEFT + plot_w / 2, 18), title, fill="black", font=font, anchor="mm")

    front = sorted((x, y) for x, y, p in zip(xs, ys, points) if p.front)
    for (ax, ay), (bx, by) in zip(front, front[1:]):  # step line: accuracy holds until the next front point
        draw.line([to_px(ax, ay), to_px(bx, ay), to_px(bx, by)], fill=(200, 0, 0), width=2)
    colours = {group: PALETTE[i % len(PALETTE)] for i, group in enumerate(dict.fromkeys(p.group for p in points))}
    stacked: dict[tuple[int, int], int] = {}  # labels of points that (nearly) coincide go one under another
    for x, y, p in zip(xs, ys, points):
        px, py = to_px(x, y)
        colour = colours[p.group]
        if p.front:
            draw.ellipse([px - 10, py - 10, px + 10, py + 10], outline=(200, 0, 0), width=2)
        box = [px - 5, py - 5, px + 5, py + 5]
        draw.ellipse(box, outline=colour, width=2) if p.hollow else draw.ellipse(box, fill=colour)
        cell = (round(px / 40), round(py / 12))
        below = stacked.get(cell, 0)
        stacked[cell] = below + 1
        draw.text((px + 12, py - 12 - 12 * below), p.label, fill=colour, font=font)
    legend_y = TOP + 8
    for group, colour in colours.items():
        draw.ellipse([LEFT + 10, legend_y, LEFT + 20, legend_y + 10], fill=colour)
        draw.text((LEFT + 26, legend_y + 5), group, fill="black", font=font, anchor="lm")
        legend_y += 16
    draw.text((LEFT + 10, legend_y + 5), "ringed, red line: Pareto front; open marker: counted as layer average",
              fill=(200, 0, 0), font=font, anchor="lm")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path
