"""From one plain person photo to the try-on conditions: parsing, keypoints and the garment-agnostic mask.

Upstream's app runs parsing and OpenPose on the photo resized to 384 x 512 and draws the mask there; here the
photo keeps its aspect ratio, is brought to ``work_height`` pixels high (512 by default) for both models, and the
mask is resized back to the photo's own size. Model files come from the upstream hub repository
(``franciszzj/Leffa``) through ``leffa.hub.fetch`` unless local paths are given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from leffa import images
from leffa.errors import LeffaError
from leffa.preprocess.masks import agnostic_mask, check_mask_options, mask_image
from leffa.preprocess.openpose import PoseEstimator
from leffa.preprocess.parsing import MODELS, HumanParser, parse_person

POSE_HUB_FILE = "openpose/body_pose_model.pth"
WORK_HEIGHT = 512


WHAT = {
    "humanparsing/parsing_atr.onnx": "ATR human parsing model",
    "humanparsing/parsing_lip.onnx": "LIP human parsing model",
    POSE_HUB_FILE: "OpenPose body model",
}


def model_path(path: str | Path | None, hub_file: str, offline: bool = False) -> Path:
    """The local file given, or the upstream hub file (weights folder, hub cache, else downloaded)."""
    if path is not None:
        if not Path(path).is_file():
            raise LeffaError(f"{path}: model file not found (for {hub_file})")
        return Path(path)
    from leffa.hub import fetch

    return fetch(hub_file, offline=offline, what=WHAT.get(hub_file, ""))


def load_parser(
    model: str = "atr", path: str | Path | None = None, offline: bool = False, device: str = "auto"
) -> HumanParser:
    return HumanParser(model_path(path, MODELS[model]["hub_file"], offline), model, device)


def load_pose(
    path: str | Path | None = None,
    offline: bool = False,
    device: str = "auto",
    scales: tuple[float, ...] = (1.0,),
    lazy: bool = False,
) -> PoseEstimator | LazyPose:
    """OpenPose from ``path`` or the hub; ``lazy=True`` finds (downloads) the file now but reads it on first use."""
    from leffa.environment import best_device

    if device not in ("auto", "cpu", "cuda"):
        raise LeffaError(f"--device {device}: expected auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise LeffaError("--device cuda: torch here has no CUDA device")
    torch_device = best_device() if device == "auto" else device
    torch_device = "cpu" if torch_device == "mps" else torch_device
    file = model_path(path, POSE_HUB_FILE, offline)
    if lazy:
        return LazyPose(lambda: PoseEstimator.from_path(file, torch_device, scales))
    return PoseEstimator.from_path(file, torch_device, scales)


class LazyPose:
    """OpenPose loaded on first use: a resumed dataset run whose keypoints all exist never reads the weights."""

    def __init__(self, loader):
        self._loader, self._pose = loader, None

    def __call__(self, image: Image.Image, source: str = "image") -> np.ndarray:
        if self._pose is None:
            self._pose = self._loader()
        return self._pose(image, source=source)


@dataclass
class PrepTools:
    """The loaded models, to reuse across images (loading costs more than one image)."""

    atr: HumanParser | None = None
    pose: PoseEstimator | LazyPose | None = None
    lip: HumanParser | None = None

    @classmethod
    def load(
        cls,
        parsing_model: str | Path | None = None,
        pose_model: str | Path | None = None,
        lip_model: str | Path | None = None,
        neck: bool = True,
        offline: bool = False,
        device: str = "auto",
        scales: tuple[float, ...] = (1.0,),
        parsing: bool = True,
        keypoints: bool = True,
    ) -> PrepTools:
        """ATR parser and (for the neck label, ``neck=True``) LIP parser unless ``parsing=False``; OpenPose unless
        ``keypoints=False``."""
        return cls(
            atr=load_parser("atr", parsing_model, offline, device) if parsing else None,
            pose=load_pose(pose_model, offline, device, scales) if keypoints else None,
            lip=load_parser("lip", lip_model, offline, device) if parsing and neck else None,
        )

    def atr_parser(self) -> HumanParser:
        """The ATR parser; a ``LeffaError`` when these tools were loaded without parsing."""
        if self.atr is None:
            raise LeffaError("person parsing needs the ATR parser: give labels, or tools loaded with parsing=True")
        return self.atr

    def pose_model(self) -> PoseEstimator | LazyPose:
        """The OpenPose estimator; a ``LeffaError`` when these tools were loaded without keypoints."""
        if self.pose is None:
            raise LeffaError("keypoints need the pose model: give keypoints, or tools loaded with keypoints=True")
        return self.pose


@dataclass
class PersonConditions:
    labels: np.ndarray  # (h, w) person labels at the working size
    keypoints: np.ndarray  # (18, 3) in working-size pixels
    mask: np.ndarray  # (h, w) bool at the working size
    size: tuple[int, int]  # the photo's (H, W)

    def mask_image(self) -> Image.Image:
        """The mask at the photo's own size, 255 = repaint."""
        return images.resize_labels(mask_image(self.mask), self.size)


def working_copy(image: Image.Image, height: int = WORK_HEIGHT) -> Image.Image:
    rgb = image.convert("RGB")
    width = max(1, round(rgb.width * height / rgb.height))
    return rgb.resize((width, height), Image.Resampling.BICUBIC) if rgb.height != height else rgb


def person_conditions(
    person_image: Image.Image,
    garment_type: str = "upper_body",
    style: str = "hd",
    tools: PrepTools | None = None,
    labels: np.ndarray | None = None,
    keypoints: np.ndarray | None = None,
    work_height: int = WORK_HEIGHT,
    source: str = "person image",
    mask_style: str = "upstream",
    **load_options,
) -> PersonConditions:
    """Parsing, keypoints and mask of one photo.

    ``labels`` (a person label map of any size) and ``keypoints`` (18 x 3, in the photo's pixels) replace what the
    models would find; ``load_options`` go to ``PrepTools.load`` for the models still needed when ``tools`` is None.
    """
    check_mask_options(garment_type, style, mask_style)
    work = working_copy(person_image, work_height)
    if tools is None and (labels is None or keypoints is None):
        tools = PrepTools.load(parsing=labels is None, keypoints=keypoints is None, **load_options)
    if labels is None:
        assert tools is not None  # loaded above when labels or keypoints are missing
        labels = parse_person(work, tools.atr_parser(), tools.lip)
    else:
        labels = np.asarray(
            images.resize_labels(Image.fromarray(np.asarray(labels, dtype=np.uint8)), (work.height, work.width))
        )
    if keypoints is None:
        assert tools is not None  # loaded above when labels or keypoints are missing
        keypoints = tools.pose_model()(work, source=source)
    else:
        keypoints = np.array(keypoints, dtype=np.float32)
        keypoints[:, :2] *= work.height / person_image.height
    return PersonConditions(
        labels,
        keypoints,
        agnostic_mask(labels, keypoints, garment_type, style, mask_style),
        (person_image.height, person_image.width),
    )


def automatic_conditions(
    person_image: Image.Image,
    garment_type: str = "upper_body",
    style: str = "hd",
    tools: PrepTools | None = None,
    mask_style: str = "upstream",
    **load_options,
) -> Image.Image:
    """The garment-agnostic mask (``L`` image at the photo's size, 255 = repaint) of a plain person photo."""
    conditions = person_conditions(person_image, garment_type, style, tools, mask_style=mask_style, **load_options)
    return conditions.mask_image()
