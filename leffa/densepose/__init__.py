"""DensePose without detectron2: the DensePose R-CNN R50-FPN "s1x" network in plain torch and the renderings
(``iuv``, ``index``, ``seg``) Leffa's models take as their DensePose condition."""

from leffa.densepose.config import DensePoseConfig, config_from_yaml
from leffa.densepose.estimator import DensePoseEstimator, DensePoseResult, densepose_image
from leffa.densepose.render import KINDS

__all__ = ["KINDS", "DensePoseConfig", "config_from_yaml", "DensePoseEstimator", "DensePoseResult", "densepose_image"]
