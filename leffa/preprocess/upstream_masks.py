"""The authors' garment-agnostic mask rules (Leffa's app, ``get_agnostic_mask_hd`` / ``get_agnostic_mask_dc``),
rewritten from their published behaviour on our person label map and keypoints, with no OpenCV.

Both work in pixels of a 512-pixel-high frame (the app parses and poses the photo at 384 x 512); lengths the app
scales with the image height (arm-band width, the neck offset) are scaled by ``height / 512`` here too.

``hd`` (VITON-HD model):

* head = hat, sunglasses, face; kept = shoes, hat, sunglasses, bag, and per type the other garment (skirt and pants
  for tops; upper clothes and both arms for bottoms). "Changeable" = every pixel not kept.
* garment: tops = upper clothes + dress; bottoms = pants, skirt, legs; dresses = dress, upper clothes, skirt, pants.
* tops and dresses: each arm is a band ``int(60 * H / 512)`` px wide along shoulder -> elbow -> the wrist pushed 1.2x
  farther from the elbow, drawn with PIL's wide line (coordinates truncated to integers, round "curve" joints) plus a
  disk at the shoulder; an arm whose wrist was not found is its parsed arm pixels instead. Arm pixels outside the
  band are hands and are kept.
* kept is eroded by a 5 x 5 square (so the mask overlaps its edges), then the head is added.
* mask = garment dilated by a 10 x 10 square five times, plus (tops, dresses) the neck dilated by 5 x 5 minus the
  head, plus the arm bands dilated by 5 x 5 four times; minus kept; holes filled; only the largest connected region
  stays.

``dc`` (DressCode model):

* head = hat, hair, sunglasses, face, neck; kept = hair, shoes, hat, sunglasses, scarf, bag, plus the other garment
  (skirt and pants for tops; upper clothes and arms for bottoms).
* garment: tops = upper clothes; bottoms = pants and legs; dresses = upper clothes, skirt, pants, dress, legs.
* tops and dresses: one polyline 30 px wide (PIL, round joints) through wrist, elbow, shoulder of one side, the other
  shoulder, elbow, wrist (a side without a wrist loses its wrist, or wrist and elbow when the elbow is missing too),
  dilated by 5 x 5 five times (frames over 256 px high; 10 x 10 five times over 512); it joins the garment, and arm
  pixels outside it are hands, kept. The head above the shoulder line lifted by ``20 * H / 512`` px is kept; the
  head below it (neck, hair on the shoulders) joins the garment.
* mask = garment dilated by 10 x 10 five times (5 x 5 at <= 256 px, 20 x 20 over 512), minus kept, holes filled;
  every region stays.

Dilation and erosion follow OpenCV's ``cv2.dilate``/``cv2.erode`` with a ``k x k`` ones kernel exactly: the anchor is
the kernel centre ``(k // 2, k // 2)``, so one pass of an even kernel grows a region by ``k // 2 - 1`` pixels
up/left and ``k // 2`` down/right (10 x 10 five times: 20 up/left, 25 down/right); outside the image never dilates
and never erodes. Hole filling is OpenCV's flood fill from the corner after clearing the one-pixel border
(4-connected background).

Where the published rules are demonstrably wrong we depart (``fixes=True``, the default; each departure is listed
with a picture in docs/preprocessing.md):

1. kept parts enclosed by the mask are cut out again after hole filling, which otherwise swallows them: a bag held
   in front, hands on the belly, and (``hd``) every kept part that does not touch the image border, because the
   5 x 5 erosion leaves a 2-px masked rim around it that closes it off (full-length trousers on a full-body photo);
   the rim itself stays, as published;
2. ``dc`` bottoms include the skirt (as ``hd`` does), so a skirt is replaced by new trousers instead of kept;
3. a joint OpenPose did not find is not drawn at the image corner: upstream reads a missing joint as the pixel
   (0, 0); here an arm band needs its shoulder, elbow and wrist (``hd``: else the parsed arm, upstream's own
   fallback), the ``dc`` polyline skips missing joints, and the ``dc`` shoulder line needs both shoulders (one:
   horizontal through it; none: the head is kept whole);
4. coordinates past the top or left edge stay negative (upstream casts the pushed-out wrist to uint16, which wraps
   it to ~65 000 and draws the band across the image; the ``dc`` neck row index wraps to the bottom rows).

The remaining known difference: upstream keeps the largest region (``hd``) as the polygon of its contour simplified
by OpenCV's Teh-Chin (TC89 L1) approximation; we keep the region's own pixels, which differ along slanted edges by
up to a few pixels (0.2-0.7 % of the mask on the drawn person of docs/preprocessing.md).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from leffa.preprocess.openpose import KEYPOINT_NAMES
from leffa.preprocess.parsing import PERSON_LABELS

REFERENCE_HEIGHT = 512.0
K = {name: index for index, name in enumerate(KEYPOINT_NAMES)}


def ids(*names: str) -> list[int]:
    return [PERSON_LABELS.index(name) for name in names]


def dilate(mask: np.ndarray, size: int, iterations: int = 1) -> np.ndarray:
    """``cv2.dilate(mask, np.ones((size, size)), iterations=iterations)`` for a boolean mask (anchor at the centre
    ``size // 2``, nothing dilates in from outside the image)."""
    out = mask.astype(np.uint8)
    for _ in range(iterations):
        out = ndimage.maximum_filter(out, size=size, mode="constant", cval=0)
    return out.astype(bool)


def erode(mask: np.ndarray, size: int, iterations: int = 1) -> np.ndarray:
    """``cv2.erode(mask, np.ones((size, size)), iterations=iterations)``: outside the image counts as set."""
    out = mask.astype(np.uint8)
    for _ in range(iterations):
        out = ndimage.minimum_filter(out, size=size, mode="constant", cval=1)
    return out.astype(bool)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The app's ``hole_fill``: the one-pixel image border is cleared, then every background region not
    4-connected to it is filled."""
    inner = mask.copy()
    inner[0, :] = inner[-1, :] = False
    inner[:, 0] = inner[:, -1] = False
    return ndimage.binary_fill_holes(inner)


def largest_region(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected region (the app keeps the largest contour and fills it)."""
    regions, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count <= 1:
        return mask
    sizes = ndimage.sum_labels(mask, regions, index=np.arange(1, count + 1))
    return regions == int(np.argmax(sizes)) + 1


class Joints:
    """Keypoints as the app reads them: missing joints (confidence 0) are the pixel (0, 0)."""

    def __init__(self, keypoints: np.ndarray):
        self.xy = np.where(keypoints[:, 2:3] > 0, keypoints[:, :2], 0.0).astype(np.float64)
        self.confidence = keypoints[:, 2]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.xy[K[name]]

    def found(self, *names: str) -> bool:
        return all(self.confidence[K[name]] > 0 for name in names)

    def app_missing(self, name: str) -> bool:
        """The app's test for a missing joint: both coordinates <= 1."""
        x, y = self[name]
        return x <= 1.0 and y <= 1.0


def _canvas(shape: tuple[int, int]) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("L", (shape[1], shape[0]))
    return image, ImageDraw.Draw(image)


def _hd_arm(labels: np.ndarray, joints: Joints, side: str, fixes: bool) -> np.ndarray:
    """One arm's band (``hd``): shoulder -> elbow -> wrist pushed to 1.2x, plus a shoulder disk; the parsed arm
    when the wrist is missing (with ``fixes``: when any of the three is)."""
    height = labels.shape[0]
    width = int(60 / REFERENCE_HEIGHT * height)
    shoulder, elbow, wrist = (joints[f"{side}-{part}"] for part in ("shoulder", "elbow", "wrist"))
    parsed = np.isin(labels, ids(f"{side}-arm"))
    missing = not joints.found(*(f"{side}-{p}" for p in ("shoulder", "elbow", "wrist"))) if fixes else (
        joints.app_missing(f"{side}-wrist"))  # fmt: skip
    if missing:
        return parsed
    wrist = elbow + 1.2 * (wrist - elbow)
    points = np.concatenate((shoulder, elbow, wrist)) if side == "right" else np.concatenate((wrist, elbow, shoulder))
    # The app casts to uint16 (negative coordinates wrap around); with ``fixes`` they stay negative, off the image.
    flat = np.trunc(points).astype(np.int64) if fixes else points.astype(np.int64).astype(np.uint16)
    image, draw = _canvas(labels.shape)
    draw.line(flat.tolist(), fill=255, width=width, joint="curve")
    half = width // 2
    draw.arc([shoulder[0] - half, shoulder[1] - half, shoulder[0] + half, shoulder[1] + half], 0, 360, 255, half)
    return np.asarray(image) > 0


def hd_mask(labels: np.ndarray, keypoints: np.ndarray, garment_type: str, fixes: bool = True) -> np.ndarray:
    """The app's ``get_agnostic_mask_hd`` (VITON-HD model) on a person label map; see the module notes."""
    joints = Joints(keypoints)
    head = np.isin(labels, ids("hat", "sunglasses", "face"))
    kept = np.isin(labels, ids("left-shoe", "right-shoe", "hat", "sunglasses", "bag"))
    if garment_type == "upper_body":
        garment = np.isin(labels, ids("upper-clothes", "dress"))
        kept |= np.isin(labels, ids("skirt", "pants"))
    elif garment_type == "lower_body":
        garment = np.isin(labels, ids("pants", "left-leg", "right-leg", "skirt"))
        kept |= np.isin(labels, ids("upper-clothes", "left-arm", "right-arm"))
    else:
        garment = np.isin(labels, ids("dress", "upper-clothes", "skirt", "pants"))
    changeable = ~kept
    arms = np.zeros(labels.shape, dtype=bool)
    if garment_type in ("upper_body", "dresses"):
        glove = np.isin(labels, ids("glove"))
        for side in ("left", "right"):
            band = _hd_arm(labels, joints, side, fixes)
            arms |= band
            kept |= ~band & (np.isin(labels, ids(f"{side}-arm")) | glove)  # the hand: arm pixels off the band
    kept_whole = kept | head
    kept = erode(kept, 5) | head
    mask = dilate(garment, 10, 5)
    if garment_type in ("upper_body", "dresses"):
        mask |= dilate(np.isin(labels, ids("neck")), 5) & ~head
        mask |= dilate(arms, 5, 4)
    keep = (changeable & ~mask) | kept
    filled = fill_holes(~keep)
    if fixes:  # what hole filling added of the kept parts goes again (the 2-px eroded rim stays, as published)
        filled &= ~(kept_whole & keep)
    return largest_region(filled)


def _dc_polyline(joints: Joints, fixes: bool) -> list[list[tuple[float, float]]]:
    """The app's arm polyline(s) for ``dc``: wrist/elbow/shoulder of the left side, then of the right side."""
    order = ["left-wrist", "left-elbow", "left-shoulder", "right-shoulder", "right-elbow", "right-wrist"]
    if fixes:
        runs, run = [], []
        for name in order:
            if joints.found(name):
                run.append(name)
            elif run:
                runs.append(run)
                run = []
        runs.append(run)
        return [[tuple(joints[n]) for n in r] for r in runs if len(r) >= 2]
    if joints.app_missing("right-wrist"):
        names = order[:4] if joints.app_missing("right-elbow") else order[:5]
    elif joints.app_missing("left-wrist"):
        names = order[2:] if joints.app_missing("left-elbow") else order[1:]
    else:
        names = order
    return [[tuple(joints[n]) for n in names]]


def _head_below_shoulders(head: np.ndarray, joints: Joints, fixes: bool) -> np.ndarray:
    """Head pixels on or below the shoulder line lifted by ``20 * H / 512`` px (the neck, hair on the shoulders)."""
    height, width = head.shape
    lift = 20 * (height / REFERENCE_HEIGHT)
    right, left = joints["right-shoulder"], joints["left-shoulder"]
    if fixes and not joints.found("right-shoulder", "left-shoulder"):
        found = [joints[name] for name in ("right-shoulder", "left-shoulder") if joints.found(name)]
        if not found:
            return np.zeros_like(head)
        slope, intercept = 0.0, float(found[0][1])
    else:
        design = np.stack([np.array([right[0], left[0]]), np.ones(2)], axis=1)
        slope, intercept = np.linalg.lstsq(design, np.array([right[1], left[1]]), rcond=None)[0]
    start = (np.arange(width) * slope + intercept - lift).astype(np.int64)  # int(): toward zero
    # The app slices rows [start:]; a negative start counts from the bottom (with ``fixes``: from the top row).
    start = np.maximum(start, 0) if fixes else np.where(start < 0, np.maximum(height + start, 0), start)
    return head & (np.arange(height)[:, None] >= start[None, :])


def dc_mask(labels: np.ndarray, keypoints: np.ndarray, garment_type: str, fixes: bool = True) -> np.ndarray:
    """The app's ``get_agnostic_mask_dc`` (DressCode model) on a person label map; see the module notes."""
    joints = Joints(keypoints)
    height = labels.shape[0]
    head = np.isin(labels, ids("hat", "hair", "sunglasses", "face", "neck"))
    kept = np.isin(labels, ids("hair", "left-shoe", "right-shoe", "hat", "sunglasses", "scarf", "bag"))
    if garment_type == "upper_body":
        garment = np.isin(labels, ids("upper-clothes"))
        kept |= np.isin(labels, ids("skirt", "pants"))
    elif garment_type == "lower_body":
        garment = np.isin(labels, ids("pants", "left-leg", "right-leg") + (ids("skirt") if fixes else []))
        kept |= np.isin(labels, ids("upper-clothes", "left-arm", "right-arm"))
    else:
        garment = np.isin(labels, ids("upper-clothes", "skirt", "pants", "dress", "left-leg", "right-leg"))
    changeable = ~kept
    head_kept = head
    if garment_type in ("upper_body", "dresses"):
        image, draw = _canvas(labels.shape)
        for line in _dc_polyline(joints, fixes):
            draw.line(line, fill=255, width=30, joint="curve")
        band = np.asarray(image) > 0
        if height > 512:
            band = dilate(band, 10, 5)
        elif height > 256:
            band = dilate(band, 5, 5)
        garment |= band
        kept |= ~band & np.isin(labels, ids("left-arm", "right-arm", "glove"))
        below = _head_below_shoulders(head, joints, fixes)
        head_kept = head & ~below
        garment |= below
    kept |= head_kept
    size = 20 if height > 512 else 10 if height > 256 else 5
    mask = dilate(garment, size, 5)
    keep = (changeable & ~mask) | kept
    filled = fill_holes(~keep)
    return filled & ~kept if fixes else filled


def upstream_mask(
    labels: np.ndarray, keypoints: np.ndarray, garment_type: str, model: str = "hd", fixes: bool = True
) -> np.ndarray:
    """``(H, W)`` bool mask by the authors' rules for the ``hd`` or ``dc`` model (``fixes``: our departures)."""
    rules = hd_mask if model == "hd" else dc_mask
    return rules(np.asarray(labels), np.asarray(keypoints, dtype=np.float32), garment_type, fixes)
