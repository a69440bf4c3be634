"""OpenPose body keypoints (COCO 18) in plain torch, with part-affinity-field decoding of the main person.

The network is the CMU body model as converted for lllyasviel's ControlNet annotator (upstream's
``openpose/body_pose_model.pth``): a VGG-19 front (its first ten convolutions, then two CPM convolutions) and six
two-branch stages, branch 1 the part affinity fields (38 channels = 19 limbs x (dx, dy)), branch 2 the heatmaps
(18 parts + background). Module names follow that annotator (``model0.conv1_1``, ``model1_1.conv5_1_CPM_L1``,
``model2_2.Mconv7_stage2_L2`` ...); its ``.pth`` stores the same layers without the ``modelN_M.`` prefix, and both
spellings load. As in the annotator, the final heatmap convolution is followed by a ReLU (its "no ReLU" list names
the stage-6 PAF layer twice and forgets the heatmap layer); that changes no peak above the 0.1 threshold.

Decoding (Cao et al. 2017): heatmaps smoothed by a Gaussian (sigma 3), peaks = 4-neighbour local maxima above 0.1;
each limb candidate (a, b) is scored by the PAF's mean projection on the unit vector a -> b at 10 points, with a
penalty for limbs longer than half the image height, kept when 80 % of the points exceed 0.05; limbs are matched
greedily by score and assembled greedily into people; people with fewer than 4 parts or mean score under 0.4 go.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from scipy import ndimage
from torch import nn

from leffa import images
from leffa.errors import LeffaError

KEYPOINT_NAMES = (
    "nose", "neck", "right-shoulder", "right-elbow", "right-wrist", "left-shoulder", "left-elbow", "left-wrist",
    "right-hip", "right-knee", "right-ankle", "left-hip", "left-knee", "left-ankle", "right-eye", "left-eye",
    "right-ear", "left-ear",
)  # fmt: skip
# Limbs as (part a, part b) and the two PAF channels (x, y) the trained network assigns to each, in its order.
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13), (1, 0),
    (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17),
)  # fmt: skip
PAF_CHANNELS = (
    (12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11),
    (28, 29), (30, 31), (34, 35), (32, 33), (36, 37), (18, 19), (26, 27),
)  # fmt: skip
# OpenPose's default BODY_25 output has these 18 points too, in another order, plus mid-hip (8) and six foot points.
BODY_25_TO_COCO_18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
# The last two limbs (ear-shoulder) only confirm people; they never start one.
STARTING_LIMBS = 17
# OpenPose's drawing colours, one per limb / keypoint (BGR-free: these are RGB).
COLOURS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip

BOX_SIZE = 368  # network input height at scale 1.0
STRIDE = 8
PAD_VALUE = 128
MAX_DECODE_HEIGHT = 512


@dataclass(frozen=True)
class DecodeSettings:
    peak_threshold: float = 0.1
    paf_threshold: float = 0.05
    samples: int = 10
    sigma: float = 3.0
    min_parts: int = 4
    min_mean_score: float = 0.4


def _block(layers: list[tuple[str, int, int, int]], last_relu: bool = False) -> nn.Sequential:
    """Convolutions (name, in, out, kernel) with "same" padding, ReLU after each but the last; 'pool' = 2x2 max."""
    modules: list[tuple[str, nn.Module]] = []
    for index, (name, c_in, c_out, kernel) in enumerate(layers):
        if name.startswith("pool"):
            modules.append((name, nn.MaxPool2d(2, 2)))
            continue
        modules.append((name, nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)))
        if index < len(layers) - 1 or last_relu:
            modules.append((f"relu_{name}", nn.ReLU()))
    return nn.Sequential(OrderedDict(modules))


def _vgg_front() -> nn.Sequential:
    widths = [("conv1_1", 3, 64), ("conv1_2", 64, 64), ("pool1_stage1", 0, 0), ("conv2_1", 64, 128),
              ("conv2_2", 128, 128), ("pool2_stage1", 0, 0), ("conv3_1", 128, 256), ("conv3_2", 256, 256),
              ("conv3_3", 256, 256), ("conv3_4", 256, 256), ("pool3_stage1", 0, 0), ("conv4_1", 256, 512),
              ("conv4_2", 512, 512), ("conv4_3_CPM", 512, 256), ("conv4_4_CPM", 256, 128)]  # fmt: skip
    return _block([(name, c_in, c_out, 3) for name, c_in, c_out in widths], last_relu=True)


def _first_stage(branch: int, out: int) -> nn.Sequential:
    s = f"CPM_L{branch}"
    return _block([(f"conv5_1_{s}", 128, 128, 3), (f"conv5_2_{s}", 128, 128, 3), (f"conv5_3_{s}", 128, 128, 3),
                   (f"conv5_4_{s}", 128, 512, 1), (f"conv5_5_{s}", 512, out, 1)])  # fmt: skip


def _refinement_stage(stage: int, branch: int, out: int, last_relu: bool = False) -> nn.Sequential:
    s = f"stage{stage}_L{branch}"
    layers = [(f"Mconv1_{s}", 185, 128, 7)] + [(f"Mconv{i}_{s}", 128, 128, 7) for i in range(2, 6)]
    return _block(layers + [(f"Mconv6_{s}", 128, 128, 1), (f"Mconv7_{s}", 128, out, 1)], last_relu=last_relu)


class BodyPoseNet(nn.Module):
    """The 18-keypoint OpenPose body network; ``forward`` returns ``(pafs (B,38,h,w), heatmaps (B,19,h,w))``."""

    def __init__(self) -> None:
        super().__init__()
        self.model0 = _vgg_front()
        self.model1_1, self.model1_2 = _first_stage(1, 38), _first_stage(2, 19)
        for stage in range(2, 7):
            setattr(self, f"model{stage}_1", _refinement_stage(stage, 1, 38))
            setattr(self, f"model{stage}_2", _refinement_stage(stage, 2, 19, last_relu=stage == 6))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model0(x)
        pafs, heatmaps = self.model1_1(features), self.model1_2(features)
        for stage in range(2, 7):
            joined = torch.cat([pafs, heatmaps, features], 1)
            pafs = getattr(self, f"model{stage}_1")(joined)
            heatmaps = getattr(self, f"model{stage}_2")(joined)
        return pafs, heatmaps


def load_body_pose_net(path: str | Path, device: str = "cpu") -> BodyPoseNet:
    """The network with weights from ``path`` (read with ``weights_only=True``), prefixed or annotator-style keys."""
    path = Path(path)
    if not path.is_file():
        raise LeffaError(f"{path}: pose model not found")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - an unreadable file is the user's problem, named in one line
        raise LeffaError(f"{path}: not a readable state dict ({str(error).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise LeffaError(f"{path}: not a state dict")
    state: dict[str, torch.Tensor] = loaded
    net = BodyPoseNet()
    expected = net.state_dict()
    by_layer = {key.split(".", 1)[1]: key for key in expected}
    renamed = {key if key in expected else by_layer.get(key, key): value for key, value in state.items()}
    missing = sorted(set(expected) - set(renamed))
    unexpected = sorted(set(renamed) - set(expected))
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise LeffaError(
            f"{path}: not an OpenPose body model ({len(missing)} missing keys, {len(unexpected)} unexpected, "
            f"e.g. {example})"
        )
    for key, value in renamed.items():
        if value.shape != expected[key].shape:
            raise LeffaError(f"{path}: {key} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}")
    net.load_state_dict(renamed)
    return net.eval().to(device)


def network_input(bgr: np.ndarray, scale: float) -> tuple[torch.Tensor, tuple[int, int]]:
    """Resize ``(H, W, 3)`` BGR uint8 so its height is ``scale * 368``, pad to a multiple of 8 with grey."""
    height, width = bgr.shape[:2]
    factor = scale * BOX_SIZE / height
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    resized = np.asarray(Image.fromarray(bgr).resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
    pad_h, pad_w = (-size[1]) % STRIDE, (-size[0]) % STRIDE
    padded = np.pad(resized, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=PAD_VALUE)
    tensor = torch.from_numpy(padded.transpose(2, 0, 1)[None] / 256.0 - 0.5).float()
    return tensor, (size[1], size[0])


@torch.no_grad()
def network_maps(
    net: BodyPoseNet, image: Image.Image, scales: tuple[float, ...] = (1.0,)
) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps ``(19, H, W)`` and PAFs ``(38, H, W)`` at the image's size, averaged over ``scales``."""
    bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
    height, width = bgr.shape[:2]
    device = next(net.parameters()).device
    heat_sum = torch.zeros(19, height, width)
    paf_sum = torch.zeros(38, height, width)
    for scale in scales:
        tensor, (h, w) = network_input(bgr, scale)
        pafs, heats = net(tensor.to(device))
        for maps, total in ((heats, heat_sum), (pafs, paf_sum)):
            up = F.interpolate(maps.float().cpu(), scale_factor=STRIDE, mode="bicubic", align_corners=False)
            total += F.interpolate(up[:, :, :h, :w], size=(height, width), mode="bicubic", align_corners=False)[0]
    return (heat_sum / len(scales)).numpy(), (paf_sum / len(scales)).numpy()


@dataclass
class Peak:
    part: int
    x: float
    y: float
    score: float
    id: int


def find_peaks(heatmaps: np.ndarray, settings: DecodeSettings = DecodeSettings()) -> list[list[Peak]]:
    """Per part, the local maxima of the Gaussian-smoothed heatmap above the threshold (scored unsmoothed)."""
    peaks: list[list[Peak]] = []
    counter = 0
    for part in range(len(KEYPOINT_NAMES)):
        raw = heatmaps[part]
        smooth = ndimage.gaussian_filter(raw, sigma=settings.sigma)
        padded = np.pad(smooth, 1, constant_values=-np.inf)
        centre = padded[1:-1, 1:-1]
        is_peak = (
            (centre >= padded[:-2, 1:-1]) & (centre >= padded[2:, 1:-1])
            & (centre >= padded[1:-1, :-2]) & (centre >= padded[1:-1, 2:]) & (centre > settings.peak_threshold)
        )  # fmt: skip
        ys, xs = np.nonzero(is_peak)
        part_peaks = [
            Peak(part, float(x), float(y), float(raw[y, x]), counter + i) for i, (x, y) in enumerate(zip(xs, ys))
        ]
        counter += len(part_peaks)
        peaks.append(part_peaks)
    return peaks


def limb_score(
    paf_x: np.ndarray,
    paf_y: np.ndarray,
    a: Peak,
    b: Peak,
    image_height: int,
    settings: DecodeSettings = DecodeSettings(),
) -> float | None:
    """PAF line integral from ``a`` to ``b`` with a long-limb penalty, or ``None`` when the field disagrees."""
    dx, dy = b.x - a.x, b.y - a.y
    norm = max(math.hypot(dx, dy), 1e-3)
    t = np.linspace(0.0, 1.0, settings.samples)
    xs = np.clip(np.round(a.x + t * dx).astype(int), 0, paf_x.shape[1] - 1)
    ys = np.clip(np.round(a.y + t * dy).astype(int), 0, paf_x.shape[0] - 1)
    projections = paf_x[ys, xs] * dx / norm + paf_y[ys, xs] * dy / norm
    score = float(projections.mean()) + min(0.5 * image_height / norm - 1.0, 0.0)
    agreeing = np.count_nonzero(projections > settings.paf_threshold) > 0.8 * settings.samples
    return score if agreeing and score > 0 else None


def match_limbs(
    peaks: list[list[Peak]], pafs: np.ndarray, settings: DecodeSettings = DecodeSettings()
) -> list[list[tuple[Peak, Peak, float]]]:
    """Per limb, the accepted (a, b, score) connections, matched greedily by score, each peak used once."""
    connections = []
    for (part_a, part_b), (cx, cy) in zip(LIMBS, PAF_CHANNELS):
        candidates = []
        for a in peaks[part_a]:
            for b in peaks[part_b]:
                score = limb_score(pafs[cx], pafs[cy], a, b, pafs.shape[1], settings)
                if score is not None:
                    candidates.append((score, a, b))
        chosen, used_a, used_b = [], set(), set()
        for score, a, b in sorted(candidates, key=lambda c: -c[0]):
            if a.id not in used_a and b.id not in used_b:
                chosen.append((a, b, score))
                used_a.add(a.id)
                used_b.add(b.id)
        connections.append(chosen)
    return connections


@dataclass
class Person:
    parts: dict[int, Peak] = field(default_factory=dict)
    score: float = 0.0

    def bbox_area(self) -> float:
        xs = [p.x for p in self.parts.values()]
        ys = [p.y for p in self.parts.values()]
        return (max(xs) - min(xs)) * (max(ys) - min(ys)) if xs else 0.0

    def keypoints(self) -> np.ndarray:
        """``(18, 3)`` rows of x, y, confidence; zeros for parts not found (the OpenPose convention)."""
        out = np.zeros((len(KEYPOINT_NAMES), 3), dtype=np.float32)
        for part, peak in self.parts.items():
            out[part] = (peak.x, peak.y, peak.score)
        return out


def assemble_people(
    connections: list[list[tuple[Peak, Peak, float]]], settings: DecodeSettings = DecodeSettings()
) -> list[Person]:
    """Greedy assembly: each connection joins the person holding one of its ends, merges two, or starts one."""
    people: list[Person] = []
    for limb_index, ((part_a, part_b), chosen) in enumerate(zip(LIMBS, connections)):
        for a, b, score in chosen:
            owners = [p for p in people if p.parts.get(part_a) is a or p.parts.get(part_b) is b]
            if len(owners) == 1:
                person = owners[0]
                if person.parts.get(part_b) is not b:
                    person.parts[part_b] = b
                    person.score += b.score + score
            elif len(owners) == 2:
                first, second = owners
                if not set(first.parts) & set(second.parts):
                    first.parts.update(second.parts)
                    first.score += second.score + score
                    people.remove(second)
                else:
                    first.parts[part_b] = b
                    first.score += b.score + score
            elif not owners and limb_index < STARTING_LIMBS:
                people.append(Person({part_a: a, part_b: b}, a.score + b.score + score))
    return [
        p for p in people if len(p.parts) >= settings.min_parts and p.score / len(p.parts) >= settings.min_mean_score
    ]


def main_person(people: list[Person], source: str = "image") -> Person:
    """The most complete person (most keypoints), the largest one among equals."""
    if not people:
        raise LeffaError(f"{source}: no person detected (OpenPose found no body with at least 4 connected keypoints)")
    return max(people, key=lambda p: (len(p.parts), p.bbox_area()))


def decode_people(heatmaps: np.ndarray, pafs: np.ndarray, settings: DecodeSettings = DecodeSettings()) -> list[Person]:
    return assemble_people(match_limbs(find_peaks(heatmaps, settings), pafs, settings), settings)


class PoseEstimator:
    """Callable: PIL image -> ``(18, 3)`` keypoints (x, y, confidence) of its main person, in image pixels."""

    def __init__(
        self, net: BodyPoseNet, scales: tuple[float, ...] = (1.0,), settings: DecodeSettings = DecodeSettings()
    ):
        self.net, self.scales, self.settings = net, tuple(scales), settings

    @classmethod
    def from_path(cls, path: str | Path, device: str = "cpu", scales: tuple[float, ...] = (1.0,)) -> PoseEstimator:
        return cls(load_body_pose_net(path, device), scales)

    def people(self, image: Image.Image) -> list[Person]:
        heatmaps, pafs = network_maps(self.net, image, self.scales)
        return decode_people(heatmaps, pafs, self.settings)

    def __call__(self, image: Image.Image, source: str = "image") -> np.ndarray:
        """Keypoints in ``image``'s pixels; maps are decoded at most ``MAX_DECODE_HEIGHT`` high (the network sees
        368 px per scale, so a larger grid adds cost, not precision)."""
        factor = min(1.0, MAX_DECODE_HEIGHT / image.height)
        if factor < 1.0:
            size = (max(1, round(image.width * factor)), MAX_DECODE_HEIGHT)
            image = image.convert("RGB").resize(size, Image.Resampling.BILINEAR)
        keypoints = main_person(self.people(image), source).keypoints()
        keypoints[:, :2] /= factor
        return keypoints


def keypoints_json(keypoints: np.ndarray) -> dict:
    """The OpenPose output format (version 1.3) holding one person."""
    flat = [round(float(v), 3) for v in np.asarray(keypoints, dtype=np.float64).reshape(-1)]
    return {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": flat}]}


def read_keypoints(path: str | Path) -> np.ndarray:
    """``(18, 3)`` COCO-18 keypoints of the first person in an OpenPose JSON file.

    ``pose_keypoints_2d`` may hold COCO-18 (54 numbers: x, y, confidence), BODY_25 (75 numbers, OpenPose's default
    and what ``leffa prep synth`` writes; mid-hip and the feet are dropped) or bare ``x, y`` pairs of either (36 or
    50 numbers, read as confident where non-zero).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        flat = np.asarray(data["people"][0]["pose_keypoints_2d"], dtype=np.float32)
    except FileNotFoundError:
        raise LeffaError(f"{path}: keypoints file not found") from None
    except (ValueError, KeyError, IndexError, TypeError):
        raise LeffaError(f"{path}: not an OpenPose keypoints JSON with one person's pose_keypoints_2d") from None
    counts = {3 * 18: (18, 3), 3 * 25: (25, 3), 2 * 18: (18, 2), 2 * 25: (25, 2)}
    if flat.ndim != 1 or flat.size not in counts:
        raise LeffaError(
            f"{path}: pose_keypoints_2d has {flat.size} numbers, expected 54 (COCO-18) or 75 (BODY_25): "
            "x, y, confidence per keypoint"
        )
    points = flat.reshape(counts[flat.size])
    if points.shape[1] == 2:
        points = np.concatenate([points, (points.sum(1, keepdims=True) > 0).astype(np.float32)], axis=1)
    return coco_18(points)


def coco_18(keypoints: np.ndarray) -> np.ndarray:
    """``(18, 3)`` COCO-18 keypoints from COCO-18 or BODY_25 ``(25, 3)`` ones (x, y, confidence)."""
    keypoints = np.asarray(keypoints, dtype=np.float32)
    if keypoints.shape == (25, 3):
        keypoints = keypoints[list(BODY_25_TO_COCO_18)]
    if keypoints.shape != (18, 3):
        raise LeffaError(f"keypoints of shape {keypoints.shape}: expected (18, 3) COCO-18 or (25, 3) BODY_25")
    return np.ascontiguousarray(keypoints)


def draw_skeleton(keypoints: np.ndarray, size: tuple[int, int], background: Image.Image | None = None) -> Image.Image:
    """OpenPose-style drawing (coloured limbs and joints) on black, or over ``background``; ``size`` = (H, W)."""
    canvas = images.resize(images.to_rgb(background), size) if background is not None else Image.new("RGB", size[::-1])
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(min(size) / 100))
    found = keypoints[:, 2] > 0
    for index, (a, b) in enumerate(LIMBS[:STARTING_LIMBS]):
        if found[a] and found[b]:
            draw.line([tuple(keypoints[a, :2]), tuple(keypoints[b, :2])], fill=COLOURS[index % 18], width=width)
    radius = width + 1
    for part in np.flatnonzero(found):
        x, y = keypoints[part, :2]
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=COLOURS[part])
    return canvas
