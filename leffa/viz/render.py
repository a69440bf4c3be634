"""Pictures of attention flow: colour-wheel flow images, warped references, error and attention heatmaps.

Leffa's claim is visual: a distortion is a target region that attends to the wrong reference region. This module
turns flows (``grid_sample`` coordinates, the format of ``leffa.flow``) into one labelled PNG grid or a
self-contained HTML page, so the same picture comes from ``leffa viz-flow``, from training dumps and from synthetic
data with a ground-truth flow beside the learned one.

Conventions:
- images are tensors ``(B, 3, H, W)`` in [-1, 1] (the model's convention); masks ``(B, 1, H, W)``, 1 = counted;
- a flow ``(B, h, w, 2)`` holds, per target pixel, the (x, y) reference position it reads, in ``grid_sample``
  units (``align_corners=False``); flows coarser than the image are upsampled with ``leffa.flow.upsample_flow``;
- the displacement drawn is that position minus the pixel's own centre, in pixels, so that "identity" is white;
- colour wheel (Baker et al., Middlebury): hue = direction, saturation = length relative to one radius shared by
  every tile of a picture. Right (+x) is red (255, 0, 0), down (+y) yellow, left blue, up violet; NaN is grey.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from leffa.flow import coordinate_grid, flow_epe, upsample_flow, warp
from leffa.probe import short_layer_name

# -- colour wheel -----------------------------------------------------------------------------------------------

_WHEEL_SEGMENTS = (  # (length, start colour, end colour): red -> yellow -> green -> cyan -> blue -> magenta -> red
    (15, (255, 0, 0), (255, 255, 0)),
    (6, (255, 255, 0), (0, 255, 0)),
    (4, (0, 255, 0), (0, 255, 255)),
    (11, (0, 255, 255), (0, 0, 255)),
    (13, (0, 0, 255), (255, 0, 255)),
    (6, (255, 0, 255), (255, 0, 0)),
)
INVALID_COLOUR = (128, 128, 128)
DIRECTION_COLOURS = {"right": (255, 0, 0), "down": (255, 234, 0), "left": (0, 197, 255), "up": (103, 0, 255)}
"""Full-length colours of the four axis directions (image coordinates, y down)."""


def colour_wheel() -> np.ndarray:
    """The 55 Middlebury wheel colours (float, 0..255), starting at red and going red-yellow-green-cyan-blue."""
    rows = []
    for length, start, end in _WHEEL_SEGMENTS:
        steps = np.arange(length)[:, None] / length
        rows.append(np.array(start)[None] * (1 - steps) + np.array(end)[None] * steps)
    return np.concatenate(rows).astype(np.float64)


_WHEEL = (colour_wheel() / 255.0).astype(np.float32)
_WHEEL_STEP = np.roll(_WHEEL, -1, axis=0) - _WHEEL  # colour change to the next wheel entry


def displacement_colours(displacement: np.ndarray, radius: float) -> np.ndarray:
    """``(H, W, 3)`` uint8 colours of displacements ``(H, W, 2)`` (x, y); ``radius`` = length of a full colour.

    Longer than ``radius`` is drawn darker (x0.75), as in the Middlebury code; non-finite entries are grey.
    """
    u = displacement[..., 0].astype(np.float32)
    v = displacement[..., 1].astype(np.float32)
    invalid = ~np.isfinite(u + v)
    u[invalid] = 0.0
    v[invalid] = 0.0
    length = np.hypot(u, v) / np.float32(max(radius, 1e-12))
    count = len(_WHEEL)
    position = (np.arctan2(-v, -u) / np.float32(np.pi) + 1) * np.float32(
        count / 2
    )  # right -> 0 or count, down -> count/4
    below = np.floor(position)
    fraction = (position - below)[..., None]
    below = below.astype(np.int32) % count
    colour = _WHEEL[below] + fraction * _WHEEL_STEP[below]
    inside = length <= 1.0 + 1e-6  # a radius taken from float32 data may round just below the longest length
    colour = np.where(inside[..., None], 1.0 - length[..., None] * (1.0 - colour), colour * np.float32(0.75))
    colour = np.rint(colour * 255.0).clip(0, 255).astype(np.uint8)
    colour[invalid] = INVALID_COLOUR
    return colour


def wheel_legend(height: int, width: int) -> np.ndarray:
    """A ``height`` x ``width`` picture of the colour wheel itself, centred, as wide as fits; outside is white."""
    radius = min(height, width) / 2.0
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    displacement = np.stack([xs - (width - 1) / 2.0, ys - (height - 1) / 2.0], axis=-1)
    picture = displacement_colours(displacement, radius=radius)
    picture[np.hypot(displacement[..., 0], displacement[..., 1]) > radius] = 255
    return picture


# -- flow geometry ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _cached_pixel_grid(height: int, width: int) -> torch.Tensor:
    return pixel_grid(height, width)


def pixel_grid(height: int, width: int, device=None) -> torch.Tensor:
    """``(height, width, 2)`` pixel centres in ``grid_sample`` units (``align_corners=False``): the identity flow."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) * 2 + 1) / height - 1
    xs = (torch.arange(width, device=device, dtype=torch.float32) * 2 + 1) / width - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1)


def to_image_size(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A ``(B, h, w, 2)`` flow at image ``size`` (upsampled and clamped as the Leffa loss does when coarser)."""
    flow = flow.detach().float()
    if tuple(flow.shape[1:3]) == tuple(size):
        return flow
    return upsample_flow(flow, size)


def pixel_displacement(flow: torch.Tensor) -> torch.Tensor:
    """``(B, H, W, 2)`` displacement in pixels of an image-size flow from each pixel's own centre."""
    height, width = flow.shape[1:3]
    scale = torch.tensor([width / 2.0, height / 2.0], device=flow.device)
    return (flow - _cached_pixel_grid(height, width).to(flow.device)) * scale


def warp_valid(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``leffa.flow.warp`` that reads NaN positions (no correspondence) as outside the image, i.e. zero."""
    return warp(image, torch.where(torch.isfinite(flow), flow, torch.full_like(flow, 2.0)))


def masked_mse(warped: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-sample ``mean(((warped - target) * mask)^2)`` over all pixels: the Leffa loss term (not area-normalised)."""
    difference = warped - target
    if mask is not None:
        difference = difference * mask
    return difference.pow(2).flatten(1).mean(dim=1)


def ideal_token_flow(gt_flow: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The best a layer with an ``grid`` = (h, w) token grid can do: ``(B, h, w, 2)`` from an image-size ground truth.

    Each token gets the mean ground-truth position over its cell's pixels that have one; a token with none keeps its
    own position in the attention-flow convention (``leffa.flow.coordinate_grid``), as an identity attention would.
    """
    batch, height, width, _ = gt_flow.shape
    rows, columns = grid
    if height % rows or width % columns:
        raise ValueError(f"a {rows}x{columns} token grid does not tile a {height}x{width} flow")
    cells = gt_flow.float().reshape(batch, rows, height // rows, columns, width // columns, 2)
    valid = torch.isfinite(cells).all(dim=-1, keepdim=True)
    total = torch.where(valid, cells, torch.zeros_like(cells)).sum(dim=(2, 4))
    count = valid.sum(dim=(2, 4))
    own = coordinate_grid(rows, columns).reshape(1, rows, columns, 2).expand(batch, -1, -1, -1)
    return torch.where(count > 0, total / count.clamp(min=1), own)


# -- names ------------------------------------------------------------------------------------------------------

# -- pictures of tensors ----------------------------------------------------------------------------------------

_HEAT_ANCHORS = np.array(  # an inferno-like ramp: black -> purple -> red -> orange -> pale yellow
    [(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)], dtype=np.float32
)
_HEAT_STEP = np.diff(_HEAT_ANCHORS, axis=0)


def heat_colours(values: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 heat colours of ``values`` in [0, 1] (clipped)."""
    steps = len(_HEAT_ANCHORS) - 1
    position = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0) * np.float32(steps)
    below = np.minimum(position.astype(np.int32), steps - 1)
    fraction = (position - below)[..., None]
    return np.rint(_HEAT_ANCHORS[below] + fraction * _HEAT_STEP[below]).astype(np.uint8)


def image_array(image: torch.Tensor) -> np.ndarray:
    """One ``(3, H, W)`` image in [-1, 1] -> ``(H, W, 3)`` uint8."""
    array = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return array.permute(1, 2, 0).numpy()


def _overlay(base: np.ndarray, heat: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Blend heat colours over a dimmed grey copy of ``base``; ``weight`` (H, W) in [0, 1] is the heat opacity."""
    grey = base.astype(np.float64).mean(axis=-1, keepdims=True) * 0.5
    alpha = np.clip(weight, 0, 1)[..., None] * 0.85 + 0.15
    return np.round(grey * (1 - alpha) + heat.astype(np.float64) * alpha).astype(np.uint8)


def _mark(picture: Image.Image, points, scale: tuple[float, float], colour=(0, 255, 0)) -> None:
    draw = ImageDraw.Draw(picture)
    for x, y in points:
        cx, cy = (x + 0.5) * scale[0], (y + 0.5) * scale[1]
        draw.line([(cx - 5, cy), (cx + 5, cy)], fill=colour, width=2)
        draw.line([(cx, cy - 5), (cx, cy + 5)], fill=colour, width=2)


# -- tiles and layout -------------------------------------------------------------------------------------------


@dataclass
class Tile:
    """One picture with a two-line caption."""

    picture: np.ndarray  # (H, W, 3) uint8 at image resolution
    title: str
    detail: str = ""
    marks: list = field(default_factory=list)  # image-pixel points to draw a cross on


@dataclass
class Row:
    """One row of tiles: the inputs, or one attention layer (``layer`` = full name, shown in the HTML page)."""

    label: str
    tiles: list[Tile]
    layer: str = ""


def _resolution(flow_shape, image_size) -> str:
    height, width = flow_shape
    if (height, width) == tuple(image_size):
        return f"{height}x{width}"
    return f"{height}x{width} 1/{round(image_size[0] / height)}"


def wheel_radius(displacements: list[np.ndarray], gt_displacement: np.ndarray | None = None) -> float:
    """The colour-wheel radius (pixels) shared by a picture's tiles.

    With a ground truth, its largest displacement: the scale that matters, so a wrong layer shows up as darker
    (longer) or differently coloured instead of washing the truth out. Otherwise the largest displacement drawn.
    """
    if gt_displacement is not None and np.isfinite(gt_displacement).any():
        candidates = [gt_displacement]
    else:
        candidates = displacements
    lengths = [np.nanmax(np.hypot(d[..., 0], d[..., 1]), initial=0.0) for d in candidates]
    return float(max(lengths, default=0.0)) or 1.0


def flow_rows(
    reference: torch.Tensor,
    flows: dict[str, torch.Tensor],
    target: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    gt_flow: torch.Tensor | None = None,
    points: list[tuple[int, int]] | None = None,
    attention: dict[str, torch.Tensor] | None = None,
    sample: int = 0,
    radius: float | None = None,
) -> list[Row]:
    """The tiles of one sample: an inputs row, then per layer the flow, the warped reference, the error, heatmaps.

    ``attention`` maps a layer to ``(B, P, h, w)`` maps for the ``points`` (x, y) in image pixels. ``radius`` (pixels)
    is the colour-wheel radius; by default ``wheel_radius`` of this sample's tiles.
    """
    if reference.ndim != 4 or reference.shape[1] != 3:
        raise ValueError(f"reference must be (B, 3, H, W), got {tuple(reference.shape)}")
    size = (reference.shape[-2], reference.shape[-1])
    reference = reference[sample : sample + 1].detach().float().cpu()
    target = None if target is None else target[sample : sample + 1].detach().float().cpu()
    mask = None if mask is None else mask[sample : sample + 1].detach().float().cpu()
    points = list(points or [])
    image_flows = {name: to_image_size(flow[sample : sample + 1].cpu(), size) for name, flow in flows.items()}
    if gt_flow is not None:
        gt_flow = torch.as_tensor(gt_flow).float().cpu()
        gt_flow = gt_flow[None] if gt_flow.ndim == 3 else gt_flow[sample : sample + 1]
        if tuple(gt_flow.shape[1:3]) != size:
            raise ValueError(f"ground-truth flow is {tuple(gt_flow.shape[1:3])}, the images are {size}")
    displacements = {name: pixel_displacement(flow)[0].numpy() for name, flow in image_flows.items()}
    gt_displacement = None if gt_flow is None else pixel_displacement(gt_flow)[0].numpy()
    if radius is None:
        radius = wheel_radius(list(displacements.values()), gt_displacement)

    inputs = [Tile(image_array(reference[0]), "reference", f"{size[0]}x{size[1]}")]
    if target is not None:
        inputs.append(Tile(image_array(target[0]), "target", "+ points" if points else "", marks=points))
    if mask is not None:
        inputs.append(Tile(image_array(mask[0].expand(3, -1, -1) * 2 - 1), "mask", "loss region"))
    if gt_flow is not None:
        assert gt_displacement is not None  # computed whenever gt_flow is given
        inputs.append(Tile(displacement_colours(gt_displacement, radius), "ground-truth flow", "grey: none"))
        warped = warp_valid(reference, gt_flow)
        detail = "" if target is None else f"MSE {masked_mse(warped, target, mask).item():.4f}"
        inputs.append(Tile(image_array(warped[0]), "warped by GT", detail))
    legend = Tile(wheel_legend(*size), "colour wheel", f"radius {radius:.3g} px")
    inputs.append(legend)
    rows = [Row("inputs", inputs)]

    for name, flow in image_flows.items():
        tag = f"{short_layer_name(name)} {_resolution(flows[name].shape[1:3], size)}"
        detail = "flow"
        if gt_flow is not None:
            detail = f"flow, EPE {flow_epe(flow[0], gt_flow[0]):.2f} px"
        tiles = [Tile(displacement_colours(displacements[name], radius), tag, detail)]
        warped = warp(reference, flow)
        tiles.append(Tile(image_array(warped[0]), tag, "warped reference"))
        if target is not None:
            error = (warped - target).abs().mean(dim=1)[0] / 2.0
            heat = heat_colours(error.numpy() * 2.0)  # full colour at a mean error of half the range
            if mask is not None:
                heat = np.round(heat * (0.25 + 0.75 * mask[0, 0].numpy()[..., None])).astype(np.uint8)
            mse = masked_mse(warped, target, mask).item()
            tiles.append(Tile(heat, tag, f"error, {'masked ' if mask is not None else ''}MSE {mse:.4f}"))
        layer_attention = None if attention is None else attention.get(name)
        for index, (x, y) in enumerate(points):
            if layer_attention is None:
                break
            weights = layer_attention[sample, index].detach().float().cpu()
            peak = weights.max().clamp(min=1e-12)
            up = torch.nn.functional.interpolate((weights / peak)[None, None], size=size, mode="nearest")[0, 0]
            heat = _overlay(image_array(reference[0]), heat_colours(up.numpy()), up.numpy())
            row, column = divmod(int(weights.argmax()), weights.shape[1])
            peak_xy = (
                (column + 0.5) * size[1] / weights.shape[1] - 0.5,
                (row + 0.5) * size[0] / weights.shape[0] - 0.5,
            )
            tiles.append(Tile(heat, tag, f"attn of ({x},{y}), max {weights.max().item():.3f}", marks=[peak_xy]))
        rows.append(Row(short_layer_name(name), tiles, layer=name))
    return rows


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def tile_picture(tile: Tile, height: int, font_size: int = 12) -> Image.Image:
    """A tile scaled to ``height`` pixels (nearest when enlarging) under its two-line caption."""
    picture = Image.fromarray(tile.picture)
    scale = height / picture.height
    width = max(1, round(picture.width * scale))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    picture = picture.resize((width, height), resample)
    if tile.marks:
        _mark(picture, tile.marks, (width / tile.picture.shape[1], height / tile.picture.shape[0]))
    font = _font(font_size)
    band = 2 * (font_size + 3) + 4
    canvas = Image.new("RGB", (width, height + band), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((3, 2), _fit(draw, tile.title, font, width - 6), fill=(0, 0, 0), font=font)
    draw.text((3, font_size + 5), _fit(draw, tile.detail, font, width - 6), fill=(70, 70, 70), font=font)
    canvas.paste(picture, (0, band))
    return canvas


def default_tile_height(image_height: int) -> int:
    """Small images are enlarged (to 224 px) so captions fit; large ones shrunk (to 320 px) to keep the PNG small."""
    return int(min(max(image_height, 224), 320))


def compose_grid(blocks: list[list[Row]], tile_height: int, gap: int = 4) -> Image.Image:
    """Lay out rows of captioned tiles (one block per sample, a wider gap between blocks) on a white canvas."""
    rendered = [[[tile_picture(tile, tile_height) for tile in row.tiles] for row in rows] for rows in blocks]
    cell_width = max(tile.width for rows in rendered for row in rows for tile in row)
    cell_height = max(tile.height for rows in rendered for row in rows for tile in row)
    columns = max(len(row) for rows in rendered for row in rows)
    row_count = sum(len(rows) for rows in rendered)
    width = columns * (cell_width + gap) + gap
    height = row_count * (cell_height + gap) + gap + (len(blocks) - 1) * 4 * gap
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    top = gap
    for rows in rendered:
        for row in rows:
            for column, tile in enumerate(row):
                canvas.paste(tile, (gap + column * (cell_width + gap), top))
            top += cell_height + gap
        top += 4 * gap
    return canvas


def render_flow_grid(
    reference: torch.Tensor,
    flows: dict[str, torch.Tensor],
    target: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    gt_flow: torch.Tensor | None = None,
    points: list[tuple[int, int]] | None = None,
    attention: dict[str, torch.Tensor] | None = None,
    max_samples: int = 4,
    tile_height: int | None = None,
    radius: float | None = None,
) -> Image.Image:
    """One labelled PNG grid of attention flows, for the CLI and for training dumps.

    ``reference``/``target`` ``(B, 3, H, W)`` in [-1, 1]; ``flows`` ``{layer: (B, h, w, 2)}`` in ``grid_sample`` units
    (any ``h, w``: coarser flows are upsampled); ``mask`` ``(B, 1, H, W)``; ``gt_flow`` ``(B, H, W, 2)`` or
    ``(H, W, 2)`` with NaN where no correspondence. Each of the first ``max_samples`` samples gets a block: an
    inputs row (reference, target, mask, ground truth, colour-wheel legend) and one row per layer (flow, warped
    reference, error against the target, attention heatmaps for ``points``).
    """
    samples = min(reference.shape[0], max_samples)
    blocks = [
        flow_rows(reference, flows, target, mask, gt_flow, points, attention, sample=index, radius=radius)
        for index in range(samples)
    ]
    return compose_grid(blocks, tile_height or default_tile_height(reference.shape[-2]))


# -- HTML -------------------------------------------------------------------------------------------------------

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
figure {{ display: inline-block; margin: 0 6px 6px 0; vertical-align: top; }}
figcaption {{ font-size: 12px; max-width: {width}px; }}
img {{ image-rendering: pixelated; height: {height}px; }}
.layer {{ display: none; }} .layer.shown, body.all .layer {{ display: block; }}
#bar {{ margin: 0.6em 0; }} #name {{ font-family: monospace; margin-left: 1em; }}
</style></head><body>
<h1>{title}</h1>
<p>{note}</p>
<div>{inputs}</div>
<div id="bar"><button id="prev">&larr; previous</button> <input id="slider" type="range" min="0" max="{last}" value="0">
<button id="next">next &rarr;</button> <label><input id="all" type="checkbox"> all layers</label>
<span id="name"></span></div>
{layers}
<script>
const layers = Array.from(document.querySelectorAll('.layer'));
const slider = document.getElementById('slider');
function show(i) {{
  i = Math.max(0, Math.min(layers.length - 1, i)); slider.value = i;
  layers.forEach((el, j) => el.classList.toggle('shown', j === i));
  const label = layers.length ? (i + 1) + '/' + layers.length + '  ' + layers[i].dataset.name : '';
  document.getElementById('name').textContent = label;
}}
slider.oninput = () => show(+slider.value);
document.getElementById('prev').onclick = () => show(+slider.value - 1);
document.getElementById('next').onclick = () => show(+slider.value + 1);
document.getElementById('all').onchange = (e) => document.body.classList.toggle('all', e.target.checked);
document.addEventListener('keydown', (e) => {{
  if (e.key === 'ArrowLeft') show(+slider.value - 1);
  if (e.key === 'ArrowRight') show(+slider.value + 1);
}});
show(0);
</script></body></html>
"""


def _png_data(picture: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(tile: Tile, height: int) -> str:
    """A captioned ``<figure>``; pictures taller than the display are embedded at display size to keep pages small."""
    image = Image.fromarray(tile.picture)
    scale = min(1.0, height / image.height)
    if scale < 1.0:
        image = image.resize((max(1, round(image.width * scale)), height), Image.Resampling.LANCZOS)
    if tile.marks:
        _mark(image, tile.marks, (scale, scale))
    picture = np.asarray(image)
    caption = html.escape(tile.title) + ("<br>" + html.escape(tile.detail) if tile.detail else "")
    image_tag = f'<img src="{_png_data(picture)}" alt="{html.escape(tile.title)}">'
    return f"<figure>{image_tag}<figcaption>{caption}</figcaption></figure>"


def flow_page(rows: list[Row], title: str = "Leffa attention flow", note: str = "", tile_height: int = 224) -> str:
    """The HTML page of ``flow_rows`` output: inputs on top, one layer at a time below (slider, buttons, arrow keys)."""
    first = rows[0].tiles[0].picture
    width = math.ceil(tile_height * first.shape[1] / first.shape[0])
    inputs = "".join(_figure(tile, tile_height) for tile in rows[0].tiles)
    layers = "\n".join(
        f'<div class="layer" data-name="{html.escape(row.layer)}"><h3>{html.escape(row.layer)}</h3>'
        + "".join(_figure(tile, tile_height) for tile in row.tiles)
        + "</div>"
        for row in rows[1:]
    )
    return _PAGE.format(
        title=html.escape(title),
        note=html.escape(note),
        inputs=inputs,
        layers=layers,
        last=max(len(rows) - 2, 0),
        height=tile_height,
        width=width,
    )


def render_flow_html(
    reference: torch.Tensor,
    flows: dict[str, torch.Tensor],
    target: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    gt_flow: torch.Tensor | None = None,
    points: list[tuple[int, int]] | None = None,
    attention: dict[str, torch.Tensor] | None = None,
    title: str = "Leffa attention flow",
    note: str = "",
    tile_height: int | None = None,
    radius: float | None = None,
) -> str:
    """A self-contained HTML page (images embedded as base64 PNG) flipping through layers; first sample only."""
    rows = flow_rows(reference, flows, target, mask, gt_flow, points, attention, sample=0, radius=radius)
    return flow_page(rows, title, note, tile_height or default_tile_height(reference.shape[-2]))
