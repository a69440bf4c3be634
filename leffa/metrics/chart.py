"""A bar chart comparing evaluation runs, drawn with PIL (no plotting library needed).

One panel per metric (their scales differ by orders of magnitude), one bar per run in a fixed colour, the value
above each bar, and an arrow in each title saying which direction is better.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from leffa.errors import LeffaError
from leffa.metrics.scores import EvalResult, lower_is_better

PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD")
PANEL_WIDTH, PANEL_HEIGHT, MARGIN = 260, 220, 16


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def format_value(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    if value != 0 and (abs(value) >= 1000 or abs(value) < 0.01):
        return f"{value:.2e}"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"


def shared_metrics(results: Sequence[EvalResult]) -> list[str]:
    """Metrics present in at least one run, in the order they first appear (``kid_std`` is not charted)."""
    names: list[str] = []
    for result in results:
        names += [name for name in result.metrics if name not in names and name != "kid_std"]
    return names


def compare_chart(results: Sequence[EvalResult], metrics: Sequence[str] | None = None) -> Image.Image:
    """A PIL image with one bar panel per metric and one bar per run, labelled with each run's name."""
    if not results:
        raise LeffaError("results: give at least one result JSON", option="results")
    metrics = list(metrics or shared_metrics(results))
    columns = min(len(metrics), 4)
    rows = math.ceil(len(metrics) / columns)
    title_font, label_font, small_font = _font(18), _font(14), _font(12)
    legend_height = 24 + 20 * math.ceil(len(results) / 3)
    width = columns * PANEL_WIDTH + (columns + 1) * MARGIN
    height = legend_height + rows * (PANEL_HEIGHT + MARGIN) + MARGIN
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for index, result in enumerate(results):
        x = MARGIN + (index % 3) * (width - 2 * MARGIN) // 3
        y = MARGIN // 2 + 20 * (index // 3)
        colour = PALETTE[index % len(PALETTE)]
        draw.rectangle([x, y + 3, x + 14, y + 17], fill=colour)
        draw.text((x + 20, y + 2), f"{result.name} ({result.mode}, n={result.count})", fill="black", font=label_font)
    for panel, metric in enumerate(metrics):
        left = MARGIN + (panel % columns) * (PANEL_WIDTH + MARGIN)
        top = legend_height + (panel // columns) * (PANEL_HEIGHT + MARGIN)
        _draw_panel(draw, (left, top), metric, results, (title_font, small_font))
    return image


def _draw_panel(draw: ImageDraw.ImageDraw, origin: tuple[int, int], metric: str, results, fonts) -> None:
    title_font, small_font = fonts
    left, top = origin
    lower = lower_is_better(metric, results[0].mode)
    direction = "" if lower is None else " (lower is better)" if lower else " (higher is better)"
    draw.rectangle([left, top, left + PANEL_WIDTH, top + PANEL_HEIGHT], outline="#BBBBBB")
    title = metric if results[0].mode == "flow" else metric.upper()
    draw.text((left + 8, top + 6), title, fill="black", font=title_font)
    draw.text((left + 8, top + 28), direction.strip(" ()"), fill="#666666", font=small_font)
    values = [result.metrics.get(metric, float("nan")) for result in results]
    finite = [v for v in values if math.isfinite(v)]
    low, high = min([0.0, *finite]), max([0.0, *finite])
    span = (high - low) or 1.0
    plot_top, plot_bottom = top + 64, top + PANEL_HEIGHT - 12
    baseline = plot_bottom - (0.0 - low) / span * (plot_bottom - plot_top)
    draw.line([left + 8, baseline, left + PANEL_WIDTH - 8, baseline], fill="#888888")
    slot = (PANEL_WIDTH - 16) / len(results)
    for index, value in enumerate(values):
        x0 = left + 8 + index * slot + slot * 0.15
        x1 = left + 8 + (index + 1) * slot - slot * 0.15
        label = format_value(value)
        if math.isfinite(value):
            y = plot_bottom - (value - low) / span * (plot_bottom - plot_top)
            draw.rectangle([x0, min(y, baseline), x1, max(y, baseline)], fill=PALETTE[index % len(PALETTE)])
            text_y = min(y, baseline) - 16
        else:
            text_y = baseline - 16
        text_width = draw.textlength(label, font=small_font)
        draw.text(((x0 + x1 - text_width) / 2, text_y), label, fill="black", font=small_font)
