"""Person detection of DensePose R-CNN in plain torch: anchors, RPN, RoIAlign, the box head and NMS.

These follow detectron2's test-time behaviour for the ``Base-DensePose-RCNN-FPN`` config (anchor sizes 32..512 at
aspect ratios 0.5/1/2, per-level top-1000 proposals, NMS 0.7, 1000 proposals kept; a 2-FC box head on 7x7 RoIAlign
features; softmax scores whose last column is background; class-specific box deltas with weights 10/10/5/5; NMS 0.5;
at most 100 detections) so the released weights give the boxes they gave under detectron2.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Largest log-scale a box delta may apply (detectron2's _DEFAULT_SCALE_CLAMP): boxes grow at most 1000/16 times.
SCALE_CLAMP = math.log(1000.0 / 16)


# ----------------------------------------------------------------------------------------------------- boxes


def cell_anchors(size: float, aspect_ratios: tuple[float, ...]) -> torch.Tensor:
    """Anchors (A, 4) centred on the origin: area ``size**2``, height/width = each aspect ratio."""
    anchors = []
    for ratio in aspect_ratios:
        width = math.sqrt(size * size / ratio)
        height = ratio * width
        anchors.append([-width / 2.0, -height / 2.0, width / 2.0, height / 2.0])
    return torch.tensor(anchors, dtype=torch.float32)


def grid_anchors(base: torch.Tensor, height: int, width: int, stride: int, offset: float = 0.0) -> torch.Tensor:
    """All anchors of one feature map, (H*W*A, 4) ordered row, column, anchor (the RPN output order)."""
    shifts_x = torch.arange(offset * stride, width * stride, step=stride, dtype=torch.float32, device=base.device)
    shifts_y = torch.arange(offset * stride, height * stride, step=stride, dtype=torch.float32, device=base.device)
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
    return (shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4)


def apply_deltas(deltas: torch.Tensor, boxes: torch.Tensor, weights: tuple[float, float, float, float]) -> torch.Tensor:
    """Decode (dx, dy, dw, dh) deltas (R, 4k) relative to boxes (R, 4) into boxes (R, 4k) (Fast R-CNN coding)."""
    deltas = deltas.float()
    boxes = boxes.to(deltas.dtype)
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx = deltas[:, 0::4] / wx
    dy = deltas[:, 1::4] / wy
    dw = torch.clamp(deltas[:, 2::4] / ww, max=SCALE_CLAMP)
    dh = torch.clamp(deltas[:, 3::4] / wh, max=SCALE_CLAMP)
    pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
    pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
    pred_w = torch.exp(dw) * widths[:, None]
    pred_h = torch.exp(dh) * heights[:, None]
    x1 = pred_ctr_x - 0.5 * pred_w
    y1 = pred_ctr_y - 0.5 * pred_h
    x2 = pred_ctr_x + 0.5 * pred_w
    y2 = pred_ctr_y + 0.5 * pred_h
    return torch.stack((x1, y1, x2, y2), dim=2).reshape(deltas.shape)


def clip_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Boxes (..., 4) clamped into the image."""
    x1 = boxes[..., 0].clamp(min=0, max=width)
    y1 = boxes[..., 1].clamp(min=0, max=height)
    x2 = boxes[..., 2].clamp(min=0, max=width)
    y2 = boxes[..., 3].clamp(min=0, max=height)
    return torch.stack((x1, y1, x2, y2), dim=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, max_keep: int | None = None) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of kept boxes, highest score first.

    A box is dropped when its IoU with a higher-scoring kept box is strictly above ``iou_threshold`` (torchvision's
    rule). ``max_keep`` stops early once that many boxes are kept, which changes nothing about the first ones.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    sorted_boxes = boxes[order].cpu()
    areas = box_area(sorted_boxes)
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        if max_keep is not None and len(keep) >= max_keep:
            break
        rest = sorted_boxes[i + 1 :]
        xx1 = torch.maximum(rest[:, 0], sorted_boxes[i, 0])
        yy1 = torch.maximum(rest[:, 1], sorted_boxes[i, 1])
        xx2 = torch.minimum(rest[:, 2], sorted_boxes[i, 2])
        yy2 = torch.minimum(rest[:, 3], sorted_boxes[i, 3])
        inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
        iou = inter / (areas[i] + areas[i + 1 :] - inter)
        suppressed[i + 1 :] |= iou > iou_threshold
    return order[torch.tensor(keep, dtype=torch.int64).to(order.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS run separately inside each group (FPN level or class); kept indices sorted by decreasing score."""
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for group in torch.unique(groups).tolist():
        members = torch.nonzero(groups == group).flatten()
        keep_mask[members[nms(boxes[members], scores[members], iou_threshold)]] = True
    kept = torch.nonzero(keep_mask).flatten()
    return kept[torch.argsort(scores[kept], descending=True, stable=True)]


# ------------------------------------------------------------------------------------------------ RoIAlign


def roi_align(
    features: torch.Tensor,
    boxes: torch.Tensor,
    output_size: int,
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
    chunk: int = 512,
) -> torch.Tensor:
    """RoIAlign of one image's feature map (1, C, H, W) over boxes (R, 4) in image coordinates -> (R, C, S, S).

    Same sampling as detectron2's ROIAlign (``aligned=False``) / ROIAlignV2 (``aligned=True``): each output bin
    averages ``sampling_ratio``^2 bilinear samples (adaptive ``ceil(roi_size / S)`` when ``sampling_ratio <= 0``),
    samples more than one pixel outside the map read zero, samples within one pixel of the border read the border.
    """
    if features.shape[0] != 1:
        raise ValueError("roi_align takes the feature map of a single image")
    channels, height, width = features.shape[1:]
    out = features.new_zeros((len(boxes), channels, output_size, output_size))
    if len(boxes) == 0:
        return out
    offset = 0.5 if aligned else 0.0
    scaled = boxes.to(features.dtype) * spatial_scale - offset
    roi_w = scaled[:, 2] - scaled[:, 0]
    roi_h = scaled[:, 3] - scaled[:, 1]
    if not aligned:
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_sizes = torch.full((len(boxes), 2), sampling_ratio, dtype=torch.int64, device=boxes.device)
    else:
        grid_sizes = torch.stack((torch.ceil(roi_h / output_size), torch.ceil(roi_w / output_size)), dim=1)
        grid_sizes = grid_sizes.long().clamp(min=1)
    grids = []
    for grid_h, grid_w in torch.unique(grid_sizes, dim=0).tolist():
        members = torch.nonzero((grid_sizes[:, 0] == grid_h) & (grid_sizes[:, 1] == grid_w)).flatten()
        grids.append((grid_h, grid_w, members))
    for grid_h, grid_w, members in grids:
        for start in range(0, len(members), chunk):
            index = members[start : start + chunk]
            out[index] = _roi_align_fixed_grid(
                features, scaled[index, 0], scaled[index, 1], roi_w[index], roi_h[index], output_size, grid_h, grid_w
            )
    return out


def _axis_samples(start, length, bins, grid, extent):
    """Corner indices (R, bins, 2*grid) and bilinear weights of the samples along one axis, already divided by
    ``grid`` so that summing over a bin's samples averages them. RoIAlign's rules: a sample more than one pixel
    outside reads zero, one in the margin below 0 reads pixel 0, one at or past ``extent - 1`` reads the last pixel."""
    steps = (torch.arange(bins * grid, device=start.device, dtype=start.dtype) + 0.5) / grid
    pos = start[:, None] + steps[None, :] * (length / bins)[:, None]
    inside = (pos >= -1.0) & (pos <= extent)
    pos = pos.clamp(min=0)
    low = pos.floor().long()
    at_end = low >= extent - 1
    low = torch.where(at_end, torch.full_like(low, extent - 1), low)
    pos = torch.where(at_end, low.to(pos.dtype), pos)
    high = torch.where(at_end, low, low + 1)
    frac = pos - low
    weights = torch.stack((1.0 - frac, frac), dim=-1) * (inside[..., None].to(pos.dtype) / grid)
    rois = len(start)
    return torch.stack((low, high), dim=-1).reshape(rois, bins, 2 * grid), weights.reshape(rois, bins, 2 * grid)


def _roi_align_fixed_grid(features, x0, y0, roi_w, roi_h, size, grid_h, grid_w):
    """RoIAlign for RoIs sharing one sampling grid, as one sparse (bins x pixels) @ (pixels x channels) product.

    Bilinear sampling on a rectangular grid is separable, so every output bin is a fixed weighted sum of at most
    ``4 * grid_h * grid_w`` pixels; a sparse matrix of those weights reads channel-last features once.
    """
    channels, height, width = features.shape[1:]
    rois = len(x0)
    rows_i, rows_w = _axis_samples(y0, roi_h, size, grid_h, height)
    cols_i, cols_w = _axis_samples(x0, roi_w, size, grid_w, width)
    pixel = rows_i[:, :, None, :, None] * width + cols_i[:, None, :, None, :]  # (R, S, S, 2gh, 2gw)
    weight = rows_w[:, :, None, :, None] * cols_w[:, None, :, None, :]
    per_bin = 4 * grid_h * grid_w
    bins = torch.arange(rois * size * size, device=features.device).repeat_interleave(per_bin)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sparse CSR support is labelled beta
        matrix = torch.sparse_coo_tensor(
            torch.stack((bins, pixel.reshape(-1))),
            weight.reshape(-1),
            (rois * size * size, height * width),
            check_invariants=False,
        ).to_sparse_csr()
        pooled = matrix @ features[0].reshape(channels, height * width).t()
    return pooled.reshape(rois, size, size, channels).permute(0, 3, 1, 2)


def assign_levels(boxes: torch.Tensor, min_level: int = 2, max_level: int = 5) -> torch.Tensor:
    """FPN level of each box (Eqn. 1 of the FPN paper, canonical 224 px at level 4), as an offset from ``min_level``."""
    sizes = torch.sqrt(box_area(boxes))
    levels = torch.floor(4 + torch.log2(sizes / 224 + 2.220446049250313e-16))
    return levels.clamp(min=min_level, max=max_level).to(torch.int64) - min_level


def multilevel_roi_align(
    features: list[torch.Tensor], boxes: torch.Tensor, output_size: int, sampling_ratio: int, aligned: bool
) -> torch.Tensor:
    """RoIAlign from P2..P5, each box read on the level its size picks."""
    levels = assign_levels(boxes)
    out = features[0].new_zeros((len(boxes), features[0].shape[1], output_size, output_size))
    for level, feature in enumerate(features):
        index = torch.nonzero(levels == level).flatten()
        if len(index):
            out[index] = roi_align(feature, boxes[index], output_size, 1.0 / 2 ** (level + 2), sampling_ratio, aligned)
    return out


# ------------------------------------------------------------------------------------------------------- RPN


class RPNHead(nn.Module):
    """Shared 3x3 conv + ReLU, then per-anchor objectness logits and box deltas on every FPN level."""

    def __init__(self, channels: int = 256, num_anchors: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.objectness_logits = nn.Conv2d(channels, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(channels, num_anchors * 4, 1)

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits, deltas = [], []
        for x in features:
            t = F.relu(self.conv(x))
            logits.append(self.objectness_logits(t))
            deltas.append(self.anchor_deltas(t))
        return logits, deltas


class RPN(nn.Module):
    """Region proposals for one image: top-k per level, decode, clip, drop empty boxes, per-level NMS, keep top-k."""

    def __init__(
        self,
        anchor_sizes: tuple[float, ...] = (32, 64, 128, 256, 512),
        aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
        strides: tuple[int, ...] = (4, 8, 16, 32, 64),
        pre_nms_topk: int = 1000,
        post_nms_topk: int = 1000,
        nms_threshold: float = 0.7,
        min_box_size: float = 0.0,
    ):
        super().__init__()
        self.rpn_head = RPNHead(256, len(aspect_ratios))
        self.cell_anchors = [cell_anchors(size, aspect_ratios) for size in anchor_sizes]
        self.strides = strides
        self.pre_nms_topk = pre_nms_topk
        self.post_nms_topk = post_nms_topk
        self.nms_threshold = nms_threshold
        self.min_box_size = min_box_size

    def forward(self, features: list[torch.Tensor], image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Proposal boxes (P, 4) and objectness logits (P,), best first, for a batch of one image."""
        logits, deltas = self.rpn_head(features)
        boxes_all, scores_all, levels_all = [], [], []
        for level, (logit, delta, base, stride) in enumerate(zip(logits, deltas, self.cell_anchors, self.strides)):
            height, width = logit.shape[2:]
            anchors = grid_anchors(base.to(logit.device), height, width, stride)
            logit = logit[0].permute(1, 2, 0).reshape(-1)  # (H*W*A,)
            delta = delta[0].view(-1, 4, height, width).permute(2, 3, 0, 1).reshape(-1, 4)
            k = min(self.pre_nms_topk, logit.numel())
            top_scores, top_index = logit.topk(k)
            boxes_all.append(apply_deltas(delta[top_index], anchors[top_index], (1.0, 1.0, 1.0, 1.0)))
            scores_all.append(top_scores)
            levels_all.append(torch.full((k,), level, dtype=torch.int64, device=logit.device))
        boxes, scores, levels = torch.cat(boxes_all), torch.cat(scores_all), torch.cat(levels_all)
        finite = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
        boxes, scores, levels = boxes[finite], scores[finite], levels[finite]
        boxes = clip_boxes(boxes, *image_size)
        nonempty = ((boxes[:, 2] - boxes[:, 0]) > self.min_box_size) & ((boxes[:, 3] - boxes[:, 1]) > self.min_box_size)
        boxes, scores, levels = boxes[nonempty], scores[nonempty], levels[nonempty]
        keep = batched_nms(boxes, scores, levels, self.nms_threshold)[: self.post_nms_topk]
        return boxes[keep], scores[keep]


# ------------------------------------------------------------------------------------------------ box head


class BoxHead(nn.Module):
    """Two fully connected layers (``FastRCNNConvFCHead`` with NUM_FC 2) over flattened 7x7 RoI features."""

    def __init__(self, in_features: int = 256 * 7 * 7, hidden: int = 1024):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc2(F.relu(self.fc1(torch.flatten(x, 1)))))


class BoxPredictor(nn.Module):
    """Class logits (persons + background, background last) and class-specific box deltas."""

    def __init__(self, hidden: int = 1024, num_classes: int = 1):
        super().__init__()
        self.cls_score = nn.Linear(hidden, num_classes + 1)
        self.bbox_pred = nn.Linear(hidden, num_classes * 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


@dataclass
class Detections:
    """Person boxes of one image, best first: ``boxes`` (N, 4) x1 y1 x2 y2, ``scores`` (N,)."""

    boxes: torch.Tensor
    scores: torch.Tensor


def detect_boxes(
    cls_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    proposals: torch.Tensor,
    image_size: tuple[int, int],
    score_threshold: float,
    nms_threshold: float = 0.5,
    max_detections: int = 100,
) -> Detections:
    """Fast R-CNN test-time inference for the single person class: decode, clip, threshold, NMS, keep the best."""
    boxes = apply_deltas(box_deltas, proposals, (10.0, 10.0, 5.0, 5.0))
    scores = F.softmax(cls_logits, dim=-1)
    finite = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    boxes, scores = boxes[finite], scores[finite]
    boxes = clip_boxes(boxes.view(-1, 4), *image_size)
    scores = scores[:, 0]  # the person class; the last column is background
    passed = scores > score_threshold
    boxes, scores = boxes[passed], scores[passed]
    keep = nms(boxes, scores, nms_threshold, max_keep=max_detections)
    return Detections(boxes=boxes[keep], scores=scores[keep])
