"""Garment-agnostic masks (1 = region the try-on model repaints) from a parsing map and body keypoints.

Two mask styles (``mask_style``): ``upstream`` (the default) is the authors' rules from Leffa's app, which the
released models were demonstrated with, with a few documented fixes (``leffa.preprocess.upstream_masks``);
``tight`` is this project's own rules below, which hug the garment more closely. Each comes in the two model
flavours ``style="hd"`` (VITON-HD model) and ``"dc"`` (DressCode model).

The ``tight`` rules, for a person label map (``parsing.PERSON_LABELS``: ATR classes + neck + glove) and OpenPose
keypoints in the same pixel frame. All lengths are fractions of the image height, so the rules hold at any
resolution.

1. *Garment*: the pixels of the garment's own classes (for a top worn as part of a dress: the dress above the hip
   line), grown by a margin, because the new garment need not have the old one's outline.
2. *Limbs*: bands along the keypoint bones the garment can cover: arms (shoulder -> elbow -> wrist, the forearm
   bone extended past the wrist a little, so long sleeves fit) for tops and dresses, legs (hip -> knee -> ankle)
   for bottoms, hip -> knee for dresses; and the torso quadrilateral (shoulders to hips, to knees for dresses), so
   a short top can become a long one.
3. *Kept*: what the new garment never covers: the head (face, hat, sunglasses), hands, feet, the arms for bottoms,
   the other garment (bottoms or a dress's skirt for a top, the top for bottoms) and bags; in the DressCode-like
   style also hair and scarves. The other garment and accessories shrink a little first, so the mask overlaps
   their edges (a seam to blend); head, hands, feet and arms-for-bottoms never do.
4. mask = (garment + limbs + neck) - kept, holes filled, kept parts cut out again, and specks dropped.

Hands are the arm (or glove) pixels past the wrist (beyond the line through the wrist across the forearm); feet
are shoes and leg pixels below the ankle. Both stay even where a band or margin reaches over them.

Styles: ``hd`` (VITON-HD-like, upper-body photos) uses wider bands and margins and keeps one connected region;
``dc`` (DressCode-like, full-body photos) uses narrower bands plus a band joining the shoulders, keeps hair and
scarves, and keeps every region larger than a speck. A side whose wrist (or ankle) was not detected has no
known limb end: its parsed arm (leg) is masked whole, and its hand (foot) cannot be protected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from leffa import images
from leffa.errors import LeffaError
from leffa.preprocess.openpose import KEYPOINT_NAMES
from leffa.preprocess.parsing import PERSON_LABELS
from leffa.preprocess.upstream_masks import upstream_mask

GARMENT_TYPES = ("upper_body", "lower_body", "dresses")
STYLES = ("hd", "dc")
MASK_STYLES = ("upstream", "tight")

K = {name: index for index, name in enumerate(KEYPOINT_NAMES)}


@dataclass(frozen=True)
class MaskStyle:
    arm_width: float  # band widths and margins: fractions of the image height
    leg_width: float
    garment_margin: float
    neck_margin: float
    kept_shrink: float  # kept regions shrink by this much so the mask overlaps their edges a little
    forearm_extension: float  # forearm bone length factor past the wrist
    keep_hair: bool
    shoulder_band: bool
    largest_region_only: bool
    speck_fraction: float = 0.02  # regions smaller than this share of the largest one are dropped


STYLE_RULES = {
    "hd": MaskStyle(arm_width=0.11, leg_width=0.12, garment_margin=0.045, neck_margin=0.01, kept_shrink=0.004,
                    forearm_extension=1.2, keep_hair=False, shoulder_band=False, largest_region_only=True),
    "dc": MaskStyle(arm_width=0.085, leg_width=0.1, garment_margin=0.035, neck_margin=0.01, kept_shrink=0.004,
                    forearm_extension=1.15, keep_hair=True, shoulder_band=True, largest_region_only=False),
}  # fmt: skip

# Classes the new garment replaces, per type; the "skin it may cover" is added by the limb bands.
GARMENT_CLASSES = {
    "upper_body": ("upper-clothes",),
    "lower_body": ("pants", "skirt", "belt", "left-leg", "right-leg"),
    "dresses": ("dress", "upper-clothes", "skirt", "pants", "belt"),
}
# The other garment, which stays.
OTHER_GARMENT = {
    "upper_body": ("pants", "skirt", "belt"),
    "lower_body": ("upper-clothes", "dress"),
    "dresses": (),
}
HEAD = ("face", "hat", "sunglasses")
ACCESSORIES = ("bag",)
SHOES = ("left-shoe", "right-shoe")


def pixels(labels: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    return np.isin(labels, [PERSON_LABELS.index(name) for name in names])


def grow(region: np.ndarray, radius: float) -> np.ndarray:
    """All pixels within ``radius`` of ``region`` (an exact disk dilation through the distance transform)."""
    if radius <= 0 or not region.any():
        return region.copy()
    return ndimage.distance_transform_edt(~region) <= radius


def shrink(region: np.ndarray, radius: float) -> np.ndarray:
    """``region`` without the pixels closer than ``radius`` to its outside."""
    if radius <= 0 or not region.any():
        return region.copy()
    return ndimage.distance_transform_edt(region) > radius


def band(shape: tuple[int, int], start: np.ndarray, end: np.ndarray, width: float) -> np.ndarray:
    """Pixels whose centre lies within ``width / 2`` of the segment ``start`` -> ``end`` (x, y), round caps."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    direction = (end - start).astype(np.float32)
    length2 = float(direction @ direction)
    t = (
        np.zeros_like(xs)
        if length2 == 0
        else np.clip(((xs - start[0]) * direction[0] + (ys - start[1]) * direction[1]) / length2, 0, 1)
    )
    dx, dy = xs - (start[0] + t * direction[0]), ys - (start[1] + t * direction[1])
    return dx * dx + dy * dy <= (width / 2) ** 2


def polygon(shape: tuple[int, int], points: list[np.ndarray]) -> np.ndarray:
    canvas = Image.new("1", (shape[1], shape[0]))
    ImageDraw.Draw(canvas).polygon([tuple(map(float, p)) for p in points], fill=1)
    return np.asarray(canvas, dtype=bool)


class Skeleton:
    """Keypoints by name, with "found" meaning confidence > 0 (OpenPose writes zeros for missing parts)."""

    def __init__(self, keypoints: np.ndarray):
        keypoints = np.asarray(keypoints, dtype=np.float32)
        if keypoints.shape != (len(KEYPOINT_NAMES), 3):
            raise LeffaError(f"keypoints: expected shape (18, 3) (x, y, confidence), got {keypoints.shape}")
        self.keypoints = keypoints

    def found(self, *names: str) -> bool:
        return all(self.keypoints[K[name], 2] > 0 for name in names)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.keypoints[K[name], :2]


def arm_region(labels: np.ndarray, skeleton: Skeleton, side: str, style: MaskStyle) -> tuple[np.ndarray, bool]:
    """The band along one arm and whether its wrist was found (else the parsed arm itself, grown)."""
    shape, height = labels.shape, labels.shape[0]
    width = style.arm_width * height
    shoulder, elbow, wrist = f"{side}-shoulder", f"{side}-elbow", f"{side}-wrist"
    region = np.zeros(shape, dtype=bool)
    if skeleton.found(shoulder, elbow):
        region |= band(shape, skeleton[shoulder], skeleton[elbow], width)
    if skeleton.found(elbow, wrist):
        end = skeleton[elbow] + style.forearm_extension * (skeleton[wrist] - skeleton[elbow])
        region |= band(shape, skeleton[elbow], end, width)
        return region, True
    return region | grow(pixels(labels, (f"{side}-arm",)), style.garment_margin * height / 2), False


def hand_region(labels: np.ndarray, skeleton: Skeleton, side: str) -> np.ndarray:
    """Arm (or glove) pixels past the wrist: beyond the line through the wrist across the forearm, and no
    farther from the wrist than the forearm is long."""
    elbow, wrist = skeleton[f"{side}-elbow"], skeleton[f"{side}-wrist"]
    forearm = wrist - elbow
    length = float(np.hypot(*forearm))
    if length == 0:
        return np.zeros(labels.shape, dtype=bool)
    ys, xs = np.mgrid[0 : labels.shape[0], 0 : labels.shape[1]].astype(np.float32)
    along = ((xs - wrist[0]) * forearm[0] + (ys - wrist[1]) * forearm[1]) / length
    near = np.hypot(xs - wrist[0], ys - wrist[1]) <= length
    return pixels(labels, (f"{side}-arm", "glove")) & (along > 0) & near


def leg_region(shape: tuple[int, int], skeleton: Skeleton, side: str, width: float, to_ankle: bool) -> np.ndarray:
    hip, knee, ankle = f"{side}-hip", f"{side}-knee", f"{side}-ankle"
    region = np.zeros(shape, dtype=bool)
    if skeleton.found(hip, knee):
        region |= band(shape, skeleton[hip], skeleton[knee], width)
    if to_ankle and skeleton.found(knee, ankle):
        region |= band(shape, skeleton[knee], skeleton[ankle], width)
    return region


def torso_region(shape: tuple[int, int], skeleton: Skeleton, garment_type: str) -> np.ndarray:
    """Shoulders-to-hips quadrilateral (tops), hips-to-knees (bottoms), shoulders-to-knees (dresses)."""
    top = ("right-shoulder", "left-shoulder") if garment_type != "lower_body" else ("right-hip", "left-hip")
    bottom = ("right-knee", "left-knee") if garment_type != "upper_body" else ("right-hip", "left-hip")
    if garment_type == "dresses" and not skeleton.found(*bottom):
        bottom = ("right-hip", "left-hip")
    if not skeleton.found(*top, *bottom):
        return np.zeros(shape, dtype=bool)
    return polygon(shape, [skeleton[top[0]], skeleton[top[1]], skeleton[bottom[1]], skeleton[bottom[0]]])


def feet_region(labels: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    """Shoes, and leg skin below each found ankle (a bare foot)."""
    feet = pixels(labels, SHOES)
    rows = np.arange(labels.shape[0])[:, None]
    for side in ("left", "right"):
        if skeleton.found(f"{side}-ankle"):
            feet |= pixels(labels, (f"{side}-leg",)) & (rows > skeleton[f"{side}-ankle"][1])
    return feet


def keep_significant(mask: np.ndarray, largest_only: bool, speck_fraction: float) -> np.ndarray:
    regions, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = ndimage.sum_labels(mask, regions, index=np.arange(1, count + 1))
    chosen = (
        [int(np.argmax(sizes)) + 1] if largest_only else list(1 + np.flatnonzero(sizes >= speck_fraction * sizes.max()))
    )
    return np.isin(regions, chosen)


def check_mask_options(garment_type: str, style: str, mask_style: str) -> None:
    """Refuse an unknown garment type, model style or mask style in one line (before any model is loaded)."""
    if garment_type not in GARMENT_TYPES:
        raise LeffaError(f"--type {garment_type}: unknown garment type (choose from {', '.join(GARMENT_TYPES)})")
    if style not in STYLES:
        raise LeffaError(f"--style {style}: unknown model style (choose from {', '.join(STYLES)})")
    if mask_style not in MASK_STYLES:
        raise LeffaError(f"--mask-style {mask_style}: unknown mask style (choose from {', '.join(MASK_STYLES)})")


def agnostic_mask(
    labels: np.ndarray,
    keypoints: np.ndarray,
    garment_type: str = "upper_body",
    style: str = "hd",
    mask_style: str = "upstream",
) -> np.ndarray:
    """``(H, W)`` bool mask of the region to repaint for ``garment_type``, for the ``style`` model (``hd``/``dc``)
    by the ``mask_style`` rules (``upstream``: the authors', ``tight``: ours; see the module notes)."""
    check_mask_options(garment_type, style, mask_style)
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise LeffaError(f"parsing map: expected a 2-d label map, got shape {labels.shape}")
    if labels.max(initial=0) >= len(PERSON_LABELS):
        raise LeffaError(
            f"parsing map: label {int(labels.max())} is outside the person label set (0..{len(PERSON_LABELS) - 1})"
        )
    skeleton = Skeleton(keypoints)
    mask = (
        upstream_mask(labels, skeleton.keypoints, garment_type, style)
        if mask_style == "upstream"
        else tight_mask(labels, skeleton, garment_type, style)
    )
    if not mask.any():
        raise LeffaError(
            f"no {garment_type} region found: the parsing has none of {', '.join(GARMENT_CLASSES[garment_type])} "
            "and the keypoints lack the body parts to place one"
        )
    return mask


def tight_mask(labels: np.ndarray, skeleton: Skeleton, garment_type: str, style: str) -> np.ndarray:
    """This project's own rules (``mask_style="tight"``), see the module notes."""
    rules = STYLE_RULES[style]
    shape, height = labels.shape, labels.shape[0]

    garment = pixels(labels, GARMENT_CLASSES[garment_type])
    kept = pixels(labels, OTHER_GARMENT[garment_type] + ACCESSORIES + (("hair", "scarf") if rules.keep_hair else ()))
    if garment_type == "upper_body" and skeleton.found("right-hip", "left-hip"):
        # A dress split at the hip line: its bodice is the top, its skirt the bottom garment that stays.
        above_waist = np.arange(height)[:, None] < (skeleton["right-hip"][1] + skeleton["left-hip"][1]) / 2
        garment |= pixels(labels, ("dress",)) & above_waist
        kept |= pixels(labels, ("dress",)) & ~above_waist
    region = grow(garment, rules.garment_margin * height)
    region |= torso_region(shape, skeleton, garment_type)
    protected = pixels(labels, HEAD) | feet_region(labels, skeleton)
    if garment_type == "lower_body":
        protected |= pixels(labels, ("left-arm", "right-arm", "glove"))

    if garment_type in ("upper_body", "dresses"):
        arms = np.zeros(shape, dtype=bool)
        for side in ("left", "right"):
            arm, wrist_found = arm_region(labels, skeleton, side, rules)
            arms |= arm
            if wrist_found:
                protected |= hand_region(labels, skeleton, side)
        protected |= pixels(labels, ("glove",))
        region |= arms
        if rules.shoulder_band and skeleton.found("right-shoulder", "left-shoulder"):
            region |= band(shape, skeleton["right-shoulder"], skeleton["left-shoulder"], rules.arm_width * height)
        region |= grow(pixels(labels, ("neck",)), rules.neck_margin * height)
    if garment_type in ("lower_body", "dresses"):
        to_ankle = garment_type == "lower_body"
        for side in ("left", "right"):
            region |= leg_region(shape, skeleton, side, rules.leg_width * height, to_ankle)
        if garment_type == "dresses" and style == "dc":
            region |= pixels(labels, ("left-leg", "right-leg"))

    kept = shrink(kept, rules.kept_shrink * height) | protected
    mask = ndimage.binary_fill_holes(region & ~kept) & ~kept
    return keep_significant(mask, rules.largest_region_only, rules.speck_fraction)


def mask_image(mask: np.ndarray) -> Image.Image:
    """A black-and-white ``L`` image: 255 where the model repaints."""
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L")


def overlay(image: Image.Image, mask: np.ndarray, colour: tuple[int, int, int] = (128, 128, 128)) -> Image.Image:
    """The garment-agnostic picture: ``image`` with the masked region painted grey (as the model sees it)."""
    rgb = np.asarray(images.resize(images.to_rgb(image), mask.shape[:2]), dtype=np.uint8).copy()
    rgb[mask] = colour
    return Image.fromarray(rgb)
