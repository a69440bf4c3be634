"""Settings of the DensePose R-CNN R50-FPN "s1x" model at test time, as its detectron2 config resolves them.

Values come from detectron2's defaults, DensePose's ``add_densepose_config`` and ``Base-DensePose-RCNN-FPN.yaml`` /
``densepose_rcnn_R_50_FPN_s1x.yaml``; ``score_threshold`` is the 0.5 that Leffa's ``DensePosePredictor`` sets.
"""

from __future__ import annotations

from dataclasses import dataclass

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
