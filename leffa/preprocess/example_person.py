"""A drawn example person: a person label map, matching OpenPose keypoints and a flat-coloured "photo".

For tests and documentation pictures, where the real parsing and pose models cannot run: every region is drawn from
the keypoints, so the expected masks can be checked by hand (which pixels are shirt, face, hands, pants ...).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from leffa.preprocess.openpose import KEYPOINT_NAMES
from leffa.preprocess.parsing import PERSON_LABELS

# Keypoints of a person facing the camera on a 384 x 512 canvas (their right side on the image's left).
BASE_KEYPOINTS = {
    "nose": (192, 72), "neck": (192, 112), "right-shoulder": (148, 116), "right-elbow": (128, 186),
    "right-wrist": (118, 250), "left-shoulder": (236, 116), "left-elbow": (256, 186), "left-wrist": (266, 250),
    "right-hip": (168, 252), "right-knee": (164, 344), "right-ankle": (162, 432), "left-hip": (216, 252),
    "left-knee": (220, 344), "left-ankle": (222, 432), "right-eye": (182, 64), "left-eye": (202, 64),
    "right-ear": (170, 70), "left-ear": (214, 70),
}  # fmt: skip
COLOURS = {
    "background": (236, 236, 232), "hair": (52, 36, 28), "face": (224, 180, 150), "neck": (214, 170, 140),
    "left-arm": (220, 176, 146), "right-arm": (220, 176, 146), "left-leg": (216, 172, 142),
    "right-leg": (216, 172, 142), "upper-clothes": (40, 110, 190), "pants": (60, 60, 70), "dress": (180, 40, 80),
    "left-shoe": (30, 30, 30), "right-shoe": (30, 30, 30), "bag": (150, 100, 40), "skirt": (110, 150, 60),
}  # fmt: skip


def _label(name: str) -> int:
    return PERSON_LABELS.index(name)


def example_person(height: int = 512, outfit: str = "shirt_and_pants") -> tuple[np.ndarray, np.ndarray, Image.Image]:
    """``(labels (H, W) uint8, keypoints (18, 3), photo)`` at ``height`` (3:4).

    ``outfit``: ``shirt_and_pants`` (short sleeves, cropped trousers) or ``dress`` (knee length, sleeveless).
    """
    if outfit not in ("shirt_and_pants", "dress"):
        raise ValueError(f"outfit: {outfit}")
    s = height / 512
    width = round(384 * s)
    k = {name: np.array(xy, dtype=np.float32) * s for name, xy in BASE_KEYPOINTS.items()}
    canvas = Image.new("L", (width, height), _label("background"))
    draw = ImageDraw.Draw(canvas)

    def limb(a, b, w, name):
        draw.line([tuple(a), tuple(b)], fill=_label(name), width=max(1, round(w * s)))
        for point in (a, b):
            r = w * s / 2
            draw.ellipse([point[0] - r, point[1] - r, point[0] + r, point[1] + r], fill=_label(name))

    def ellipse(centre, rx, ry, name):
        draw.ellipse(
            [centre[0] - rx * s, centre[1] - ry * s, centre[0] + rx * s, centre[1] + ry * s], fill=_label(name)
        )

    ellipse(k["nose"] + np.array([0, -16]) * s, 34, 34, "hair")
    draw.rectangle(
        [k["neck"][0] - 12 * s, k["nose"][1], k["neck"][0] + 12 * s, k["neck"][1] + 8 * s], fill=_label("neck")
    )
    ellipse(k["nose"] + np.array([0, 2]) * s, 24, 30, "face")
    for side in ("left", "right"):
        hand = k[f"{side}-wrist"] + 0.25 * (k[f"{side}-wrist"] - k[f"{side}-elbow"])
        limb(k[f"{side}-shoulder"], k[f"{side}-elbow"], 26, f"{side}-arm")
        limb(k[f"{side}-elbow"], k[f"{side}-wrist"], 22, f"{side}-arm")
        ellipse(hand, 11, 13, f"{side}-arm")
        limb(k[f"{side}-hip"], k[f"{side}-knee"], 34, f"{side}-leg")
        limb(k[f"{side}-knee"], k[f"{side}-ankle"], 28, f"{side}-leg")
        ellipse(k[f"{side}-ankle"] + np.array([0, 14]) * s, 17, 10, f"{side}-shoe")
    shoulders, hips = (k["right-shoulder"], k["left-shoulder"]), (k["right-hip"], k["left-hip"])
    if outfit == "shirt_and_pants":
        for side in ("left", "right"):  # cropped trousers: bare shins above the ankles
            limb(k[f"{side}-hip"], k[f"{side}-knee"], 42, "pants")
            limb(k[f"{side}-knee"], k[f"{side}-ankle"] + np.array([0, -44]) * s, 36, "pants")
        draw.polygon([tuple(hips[0] + np.array([-20, -6]) * s), tuple(hips[1] + np.array([20, -6]) * s),
                      tuple(hips[1] + np.array([20, 30]) * s), tuple(hips[0] + np.array([-20, 30]) * s)],
                     fill=_label("pants"))  # fmt: skip
        top_bottom = hips[0][1] + 6 * s
        torso = [shoulders[0] + np.array([-8, -4]) * s, shoulders[1] + np.array([8, -4]) * s,
                 np.array([hips[1][0] + 22 * s, top_bottom]), np.array([hips[0][0] - 22 * s, top_bottom])]  # fmt: skip
        draw.polygon([tuple(p) for p in torso], fill=_label("upper-clothes"))
        for side in ("left", "right"):  # short sleeves
            end = k[f"{side}-shoulder"] + 0.45 * (k[f"{side}-elbow"] - k[f"{side}-shoulder"])
            limb(k[f"{side}-shoulder"], end, 36, "upper-clothes")
    else:
        hem = (k["right-knee"][1] + k["left-knee"][1]) / 2 - 10 * s
        dress = [shoulders[0] + np.array([-6, -4]) * s, shoulders[1] + np.array([6, -4]) * s,
                 np.array([hips[1][0] + 26 * s, hips[1][1]]), np.array([k["left-knee"][0] + 44 * s, hem]),
                 np.array([k["right-knee"][0] - 44 * s, hem]), np.array([hips[0][0] - 26 * s, hips[0][1]])]  # fmt: skip
        draw.polygon([tuple(p) for p in dress], fill=_label("dress"))
    draw.rectangle([k["neck"][0] - 10 * s, k["neck"][1] - 4 * s, k["neck"][0] + 10 * s, k["neck"][1] + 4 * s],
                   fill=_label("neck"))  # fmt: skip
    labels = np.asarray(canvas, dtype=np.uint8).copy()
    keypoints = np.zeros((len(KEYPOINT_NAMES), 3), dtype=np.float32)
    for index, name in enumerate(KEYPOINT_NAMES):
        keypoints[index] = (*k[name], 0.9)
    return labels, keypoints, render(labels)


def render(labels: np.ndarray, seed: int = 0) -> Image.Image:
    """A flat-coloured picture of a label map, with a little noise so it reads as a photo."""
    table = np.array([COLOURS.get(name, (128, 128, 128)) for name in PERSON_LABELS], dtype=np.float32)
    noise = np.random.default_rng(seed).normal(0, 4, size=labels.shape + (3,))
    return Image.fromarray(np.clip(table[labels] + noise, 0, 255).astype(np.uint8))
