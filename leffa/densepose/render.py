"""Turn DensePose network outputs into the three images Leffa's models take as their DensePose condition.

Leffa's app (``leffa_utils/densepose_predictor.py`` and ``app.py``) builds them from detectron2's chart results:

* ``seg`` (virtual try-on, VITON-HD model): the fine segmentation drawn by the app's vendored (IDM-VTON-derived)
  ``DensePoseResultsFineSegmentationVisualizer`` (``inplace=False, alpha=1``: the canvas is zeroed before each
  person): part index I (0..24) scaled by 255/24 and truncated to 8 bits, coloured with OpenCV's
  ``COLORMAP_PARULA`` at **full strength** where I > 0, black elsewhere; then converted from OpenCV's BGR to RGB. Stock detectron2 instead blends the colours at alpha 0.7 over the image
  (``seg_style="detectron2"`` here).
* ``index`` (virtual try-on, DressCode model): I (0..24) in all three channels.
* ``iuv`` (pose transfer): R = U, G = V, B = I, with U and V min-max normalised over the person's box (background
  included) to 0..255 and truncated (the demo's ``predict_iuv`` then ``[:, :, ::-1]``).

All are pasted at full image size at the integer box (x, y truncated, w, h truncated) and are black elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from leffa.densepose.head import NUM_PARTS, ChartOutput
from leffa.errors import LeffaError

KINDS = ("iuv", "index", "seg")
# How ``seg`` colours are laid down: "leffa" = full-strength colours on black (what Leffa's app gives its models),
# "detectron2" = stock detectron2's look, colours blended at alpha 0.7 over what is below.
SEG_STYLES = ("leffa", "detectron2")
DETECTRON2_ALPHA = 0.7
# 256 RGB triples of OpenCV's COLORMAP_PARULA (cv2.applyColorMap on 0..255, read as RGB; identical in OpenCV 4.10
# and 5.0), so no OpenCV is needed here.
_PARULA_RGB_HEX = (
    "352a87332c8a322e8d302f8f2f31922d33952c35982a379b28389e273aa0253ca3243ea6223fa92141ac1f43af1d45b1"
    "1c47b41a48b7194aba174cbd164ebf1450c21251c51153c80f55cb0e57ce0c58d00b5ad3095cd6085ed90660dc0461df"
    "0363e10464e10465e00566e00567df0668df066adf076bde076cde086ddd086edd096fdc0970dc0a71dc0b72db0b73db"
    "0c74da0c75da0d76da0d77d90e78d90e7ad80f7bd80f7cd8107dd7107ed7117fd61180d61281d61382d51383d51484d4"
    "1485d41386d31387d31388d3128ad2128bd2118cd1118dd1108ed0108fd00f90d00f91cf0f92cf0e93ce0e94ce0d95cd"
    "0d96cd0c97cc0c98cc0c9acc0b9bcb0b9ccb0a9dca0a9eca099fc909a0c908a1c808a2c808a3c807a4c707a5c706a6c6"
    "07a7c608a8c40aa8c30ba9c20da9c10eaabf10abbe12abbd13acbb15acba16adb918adb819aeb61bafb51dafb41eb0b3"
    "20b0b121b1b023b1af24b2ae26b3ac28b3ab29b4aa2bb4a92cb5a72eb5a62fb6a531b6a433b7a234b8a136b8a037b99f"
    "39b99d3cb99c3fb99b42ba9945ba9848ba974aba954dba9450bb9353bb9156bb9058bb8e5bbb8d5ebc8c61bc8a64bc89"
    "67bc8869bc866cbc856fbd8472bd8275bd8178bd807abd7e7dbe7d80be7c83be7a86be7988be788bbf768ebf7591bf74"
    "93bf7296bf7298bf719abe709cbe6f9fbe6ea1be6da3be6ca5be6ba7bd6aaabd69acbd68aebd68b0bd67b3bd66b5bd65"
    "b7bc64b9bc63bbbc62bebc61c0bc60c2bc5fc4bb5ec7bb5ec9bb5dcbbb5ccdbb5bd0bb5ad2bb59d4ba58d6ba57d8ba56"
    "daba55dbbb54dcbc53ddbc51debd50dfbe4fe0be4ee2bf4ce3bf4be4c04ae5c149e6c147e7c246e8c345e9c343eac442"
    "ebc541ecc540eec63eefc63df0c73cf1c83bf2c839f3c938f4ca37f5ca36f6cb34f7cb33f9cc32facd31fbcd2ffcce2e"
    "fccf2dfcd12cfcd22bfcd32afcd529fbd628fbd827fbd926fbdb25fbdc24fbdd23fbdf22fbe021fbe220fbe31ffbe41e"
    "fae61dfae71cfae91bfaea1afaeb19faed18faee17faf016faf115faf314f9f413f9f512f9f711f9f810f9fa0ff9fb0e"
)
PARULA_RGB = np.frombuffer(bytes.fromhex("".join(_PARULA_RGB_HEX)), dtype=np.uint8).reshape(256, 3)


@dataclass
class PersonChart:
    """DensePose of one person resampled to its box: ``labels`` (h, w) part index 0..24 and ``uv`` (2, h, w) in 0..1,
    placed at integer ``box_xywh`` of the full image."""

    labels: torch.Tensor
    uv: torch.Tensor
    box_xywh: tuple[int, int, int, int]


def int_box_xywh(box_xyxy) -> tuple[int, int, int, int]:
    """detectron2's ``make_int_box``: corner and size of an x1 y1 x2 y2 box, each truncated toward zero (the size is
    subtracted in float32, as detectron2 does on its box tensor)."""
    box = torch.as_tensor(box_xyxy, dtype=torch.float32).reshape(4)
    x, y, w, h = torch.stack((box[0], box[1], box[2] - box[0], box[3] - box[1])).long().tolist()
    return x, y, w, h


def person_chart(charts: ChartOutput, box_xyxy) -> PersonChart:
    """Resample one box's 112x112 maps to the box size: labels = argmax of fine segmentation where the coarse
    segmentation says person, U/V read from the channel of each pixel's part (DensePose's chart-result converter)."""
    x, y, w, h = int_box_xywh(box_xyxy)
    size = (max(h, 1), max(w, 1))

    def resize(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t.float(), size, mode="bilinear", align_corners=False)

    person = resize(charts.coarse_segm).argmax(dim=1) > 0
    labels = (resize(charts.fine_segm).argmax(dim=1) * person.long())[0]
    u, v = resize(charts.u)[0], resize(charts.v)[0]
    uv = torch.zeros((2, *size), dtype=torch.float32, device=labels.device)
    for part in range(1, charts.u.shape[1]):
        where = labels == part
        uv[0][where] = u[part][where]
        uv[1][where] = v[part][where]
    return PersonChart(labels=labels.cpu(), uv=uv.cpu(), box_xywh=(x, y, w, h))


def _paste(canvas: np.ndarray, patch: np.ndarray, box_xywh) -> np.ndarray:
    """Write ``patch`` into ``canvas`` at the box corner, cropped to the canvas."""
    x, y = box_xywh[:2]
    height, width = canvas.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + patch.shape[1], width), min(y + patch.shape[0], height)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = patch[y0 - y : y1 - y, x0 - x : x1 - x]
    return canvas


def iuv_image(chart: PersonChart, image_hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8, R = U, G = V, B = I, U/V min-max scaled to 0..255 over the box as Leffa's demo does."""
    uv = chart.uv
    low, high = uv.min(), uv.max()
    scaled = (uv - low) / (high - low) * 255 if high > low else torch.zeros_like(uv)
    patch = np.stack((scaled[0].numpy(), scaled[1].numpy(), chart.labels.numpy().astype(np.float32)), axis=-1).astype(
        np.uint8
    )  # float -> uint8 truncates, as numpy assignment into the uint8 canvas does upstream
    return _paste(np.zeros((*image_hw, 3), dtype=np.uint8), patch, chart.box_xywh)


def index_image(chart: PersonChart, image_hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 with the part index 0..24 in every channel (Leffa's DressCode condition)."""
    patch = np.repeat(chart.labels.numpy().astype(np.uint8)[:, :, None], 3, axis=2)
    return _paste(np.zeros((*image_hw, 3), dtype=np.uint8), patch, chart.box_xywh)


def seg_colors(labels: np.ndarray) -> np.ndarray:
    """Colormap colours (..., 3) RGB uint8 of part indices, before blending: PARULA[trunc(I * 255 / 24)]."""
    scaled = (labels.astype(np.float32) * np.float32(255.0 / NUM_PARTS)).clip(0, 255).astype(np.uint8)
    return PARULA_RGB[scaled]


def seg_image(charts: list[PersonChart], image_hw: tuple[int, int], style: str = "leffa") -> np.ndarray:
    """(H, W, 3) uint8 RGB part segmentation of ``charts``, drawn in list order on a black canvas.

    ``style="leffa"``: each person's parts (I > 0) are written in the full PARULA colour, replacing what is below
    (a later person covers an earlier one); ``style="detectron2"``: the colours are blended at alpha 0.7 over what
    is below, as stock detectron2's visualizer does (its own background pixels blend with themselves).
    """
    if style not in SEG_STYLES:
        raise LeffaError(f"--seg-style: unknown style '{style}' (choose from {', '.join(SEG_STYLES)})")
    canvas = np.zeros((*image_hw, 3), dtype=np.uint8)
    for chart in charts:
        x, y, w, h = chart.box_xywh
        if w <= 0 or h <= 0:
            continue
        labels = chart.labels.numpy()[:h, :w]
        region = canvas[y : y + h, x : x + w]
        labels = labels[: region.shape[0], : region.shape[1]]
        colored = seg_colors(labels)
        person = labels > 0
        if style == "leffa":
            region[person] = colored[person]
            continue
        colored[~person] = region[~person]
        blended = region.astype(np.float64) * (1.0 - DETECTRON2_ALPHA) + colored.astype(np.float64) * DETECTRON2_ALPHA
        region[...] = blended.astype(np.uint8)
    return canvas
