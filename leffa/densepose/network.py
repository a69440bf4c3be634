"""DensePose R-CNN assembled from its parts; module names mirror detectron2's so the checkpoint maps one to one."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from leffa.densepose.backbone import FPN
from leffa.densepose.config import DensePoseConfig
from leffa.densepose.detector import (
    RPN,
    BoxHead,
    BoxPredictor,
    Detections,
    detect_boxes,
    multilevel_roi_align,
    roi_align,
)
from leffa.densepose.head import ChartOutput, Decoder, DensePoseHead, DensePosePredictor

ROI_LEVELS = ("p2", "p3", "p4", "p5")


class ROIHeads(nn.Module):
    """Box head and predictor on proposals, then the DensePose decoder, head and predictor on the kept boxes."""

    def __init__(self, config: DensePoseConfig):
        super().__init__()
        self.config = config
        resolution = config.box_pooler_resolution
        self.box_head = BoxHead(256 * resolution * resolution, 1024)
        self.box_predictor = BoxPredictor(1024, num_classes=1)
        self.decoder = Decoder()
        self.densepose_head = DensePoseHead(256, 512, 8)
        self.densepose_predictor = DensePosePredictor(512, config.coarse_segm_channels)

    def detect(self, features: dict[str, torch.Tensor], proposals: torch.Tensor, image_size) -> Detections:
        c = self.config
        pooled = multilevel_roi_align(
            [features[k] for k in ROI_LEVELS],
            proposals,
            c.box_pooler_resolution,
            c.box_pooler_sampling_ratio,
            c.box_pooler_aligned,
        )
        logits, deltas = self.box_predictor(self.box_head(pooled))
        return detect_boxes(
            logits, deltas, proposals, image_size, c.score_threshold, c.box_nms_threshold, c.max_detections
        )

    def densepose(self, features: dict[str, torch.Tensor], boxes: torch.Tensor, crop: bool = True) -> ChartOutput:
        """DensePose maps of ``boxes``. The decoder runs only on the window of the pyramid that the boxes read
        (plus a margin wider than its receptive field), which gives the same numbers as decoding the whole map."""
        c = self.config
        levels = [features[k] for k in ROI_LEVELS]
        shift = boxes.new_zeros(4)
        if crop:
            y0, y1, x0, x1 = decoder_window(boxes, levels[0].shape[2:])
            levels = [f[:, :, y0 >> i : y1 >> i, x0 >> i : x1 >> i] for i, f in enumerate(levels)]
            shift = boxes.new_tensor([x0, y0, x0, y0]) * 4.0
        decoded = self.decoder(levels)
        pooled = roi_align(
            decoded,
            boxes - shift,
            c.densepose_pooler_resolution,
            0.25,
            c.densepose_pooler_sampling_ratio,
            c.densepose_pooler_aligned,
        )
        return self.densepose_predictor(self.densepose_head(pooled))


# Decoder receptive field at stride 4: the P5 branch (3 convs, 3 bilinear x2 upsamplings) reaches ~28 px; keep 48.
DECODER_MARGIN = 48


def decoder_window(boxes: torch.Tensor, p2_size) -> tuple[int, int, int, int]:
    """Rows y0:y1 and columns x0:x1 of the stride-4 map covering ``boxes`` plus ``DECODER_MARGIN``, aligned to 8
    (so that they fall on whole pixels of P5) and clipped to the map."""
    height, width = int(p2_size[0]), int(p2_size[1])
    low = (boxes[:, :2].min(dim=0).values / 4.0).floor() - DECODER_MARGIN
    high = (boxes[:, 2:].max(dim=0).values / 4.0).ceil() + DECODER_MARGIN
    x0, y0 = (max(0, int(v) // 8 * 8) for v in low.tolist())
    x1, y1 = (int(v) for v in high.tolist())
    x1 = width if x1 >= width else min(width, -(-x1 // 8) * 8)
    y1 = height if y1 >= height else min(height, -(-y1 // 8) * 8)
    return y0, y1, x0, x1


@dataclass
class RawPrediction:
    """Network output for one image in the coordinates of the resized input: boxes, scores and DensePose maps."""

    detections: Detections
    charts: ChartOutput


class DensePoseRCNN(nn.Module):
    """``backbone`` (ResNet-50 FPN), ``proposal_generator`` (RPN) and ``roi_heads`` (box + DensePose)."""

    def __init__(self, config: DensePoseConfig | None = None):
        super().__init__()
        self.config = config or DensePoseConfig()
        c = self.config
        self.backbone = FPN()
        self.proposal_generator = RPN(
            pre_nms_topk=c.rpn_pre_nms_topk, post_nms_topk=c.rpn_post_nms_topk, nms_threshold=c.rpn_nms_threshold
        )
        self.roi_heads = ROIHeads(c)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, image_size: tuple[int, int]) -> RawPrediction:
        """``images``: one normalised BGR image (1, 3, H, W) padded to a multiple of 32; ``image_size``: its (h, w)
        before padding."""
        if images.shape[0] != 1:
            raise ValueError("DensePoseRCNN runs one image at a time")
        features = self.backbone(images)
        proposals, _ = self.proposal_generator([features[k] for k in ("p2", "p3", "p4", "p5", "p6")], image_size)
        detections = self.roi_heads.detect(features, proposals, image_size)
        if len(detections.boxes) == 0:
            empty = features["p2"].new_zeros((0, 1, 1, 1))
            return RawPrediction(detections, ChartOutput(empty, empty, empty, empty))
        return RawPrediction(detections, self.roi_heads.densepose(features, detections.boxes))
