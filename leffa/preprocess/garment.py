"""Garment clean-up: find the garment in a product photo, crop to it and centre it on a white 3:4 canvas.

The try-on models were trained on shop images: one garment, centred, on white, at 3:4. The garment is found from
the alpha channel when the image has a real one; otherwise from the background colour, estimated on the image
border (a plain studio backdrop, white or not): pixels far from it in colour are garment. A busy border (no
uniform backdrop) gives no crop: the whole picture is kept and only fitted onto the canvas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from leffa import images

BORDER = 0.03  # share of each side read as backdrop
UNIFORM_SPREAD = 12.0  # a backdrop's border pixels stay within this colour distance of their median (0-255 scale)
MIN_DISTANCE = 28.0  # colour distance from the backdrop above which a pixel is garment
ALPHA_THRESHOLD = 16


@dataclass
class GarmentCut:
    """Where the garment is: its soft alpha (H, W) in [0, 1], its box (left, top, right, bottom), and how found."""

    alpha: np.ndarray
    box: tuple[int, int, int, int]
    method: str  # "alpha", "backdrop" or "none"


def border_pixels(rgb: np.ndarray, fraction: float = BORDER) -> np.ndarray:
    height, width = rgb.shape[:2]
    t, s = max(1, round(height * fraction)), max(1, round(width * fraction))
    return np.concatenate([rgb[:t].reshape(-1, 3), rgb[-t:].reshape(-1, 3), rgb[:, :s].reshape(-1, 3),
                           rgb[:, -s:].reshape(-1, 3)])  # fmt: skip


def backdrop_colour(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """Median border colour and the border's spread about it (90th percentile of the colour distances)."""
    border = border_pixels(rgb)
    colour = np.median(border, axis=0)
    spread = float(np.percentile(np.linalg.norm(border - colour, axis=1), 90))
    return colour, spread


def main_regions(foreground: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """Foreground with holes filled and specks (< ``fraction`` of the largest piece) removed."""
    filled = ndimage.binary_fill_holes(foreground)
    regions, count = ndimage.label(filled)
    if count <= 1:
        return filled
    sizes = ndimage.sum_labels(filled, regions, index=np.arange(1, count + 1))
    return np.isin(regions, 1 + np.flatnonzero(sizes >= fraction * sizes.max()))


def bounding_box(region: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def find_garment(image: Image.Image) -> GarmentCut:
    """The garment's alpha and box, from the alpha channel or the backdrop colour (see the module notes)."""
    width, height = image.size
    whole = (0, 0, width, height)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        alpha = np.asarray(image.convert("RGBA"))[:, :, 3]
        if alpha.min() < 255 - ALPHA_THRESHOLD:
            solid = main_regions(alpha > ALPHA_THRESHOLD)
            if solid.any():
                return GarmentCut(alpha.astype(np.float32) / 255 * grow_soft(solid), bounding_box(solid), "alpha")
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    colour, spread = backdrop_colour(rgb)
    if spread > UNIFORM_SPREAD:
        return GarmentCut(np.ones((height, width), np.float32), whole, "none")
    distance = np.linalg.norm(rgb - colour, axis=2)
    threshold = max(MIN_DISTANCE, 3 * spread)
    solid = main_regions(distance > threshold)
    if not solid.any():
        return GarmentCut(np.ones((height, width), np.float32), whole, "none")
    # Soft edge: fully garment past 1.5x the threshold, fading to backdrop at half of it; holes inside stay opaque.
    soft = np.clip((distance - threshold / 2) / threshold, 0, 1)
    alpha = np.where(ndimage.binary_erosion(solid, iterations=2), 1.0, soft * grow_soft(solid))
    return GarmentCut(alpha.astype(np.float32), bounding_box(solid), "backdrop")


def grow_soft(region: np.ndarray, radius: int = 2) -> np.ndarray:
    """The region grown by ``radius`` pixels, as floats: keeps antialiased edges, drops far-away specks."""
    return ndimage.binary_dilation(region, iterations=radius).astype(np.float32)


def clean_garment(
    image: Image.Image, size: tuple[int, int] = (1024, 768), margin: float = 0.05
) -> tuple[Image.Image, GarmentCut]:
    """The garment cut out, scaled to fit ``size`` = (H, W) less ``margin`` on each side, centred on white."""
    cut = find_garment(image)
    left, top, right, bottom = cut.box
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)[top:bottom, left:right]
    alpha = cut.alpha[top:bottom, left:right, None]
    on_white = Image.fromarray((rgb * alpha + 255 * (1 - alpha)).round().astype(np.uint8))
    height, width = size
    box_w, box_h = width * (1 - 2 * margin), height * (1 - 2 * margin)
    factor = min(box_w / on_white.width, box_h / on_white.height)
    fitted = images.resize(on_white, (max(1, round(on_white.height * factor)), max(1, round(on_white.width * factor))))
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(fitted, ((width - fitted.width) // 2, (height - fitted.height) // 2))
    return canvas, cut
