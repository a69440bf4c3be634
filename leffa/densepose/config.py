"""Settings of the DensePose R-CNN R50-FPN "s1x" model at test time, as its detectron2 config resolves them.

Values come from detectron2's defaults, DensePose's ``add_densepose_config`` and ``Base-DensePose-RCNN-FPN.yaml`` /
``densepose_rcnn_R_50_FPN_s1x.yaml``; ``score_threshold`` is the 0.5 that Leffa's ``DensePosePredictor`` sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

WEIGHTS_FILE = "densepose/model_final_162be9.pkl"
CONFIG_FILE = "densepose/densepose_rcnn_R_50_FPN_s1x.yaml"


@dataclass(frozen=True)
class DensePoseConfig:
    # INPUT: ResizeShortestEdge at test time, BGR input, mean subtraction only.
    min_size: int = 800
    max_size: int = 1333
    pixel_mean_bgr: tuple[float, float, float] = (103.530, 116.280, 123.675)
    pixel_std_bgr: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # RPN (PRE/POST_NMS_TOPK_TEST, NMS_THRESH, MIN_SIZE).
    rpn_pre_nms_topk: int = 1000
    rpn_post_nms_topk: int = 1000
    rpn_nms_threshold: float = 0.7
    # ROI box head (POOLER_TYPE "ROIAlign" = aligned False, POOLER_SAMPLING_RATIO 2).
    box_pooler_resolution: int = 7
    box_pooler_sampling_ratio: int = 2
    box_pooler_aligned: bool = False
    score_threshold: float = 0.5
    box_nms_threshold: float = 0.5
    max_detections: int = 100
    # DensePose head (POOLER_TYPE "ROIAlign" from the base yaml, POOLER_RESOLUTION 28, NUM_COARSE_SEGM_CHANNELS 2).
    densepose_pooler_resolution: int = 28
    densepose_pooler_sampling_ratio: int = 2
    densepose_pooler_aligned: bool = False
    coarse_segm_channels: int = 2


# detectron2 / DensePose defaults for the keys above, before any yaml is applied (where the yaml is silent).
_DEFAULTS = {
    ("INPUT", "MIN_SIZE_TEST"): 800,
    ("INPUT", "MAX_SIZE_TEST"): 1333,
    ("MODEL", "PIXEL_MEAN"): [103.530, 116.280, 123.675],
    ("MODEL", "PIXEL_STD"): [1.0, 1.0, 1.0],
    ("MODEL", "RPN", "PRE_NMS_TOPK_TEST"): 1000,
    ("MODEL", "RPN", "POST_NMS_TOPK_TEST"): 1000,
    ("MODEL", "RPN", "NMS_THRESH"): 0.7,
    ("MODEL", "ROI_HEADS", "NMS_THRESH_TEST"): 0.5,
    ("TEST", "DETECTIONS_PER_IMAGE"): 100,
    ("MODEL", "ROI_BOX_HEAD", "POOLER_RESOLUTION"): 14,
    ("MODEL", "ROI_BOX_HEAD", "POOLER_SAMPLING_RATIO"): 0,
    ("MODEL", "ROI_BOX_HEAD", "POOLER_TYPE"): "ROIAlignV2",
    ("MODEL", "ROI_DENSEPOSE_HEAD", "POOLER_RESOLUTION"): 28,
    ("MODEL", "ROI_DENSEPOSE_HEAD", "POOLER_SAMPLING_RATIO"): 2,
    ("MODEL", "ROI_DENSEPOSE_HEAD", "POOLER_TYPE"): "ROIAlignV2",
    ("MODEL", "ROI_DENSEPOSE_HEAD", "NUM_COARSE_SEGM_CHANNELS"): 2,
}

# Settings that change the network's layout: only the R50-FPN s1x values are implemented.
_REQUIRED = {
    ("MODEL", "META_ARCHITECTURE"): "GeneralizedRCNN",
    ("MODEL", "BACKBONE", "NAME"): "build_resnet_fpn_backbone",
    ("MODEL", "RESNETS", "DEPTH"): 50,
    ("MODEL", "ROI_HEADS", "NAME"): "DensePoseROIHeads",
    ("MODEL", "ROI_HEADS", "NUM_CLASSES"): 1,
    ("MODEL", "ROI_BOX_HEAD", "NAME"): "FastRCNNConvFCHead",
    ("MODEL", "ROI_BOX_HEAD", "NUM_FC"): 2,
    ("MODEL", "ROI_DENSEPOSE_HEAD", "NAME"): "DensePoseV1ConvXHead",
    ("MODEL", "ROI_DENSEPOSE_HEAD", "DECODER_ON"): True,
}


def _read_yaml(path, depth: int = 0) -> dict:
    """A detectron2 yaml with its ``_BASE_`` chain merged (base first, the file's own keys win)."""
    import yaml

    from leffa.errors import LeffaError

    path = Path(path)
    if depth > 8:
        raise LeffaError(f"{path}: _BASE_ chain too deep")
    if not path.is_file():
        raise LeffaError(f"{path}: DensePose config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise LeffaError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise LeffaError(f"{path}: not a detectron2 config (top level is not a mapping)")
    base = data.pop("_BASE_", None)
    if base is None:
        return data
    merged = _read_yaml(path.parent / base, depth + 1)
    _merge(merged, data)
    return merged


def _merge(into: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _lookup(tree: dict, keys: tuple[str, ...]):
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def config_from_yaml(path, score_threshold: float = 0.5) -> DensePoseConfig:
    """Test-time settings from a detectron2 DensePose yaml (e.g. ``densepose_rcnn_R_50_FPN_s1x.yaml`` next to its
    ``Base-DensePose-RCNN-FPN.yaml``); a layout other than R50-FPN with the V1ConvX head is refused.
    ``score_threshold`` is set after the yaml, as Leffa's predictor does."""
    from leffa.errors import LeffaError

    tree = _read_yaml(path)
    for keys, required in _REQUIRED.items():
        value = _lookup(tree, keys)
        if value is not None and value != required:
            raise LeffaError(
                f"{path}: {'.'.join(keys)} = {value!r} is not supported (only the R50-FPN s1x layout: {required!r})"
            )

    def get(*keys):
        value = _lookup(tree, keys)
        return _DEFAULTS[keys] if value is None else value

    def aligned(pooler_type: str, where: str) -> bool:
        if pooler_type not in ("ROIAlign", "ROIAlignV2"):
            raise LeffaError(f"{path}: {where}.POOLER_TYPE = {pooler_type!r} is not supported (ROIAlign, ROIAlignV2)")
        return pooler_type == "ROIAlignV2"

    def triple(*keys) -> tuple[float, float, float]:
        values = tuple(float(v) for v in get(*keys))
        if len(values) != 3:
            raise LeffaError(f"{path}: {'.'.join(keys)} = {list(values)} must have 3 values (B, G, R)")
        return values[0], values[1], values[2]

    min_size = get("INPUT", "MIN_SIZE_TEST")
    return DensePoseConfig(
        min_size=int(min_size[0] if isinstance(min_size, (list, tuple)) else min_size),
        max_size=int(get("INPUT", "MAX_SIZE_TEST")),
        pixel_mean_bgr=triple("MODEL", "PIXEL_MEAN"),
        pixel_std_bgr=triple("MODEL", "PIXEL_STD"),
        rpn_pre_nms_topk=int(get("MODEL", "RPN", "PRE_NMS_TOPK_TEST")),
        rpn_post_nms_topk=int(get("MODEL", "RPN", "POST_NMS_TOPK_TEST")),
        rpn_nms_threshold=float(get("MODEL", "RPN", "NMS_THRESH")),
        box_pooler_resolution=int(get("MODEL", "ROI_BOX_HEAD", "POOLER_RESOLUTION")),
        box_pooler_sampling_ratio=int(get("MODEL", "ROI_BOX_HEAD", "POOLER_SAMPLING_RATIO")),
        box_pooler_aligned=aligned(get("MODEL", "ROI_BOX_HEAD", "POOLER_TYPE"), "MODEL.ROI_BOX_HEAD"),
        score_threshold=float(score_threshold),
        box_nms_threshold=float(get("MODEL", "ROI_HEADS", "NMS_THRESH_TEST")),
        max_detections=int(get("TEST", "DETECTIONS_PER_IMAGE")),
        densepose_pooler_resolution=int(get("MODEL", "ROI_DENSEPOSE_HEAD", "POOLER_RESOLUTION")),
        densepose_pooler_sampling_ratio=int(get("MODEL", "ROI_DENSEPOSE_HEAD", "POOLER_SAMPLING_RATIO")),
        densepose_pooler_aligned=aligned(get("MODEL", "ROI_DENSEPOSE_HEAD", "POOLER_TYPE"), "MODEL.ROI_DENSEPOSE_HEAD"),
        coarse_segm_channels=int(get("MODEL", "ROI_DENSEPOSE_HEAD", "NUM_COARSE_SEGM_CHANNELS")),
    )
