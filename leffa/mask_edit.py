"""Corrections to a try-on mask, the one rule shared by ``leffa tryon``, the Python API, the server and the demo.

Automatic masks are the most common cause of a bad try-on (a long sleeve cut short, a dress masked as a top, trousers
left in place under a skirt), and a user needs to fix them without redrawing. Three corrections, applied in this
order to the binarised mask (``leffa.images.mask_array``, white = regenerate):

1. ``grow`` pixels: every pixel within ``grow`` of the mask joins it (dilation by a disk of that radius);
2. ``shrink`` pixels: every pixel within ``shrink`` of the outside leaves it (erosion by a disk). Grow then shrink
   by the same amount closes gaps narrower than twice that without moving the outline;
3. ``length`` (lower body and dresses): the fraction of the mask's height kept, from its top row down; ``0.5`` cuts
   a full-length mask at half its height (a knee-length skirt instead of trousers). ``None`` or ``1`` keeps it.

The disk operations are ``leffa.preprocess.masks.grow`` / ``shrink`` (exact Euclidean disks through scipy's
distance transform), the same ones the automatic masks are drawn with. Brush strokes (the demo's editor) are
``paint``: added and erased pixels applied after the corrections.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from leffa.errors import LeffaError
from leffa.images import mask_array

LENGTH_TYPES = ("lower_body", "dresses")  # garment types whose length can be cut
MAX_EDIT = 4096  # pixels; larger than any photo side the server accepts, so only a typo reaches it


@dataclass(frozen=True)
class MaskEdit:
    """Pixels to grow and shrink by, and the garment length (fraction of the mask's height from its top)."""

    grow: int = 0
    shrink: int = 0
    length: float | None = None

    @property
    def is_identity(self) -> bool:
        return self.grow == 0 and self.shrink == 0 and (self.length is None or self.length >= 1)

    def check(self, garment_type: str = "upper_body") -> MaskEdit:
        """This edit when its values make sense for ``garment_type``, else a one-line ``LeffaError``."""
        for name, value in (("mask_grow", self.grow), ("mask_shrink", self.shrink)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= MAX_EDIT:
                raise LeffaError(f"{name} {value!r}: give a whole number of pixels from 0 to {MAX_EDIT}", name)
        if self.length is not None:
            length = self.length
            if (
                isinstance(length, bool)
                or not isinstance(length, (int, float))
                or not math.isfinite(length)
                or not 0 < length <= 1
            ):
                raise LeffaError(
                    f"garment_length {length!r}: give a fraction of the mask's height in (0, 1]", "garment_length"
                )
            if length < 1 and garment_type not in LENGTH_TYPES:
                raise LeffaError(
                    f"garment_length {length}: applies to {' and '.join(LENGTH_TYPES)} only, not {garment_type}",
                    "garment_length",
                )
        return self


def edit_mask(
    mask: Image.Image,
    edit: MaskEdit,
    garment_type: str = "upper_body",
    add: np.ndarray | None = None,
    erase: np.ndarray | None = None,
) -> Image.Image:
    """``mask`` (any mode; binarised, white = regenerate) with ``edit`` applied, then the brush: ``add`` and
    ``erase`` are ``(H, W)`` bool arrays at the mask's size (pixels painted in and out). Returns an ``L`` image
    of 0 and 255 at the mask's size."""
    edit.check(garment_type)
    region = edit_array(mask_array(mask), edit)
    for name, strokes, value in (("add", add, True), ("erase", erase, False)):
        if strokes is None:
            continue
        strokes = np.asarray(strokes, dtype=bool)
        if strokes.shape != region.shape:
            raise LeffaError(
                f"brush strokes ({name}) are {strokes.shape[1]}x{strokes.shape[0]} but the mask is "
                f"{region.shape[1]}x{region.shape[0]}"
            )
        region[strokes] = value
    return Image.fromarray(region.astype(np.uint8) * 255)


def edit_array(region: np.ndarray, edit: MaskEdit) -> np.ndarray:
    """The corrections on a ``(H, W)`` bool mask (a new array): grow, shrink, then cut to ``edit.length``."""
    from leffa.preprocess.masks import grow, shrink

    region = grow(region, edit.grow)
    region = shrink(region, edit.shrink)
    if edit.length is not None and edit.length < 1 and region.any():
        rows = np.flatnonzero(region.any(axis=1))
        top, bottom = int(rows[0]), int(rows[-1]) + 1
        cut = top + max(1, math.ceil((bottom - top) * edit.length))
        region[cut:] = False
    return region
