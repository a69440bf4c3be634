"""High-level DensePose: a PIL person image in, detected people and their DensePose renderings out."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from leffa.densepose.config import WEIGHTS_FILE, DensePoseConfig
from leffa.densepose.head import ChartOutput
from leffa.densepose.network import DensePoseRCNN
from leffa.densepose.render import KINDS, SEG_STYLES, PersonChart, index_image, iuv_image, person_chart, seg_image
from leffa.densepose.weights import load_detectron2_weights
from leffa.errors import LeffaError


def resized_shape(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """detectron2's ResizeShortestEdge at test time: shortest side to ``min_size``, longest at most ``max_size``."""
    scale = min_size / min(height, width)
    new_h, new_w = (min_size, scale * width) if height < width else (scale * height, min_size)
    if max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


def preprocess(image: Image.Image, config: DensePoseConfig, swap_channels: bool = True):
    """Normalised tensor (1, 3, H', W') padded to a multiple of 32, and the unpadded resized (h, w).

    The network was trained on BGR. ``swap_channels=True`` (the default) feeds the RGB pixels in its BGR slots, as
    Leffa's app does (it hands ``np.array(pil_image)`` to detectron2's BGR ``DefaultPredictor``), so the released
    try-on/pose models get the DensePose images the authors' app gives them; ``False`` feeds true BGR.
    """
    rgb = image.convert("RGB")
    new_h, new_w = resized_shape(rgb.height, rgb.width, config.min_size, config.max_size)
    resized = np.asarray(rgb.resize((new_w, new_h), Image.Resampling.BILINEAR), dtype=np.float32)
    bgr = resized if swap_channels else resized[:, :, ::-1]
    tensor = torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))
    mean = torch.tensor(config.pixel_mean_bgr, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(config.pixel_std_bgr, dtype=torch.float32).view(3, 1, 1)
    tensor = (tensor - mean) / std
    pad_h, pad_w = (-new_h) % 32, (-new_w) % 32
    return F.pad(tensor, (0, pad_w, 0, pad_h))[None], (new_h, new_w)


@dataclass
class DensePoseResult:
    """People found in one image, best score first: boxes (N, 4) x1 y1 x2 y2 in image pixels, scores (N,), and the
    raw DensePose maps of each box."""

    image_size: tuple[int, int]  # (height, width)
    boxes: torch.Tensor
    scores: torch.Tensor
    charts: ChartOutput

    def __len__(self) -> int:
        return len(self.boxes)

    def person(self, index: int = 0) -> PersonChart:
        """Part labels and U/V of person ``index`` (0 = highest score, the one Leffa's demo uses)."""
        return person_chart(self.charts[index], self.boxes[index])

    def render(self, kind: str, all_people: bool = False, seg_style: str = "leffa") -> Image.Image:
        """The ``kind`` rendering (``iuv``, ``index`` or ``seg``) at image size; black when nobody was found.

        The person drawn is the highest-scoring detection (``iuv``/``index``: as Leffa's app, which reads
        ``outputs[0]``; ``seg``: Leffa's app ends up showing only the last, lowest-scoring detection, because its
        visualiser clears the canvas for every person; we draw the person the photo is most surely of instead, which
        is the same image whenever one person is found). ``all_people`` draws every detection in ``seg``: in the
        ``leffa`` style lowest score first so the best one ends on top, in the ``detectron2`` style in detection
        order (best first), blended as detectron2 does. ``seg_style``: see :data:`leffa.densepose.render.SEG_STYLES`.
        """
        if kind not in KINDS:
            raise LeffaError(
                f"kind: unknown DensePose rendering '{kind}' (choose from {', '.join(KINDS)})", option="kind"
            )
        if seg_style not in SEG_STYLES:
            raise LeffaError(
                f"seg_style: unknown style '{seg_style}' (choose from {', '.join(SEG_STYLES)})", option="seg_style"
            )
        canvas_hw = self.image_size
        if len(self) == 0:
            return Image.fromarray(np.zeros((*canvas_hw, 3), dtype=np.uint8))
        if kind == "seg":
            people = list(range(len(self))) if all_people else [0]
            if seg_style == "leffa":
                people.reverse()
            return Image.fromarray(seg_image([self.person(i) for i in people], canvas_hw, seg_style))
        render = iuv_image if kind == "iuv" else index_image
        return Image.fromarray(render(self.person(0), canvas_hw))


class DensePoseEstimator:
    """DensePose R-CNN R50-FPN "s1x" (the network Leffa's preprocessing uses) running on torch alone.

    ``weights``: a detectron2 ``.pkl`` (default: ``densepose/model_final_162be9.pkl`` from the Leffa hub repository),
    or a ``.pth``/``.safetensors`` state dict with the same names. ``swap_channels`` (default True) feeds the RGB image
    where BGR is expected, reproducing Leffa's app, which passes an RGB array to detectron2's BGR predictor: the
    released Leffa models were shown DensePose computed that way. ``False`` gives the network true BGR.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str | torch.device = "cpu",
        offline: bool = False,
        config: DensePoseConfig | None = None,
        swap_channels: bool = True,
        model: DensePoseRCNN | None = None,
    ):
        self.config = config or DensePoseConfig()
        self.device = torch.device(device)
        self.swap_channels = swap_channels
        if model is None:
            if weights is None:
                from leffa.hub import fetch

                weights = fetch(WEIGHTS_FILE, offline=offline, what="DensePose R-CNN weights")
            model = load_detectron2_weights(DensePoseRCNN(self.config), weights)
        self.model = model.to(self.device).eval()

    @torch.no_grad()
    def predict(self, image: Image.Image) -> DensePoseResult:
        """Detect people and estimate their DensePose; boxes come back in the input image's pixels."""
        if not isinstance(image, Image.Image):
            raise LeffaError(f"DensePose input must be a PIL image, got {type(image).__name__}")
        tensor, (new_h, new_w) = preprocess(image, self.config, self.swap_channels)
        raw = self.model(tensor.to(self.device), (new_h, new_w))
        boxes = raw.detections.boxes.float().cpu()
        # detector_postprocess: back to input pixels, clip, drop boxes that became empty.
        boxes = boxes * torch.tensor([image.width / new_w, image.height / new_h] * 2)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image.width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image.height)
        keep = ((boxes[:, 2] - boxes[:, 0]) > 0) & ((boxes[:, 3] - boxes[:, 1]) > 0)
        index = torch.nonzero(keep).flatten()
        charts = raw.charts[index.to(raw.charts.u.device)] if len(index) else raw.charts
        return DensePoseResult(
            image_size=(image.height, image.width),
            boxes=boxes[index],
            scores=raw.detections.scores.cpu()[index],
            charts=ChartOutput(*(t.float().cpu() for t in (charts.coarse_segm, charts.fine_segm, charts.u, charts.v))),
        )

    def render(self, image: Image.Image, kind: str, all_people: bool = False, seg_style: str = "leffa") -> Image.Image:
        """The ``kind`` DensePose image (``iuv``, ``index`` or ``seg``) of ``image``, same size as ``image``."""
        return self.predict(image).render(kind, all_people=all_people, seg_style=seg_style)


@functools.lru_cache(maxsize=2)
def _cached_estimator(
    weights: str | None, device: str, offline: bool, config: DensePoseConfig | None = None, swap_channels: bool = True
) -> DensePoseEstimator:
    return DensePoseEstimator(weights=weights, device=device, offline=offline, config=config,
                              swap_channels=swap_channels)  # fmt: skip


def densepose_image(
    person: Image.Image,
    kind: str,
    *,
    weights: str | Path | None = None,
    device: str | None = None,
    offline: bool = False,
    all_people: bool = False,
    allow_empty: bool = False,
    config: DensePoseConfig | None = None,
    estimator: DensePoseEstimator | None = None,
    seg_style: str = "leffa",
    swap_channels: bool = True,
) -> Image.Image:
    """DensePose condition image of ``person`` for Leffa: ``seg`` (try-on), ``index`` (DressCode) or ``iuv`` (pose).

    The defaults give what Leffa's app gives its models (``seg_style="leffa"``, ``swap_channels=True``; see
    :meth:`DensePoseResult.render` and :func:`preprocess`). The estimator is built once per (weights, device,
    config, swap_channels) and reused; ``config`` defaults to the s1x settings
    (see :func:`leffa.densepose.config.config_from_yaml` to read them from a detectron2 yaml).
    With no person detected this raises
    :class:`LeffaError` unless ``allow_empty`` (then the image is black).
    """
    if kind not in KINDS:
        raise LeffaError(f"kind: unknown DensePose rendering '{kind}' (choose from {', '.join(KINDS)})", option="kind")
    if seg_style not in SEG_STYLES:
        raise LeffaError(
            f"seg_style: unknown style '{seg_style}' (choose from {', '.join(SEG_STYLES)})", option="seg_style"
        )
    if estimator is None:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        estimator = _cached_estimator(
            str(weights) if weights is not None else None, str(device), offline, config, swap_channels
        )
    result = estimator.predict(person)
    if len(result) == 0 and not allow_empty:
        raise LeffaError(
            f"DensePose: no person found (score > {estimator.config.score_threshold}) in the {person.width}x"
            f"{person.height} image"
        )
    return result.render(kind, all_people=all_people, seg_style=seg_style)
