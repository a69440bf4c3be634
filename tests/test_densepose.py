"""DensePose without detectron2: RoIAlign/NMS/anchor semantics, the safe weight loader and the renderings."""

from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest
import torch

from leffa.densepose.detector import apply_deltas, batched_nms, cell_anchors, grid_anchors, nms, roi_align
from leffa.densepose.estimator import DensePoseResult, resized_shape
from leffa.densepose.head import ChartOutput
from leffa.densepose.network import DensePoseRCNN
from leffa.densepose.render import PARULA_RGB, int_box_xywh, person_chart, seg_image
from leffa.densepose.weights import load_detectron2_weights, map_weights, read_detectron2_pickle
from leffa.errors import LeffaError

# ------------------------------------------------------------------ RoIAlign against a loop over the C++ kernel rules


def _bilinear(feature, y, x):
    channels, height, width = feature.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return torch.zeros(channels, dtype=torch.float64)
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return (
        hy * hx * feature[:, y_low, x_low]
        + hy * lx * feature[:, y_low, x_high]
        + ly * hx * feature[:, y_high, x_low]
        + ly * lx * feature[:, y_high, x_high]
    )


def _reference_roi_align(feature, box, size, scale, sampling_ratio, aligned):
    feature = feature[0].double()
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (float(v) * scale - offset for v in box)
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
    bin_h, bin_w = roi_h / size, roi_w / size
    grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / size)
    grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / size)
    out = torch.zeros(feature.shape[0], size, size, dtype=torch.float64)
    for ph in range(size):
        for pw in range(size):
            total = torch.zeros(feature.shape[0], dtype=torch.float64)
            for iy in range(grid_h):
                y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                for ix in range(grid_w):
                    total += _bilinear(feature, y, x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w)
            out[:, ph, pw] = total / max(grid_h * grid_w, 1)
    return out


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, 0])
def test_roi_align_matches_the_reference_sampling(aligned, sampling_ratio):
    torch.manual_seed(0)
    feature = torch.randn(1, 3, 9, 13)
    # inside, partly outside on the top-left, near the bottom-right border, tiny, and wider than the map
    boxes = torch.tensor(
        [
            [0.0, 0.0, 52.0, 36.0],
            [-10.0, -8.0, 20.0, 14.0],
            [40.0, 20.0, 60.0, 45.0],
            [5.3, 7.7, 6.1, 8.0],
            [30.0, 3.0, 90.0, 80.0],
        ]
    )
    got = roi_align(feature, boxes, 7, 0.25, sampling_ratio, aligned).double()
    expected = torch.stack([_reference_roi_align(feature, b, 7, 0.25, sampling_ratio, aligned) for b in boxes])
    assert torch.allclose(got, expected, atol=1e-5)


def test_roi_align_half_pixel_offset_of_aligned_mode():
    # value(y, x) = 8y + x is linear, so bilinear samples are exact and each bin is the value at its sample mean.
    feature = torch.arange(64.0).view(1, 1, 8, 8)
    box = torch.tensor([[8.0, 8.0, 24.0, 24.0]])  # [2, 6) on the stride-4 map
    # ROIAlign (aligned=False): bin 0 samples at 2.5 and 3.5 -> 3.0 on both axes -> 27.
    assert roi_align(feature, box, 2, 0.25, 2, aligned=False)[0, 0, 0, 0].item() == pytest.approx(27.0)
    # ROIAlignV2 shifts by half a pixel: samples at 2.0 and 3.0 -> 2.5 -> 22.5.
    assert roi_align(feature, box, 2, 0.25, 2, aligned=True)[0, 0, 0, 0].item() == pytest.approx(22.5)


# ------------------------------------------------------------------------------------------- boxes and NMS


def test_nms_drops_only_overlaps_strictly_above_the_threshold():
    boxes = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 6.0], [20.0, 20.0, 30.0, 30.0]]
    )
    scores = torch.tensor([0.9, 0.8, 0.85, 0.1])
    # IoU(box0, box2) = 0.6 > 0.5 -> dropped; IoU(box0, box1) = 0.5 -> kept; box3 does not overlap.
    assert nms(boxes, scores, 0.5).tolist() == [0, 1, 3]
    assert nms(boxes, scores, 0.5, max_keep=2).tolist() == [0, 1]


def test_batched_nms_only_suppresses_within_a_group():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]])
    scores = torch.tensor([0.5, 0.9, 0.7])
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 1]), 0.7).tolist() == [1, 0]


def test_anchors_keep_area_and_follow_the_rpn_output_order():
    base = cell_anchors(32, (0.5, 1.0, 2.0))
    widths, heights = base[:, 2] - base[:, 0], base[:, 3] - base[:, 1]
    assert torch.allclose(widths * heights, torch.full((3,), 1024.0))
    assert torch.allclose(heights / widths, torch.tensor([0.5, 1.0, 2.0]))
    anchors = grid_anchors(base, height=2, width=3, stride=4)
    assert anchors.shape == (2 * 3 * 3, 4)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    # index = (row * W + col) * A + a
    assert centres[(1 * 3 + 2) * 3 + 1].tolist() == [8.0, 4.0]


def test_box_deltas_decode():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    assert torch.allclose(apply_deltas(torch.zeros(1, 4), boxes, (10.0, 10.0, 5.0, 5.0)), boxes)
    moved = apply_deltas(torch.tensor([[10.0, 0.0, 5.0 * math.log(2.0), 0.0]]), boxes, (10.0, 10.0, 5.0, 5.0))
    assert torch.allclose(moved, torch.tensor([[20.0, 20.0, 60.0, 60.0]]))  # centre +1 width, width doubled


def test_resize_follows_resize_shortest_edge():
    assert resized_shape(1024, 768, 800, 1333) == (1067, 800)
    assert resized_shape(300, 2000, 800, 1333) == (200, 1333)


# ------------------------------------------------------------------------------------------------ weights


def _expected_names_and_shapes() -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in DensePoseRCNN().state_dict().items()}


def test_our_layers_carry_detectron2_names_and_shapes():
    names = _expected_names_and_shapes()
    known = {
        "backbone.bottom_up.stem.conv1.weight": (64, 3, 7, 7),
        "backbone.bottom_up.stem.conv1.norm.running_var": (64,),
        "backbone.bottom_up.res2.0.shortcut.weight": (256, 64, 1, 1),
        "backbone.bottom_up.res3.0.conv1.weight": (128, 256, 1, 1),
        "backbone.bottom_up.res4.5.conv2.weight": (256, 256, 3, 3),
        "backbone.bottom_up.res5.2.conv3.norm.bias": (2048,),
        "backbone.fpn_lateral2.weight": (256, 256, 1, 1),
        "backbone.fpn_lateral5.weight": (256, 2048, 1, 1),
        "backbone.fpn_output4.weight": (256, 256, 3, 3),
        "proposal_generator.rpn_head.conv.weight": (256, 256, 3, 3),
        "proposal_generator.rpn_head.objectness_logits.weight": (3, 256, 1, 1),
        "proposal_generator.rpn_head.anchor_deltas.weight": (12, 256, 1, 1),
        "roi_heads.box_head.fc1.weight": (1024, 12544),
        "roi_heads.box_head.fc2.weight": (1024, 1024),
        "roi_heads.box_predictor.cls_score.weight": (2, 1024),
        "roi_heads.box_predictor.bbox_pred.weight": (4, 1024),
        "roi_heads.decoder.p2.0.weight": (256, 256, 3, 3),
        "roi_heads.decoder.p5.4.weight": (256, 256, 3, 3),
        "roi_heads.decoder.predictor.weight": (256, 256, 1, 1),
        "roi_heads.densepose_head.body_conv_fcn1.weight": (512, 256, 3, 3),
        "roi_heads.densepose_head.body_conv_fcn8.weight": (512, 512, 3, 3),
        "roi_heads.densepose_predictor.ann_index_lowres.weight": (512, 2, 4, 4),
        "roi_heads.densepose_predictor.index_uv_lowres.weight": (512, 25, 4, 4),
        "roi_heads.densepose_predictor.u_lowres.bias": (25,),
        "roi_heads.densepose_predictor.v_lowres.weight": (512, 25, 4, 4),
    }
    for name, shape in known.items():
        assert names.get(name) == shape, name
    assert not any(name.endswith("num_batches_tracked") for name in names)
    assert "backbone.bottom_up.res2.1.shortcut.weight" not in names
    assert len([n for n in names if n.startswith("backbone.bottom_up.") and n.endswith("conv1.weight")]) == 1 + 16
    assert "roi_heads.decoder.p2.1.weight" not in names and "roi_heads.decoder.p5.1.weight" not in names


@pytest.fixture(scope="module")
def synthetic_pickle(tmp_path_factory):
    """A detectron2 model-zoo style pickle: every weight under its detectron2 name, plus the non-weight buffers a
    detectron2 checkpoint may hold. float16 halves the file; the loader casts to the model's dtype."""
    # each weight filled with its own index, so a weight landing under the wrong name shows
    names = _expected_names_and_shapes().items()
    model = {name: np.full(shape, i, dtype=np.float16) for i, (name, shape) in enumerate(names)}
    model["pixel_mean"] = np.array([103.53, 116.28, 123.675], dtype=np.float32).reshape(3, 1, 1)
    model["proposal_generator.anchor_generator.cell_anchors.0"] = np.zeros((3, 4), dtype=np.float32)
    path = tmp_path_factory.mktemp("dp") / "model_final_162be9.pkl"
    with path.open("wb") as handle:
        pickle.dump({"model": model, "__author__": "Detectron2 Model Zoo"}, handle, protocol=2)
    return path, model


def test_synthetic_detectron2_pickle_loads_with_every_weight_placed(synthetic_pickle):
    path, arrays = synthetic_pickle
    model = load_detectron2_weights(DensePoseRCNN(), path)
    state = model.state_dict()
    assert set(state) == {name for name in arrays if not name.startswith(("pixel_", "proposal_generator.anchor_gen"))}
    for name, tensor in state.items():
        assert tensor.dtype == torch.float32 and torch.all(tensor == float(arrays[name].flat[0])), name


def test_loader_names_the_problem_weight(synthetic_pickle):
    path, arrays = synthetic_pickle
    model = DensePoseRCNN()
    weights = arrays
    extra = dict(weights, **{"roi_heads.mask_head.mask_fcn1.weight": np.zeros((1,), dtype=np.float32)})
    with pytest.raises(LeffaError, match="roi_heads.mask_head.mask_fcn1.weight"):
        map_weights(extra, model, path)
    missing = {k: v for k, v in weights.items() if k != "roi_heads.densepose_head.body_conv_fcn3.bias"}
    with pytest.raises(LeffaError, match="missing: roi_heads.densepose_head.body_conv_fcn3.bias"):
        map_weights(missing, model, path)
    wrong = dict(weights, **{"roi_heads.densepose_predictor.ann_index_lowres.weight": np.zeros((512, 15, 4, 4))})
    with pytest.raises(LeffaError, match=r"ann_index_lowres.weight has shape \(512, 15, 4, 4\)"):
        map_weights(wrong, model, path)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_safe_loader_refuses_a_pickle_that_carries_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": {"x": _RunsCode(marker)}, "__author__": "x"}))
    with pytest.raises(LeffaError, match="not allowed"):
        read_detectron2_pickle(path)
    assert not marker.exists()


def test_a_torch_save_archive_named_pkl_is_read_with_torch_safe_loader(tmp_path):
    path = tmp_path / "model_final.pkl"
    torch.save({"model": {"roi_heads.box_predictor.cls_score.bias": torch.tensor([1.0, 2.0])}}, path)
    assert read_detectron2_pickle(path)["roi_heads.box_predictor.cls_score.bias"].tolist() == [1.0, 2.0]


def test_loader_rejects_files_that_are_not_weight_pickles(tmp_path):
    with pytest.raises(LeffaError, match="not found"):
        read_detectron2_pickle(tmp_path / "absent.pkl")
    no_model = tmp_path / "no_model.pkl"
    no_model.write_bytes(pickle.dumps({"weights": {}}))
    with pytest.raises(LeffaError, match="no 'model' dictionary"):
        read_detectron2_pickle(no_model)
    caffe2 = tmp_path / "caffe2.pkl"
    caffe2.write_bytes(pickle.dumps({"blobs": {"conv1_w": np.zeros(1)}}))
    with pytest.raises(LeffaError, match="Caffe2/Detectron1-format"):
        read_detectron2_pickle(caffe2)
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(LeffaError):
        read_detectron2_pickle(garbage)


# --------------------------------------------------------------------------------------------- renderings


def _constructed_charts() -> ChartOutput:
    """Head outputs with known content: rows 0..27 of 112 are background (coarse), the rest is person; the left
    half is part 3 (u 0.25, v 0.5) and the right half part 15 (u 0.75, v 1.0)."""
    size = 112
    coarse = torch.zeros(1, 2, size, size)
    coarse[0, 1, 28:] = 5.0
    coarse[0, 0, :28] = 5.0
    fine = torch.zeros(1, 25, size, size)
    fine[0, 3, :, : size // 2] = 5.0
    fine[0, 15, :, size // 2 :] = 5.0
    u = torch.zeros(1, 25, size, size)
    v = torch.zeros(1, 25, size, size)
    u[0, 3], v[0, 3] = 0.25, 0.5
    u[0, 15], v[0, 15] = 0.75, 1.0
    return ChartOutput(coarse, fine, u, v)


BOX = torch.tensor([[10.7, 20.2, 51.6, 80.7]])  # -> int x, y, w, h = 10, 20, 40, 60


def _result(charts=None, boxes=BOX) -> DensePoseResult:
    charts = charts or _constructed_charts()
    return DensePoseResult(image_size=(100, 80), boxes=boxes, scores=torch.ones(len(boxes)), charts=charts)


def test_chart_resampling_to_the_box():
    assert int_box_xywh(BOX[0]) == (10, 20, 40, 60)
    chart = person_chart(_constructed_charts(), BOX[0])
    assert chart.labels.shape == (60, 40)
    assert chart.labels[2, 5] == 0 and chart.labels[40, 5] == 3 and chart.labels[40, 35] == 15
    assert chart.uv[:, 40, 5].tolist() == [0.25, 0.5] and chart.uv[:, 40, 35].tolist() == [0.75, 1.0]
    assert chart.uv[:, 2, 5].tolist() == [0.0, 0.0]


def test_iuv_rendering_pixels():
    image = np.asarray(_result().render("iuv"))
    assert image.shape == (100, 80, 3) and image.dtype == np.uint8
    # R = U, G = V min-max scaled over the box (min 0 from the background band, max 1.0), truncated; B = I.
    assert image[20 + 40, 10 + 5].tolist() == [63, 127, 3]
    assert image[20 + 40, 10 + 35].tolist() == [191, 255, 15]
    assert image[20 + 2, 10 + 5].tolist() == [0, 0, 0]  # background band inside the box
    assert image[:20].max() == 0 and image[:, :10].max() == 0 and image[81:].max() == 0 and image[:, 50:].max() == 0


def test_index_rendering_pixels():
    image = np.asarray(_result().render("index"))
    assert image[60, 15].tolist() == [3, 3, 3] and image[60, 45].tolist() == [15, 15, 15]
    assert set(np.unique(image).tolist()) == {0, 3, 15}


def test_seg_rendering_is_full_strength_parula_on_black():
    # OpenCV's COLORMAP_PARULA endpoints (MATLAB parula 0.2081 0.1663 0.5292 -> 0.9763 0.9831 0.0538).
    assert PARULA_RGB[0].tolist() == [53, 42, 135] and PARULA_RGB[255].tolist() == [249, 251, 14]
    image = np.asarray(_result().render("seg"))
    # Leffa's app: the colour map entry trunc(I * 255 / 24) itself, no blending, black background.
    assert image[60, 15].tolist() == PARULA_RGB[31].tolist()  # I = 3: 3 * 255 / 24 = 31.875 -> 31
    assert image[60, 45].tolist() == PARULA_RGB[159].tolist()  # I = 15: 159.375 -> 159
    assert image[22, 15].tolist() == [0, 0, 0]
    assert len(np.unique(image.reshape(-1, 3), axis=0)) == 3


def test_seg_detectron2_style_blends_at_alpha_0_7_on_black():
    image = np.asarray(_result().render("seg", seg_style="detectron2"))
    # stock detectron2: black * 0.3 + colour * 0.7, truncated to 8 bits
    assert image[60, 15].tolist() == (PARULA_RGB[31].astype(np.float64) * 0.7).astype(np.uint8).tolist()
    assert image[60, 45].tolist() == (PARULA_RGB[159].astype(np.float64) * 0.7).astype(np.uint8).tolist()
    with pytest.raises(LeffaError, match="seg_style"):
        _result().render("seg", seg_style="viridis")


def _two_people():
    """Two copies of the constructed person; the second (lower score) shifted 20 px right, so its part 3 (left
    half) lies on the first person's part 15 (right half)."""
    charts = _constructed_charts()
    two = ChartOutput(*(torch.cat([t, t]) for t in (charts.coarse_segm, charts.fine_segm, charts.u, charts.v)))
    boxes = torch.cat([BOX, BOX + torch.tensor([[20.0, 0.0, 20.0, 0.0]])])
    return DensePoseResult(image_size=(100, 80), boxes=boxes, scores=torch.tensor([0.9, 0.6]), charts=two)


def test_seg_draws_the_highest_scoring_person():
    main_only = np.asarray(_two_people().render("seg"))
    assert main_only[60, 65].tolist() == [0, 0, 0]  # only in the second (lower-scoring) box
    assert main_only[60, 35].tolist() == PARULA_RGB[159].tolist()  # the first person's part 15, untouched


def test_seg_all_people_puts_the_best_person_on_top():
    everyone = np.asarray(_two_people().render("seg", all_people=True))
    assert everyone[60, 65].tolist() == PARULA_RGB[159].tolist()  # second person's part 15, visible
    assert everyone[60, 35].tolist() == PARULA_RGB[159].tolist()  # first person's part 15 over second's part 3
    assert everyone[60, 15].tolist() == PARULA_RGB[31].tolist()
    # detectron2 style: detection order (best first), later people blend over earlier ones at 0.7
    blended = np.asarray(_two_people().render("seg", all_people=True, seg_style="detectron2"))
    first = (PARULA_RGB[159].astype(np.float64) * 0.7).astype(np.uint8)
    expected = (first * 0.3 + PARULA_RGB[31] * 0.7).astype(np.uint8)
    assert np.abs(blended[60, 35].astype(int) - expected.astype(int)).max() <= 1


def test_seg_image_of_no_people_is_black():
    assert seg_image([], (5, 6)).max() == 0
    empty = torch.zeros(0, 1, 1, 1)
    result = DensePoseResult((5, 6), torch.zeros(0, 4), torch.zeros(0), ChartOutput(empty, empty, empty, empty))
    assert np.asarray(result.render("iuv")).shape == (5, 6, 3) and np.asarray(result.render("seg")).max() == 0
    with pytest.raises(LeffaError, match="kind: unknown"):
        result.render("depth")


# ------------------------------------------------------------------------------------------------- config

# The test-time keys of detectron2's Base-DensePose-RCNN-FPN.yaml and densepose_rcnn_R_50_FPN_s1x.yaml.
BASE_YAML = """
MODEL:
  META_ARCHITECTURE: "GeneralizedRCNN"
  BACKBONE:
    NAME: "build_resnet_fpn_backbone"
  RPN:
    PRE_NMS_TOPK_TEST: 1000
    POST_NMS_TOPK_TEST: 1000
  DENSEPOSE_ON: True
  ROI_HEADS:
    NAME: "DensePoseROIHeads"
    NUM_CLASSES: 1
  ROI_BOX_HEAD:
    NAME: "FastRCNNConvFCHead"
    NUM_FC: 2
    POOLER_RESOLUTION: 7
    POOLER_SAMPLING_RATIO: 2
    POOLER_TYPE: "ROIAlign"
  ROI_DENSEPOSE_HEAD:
    NAME: "DensePoseV1ConvXHead"
    POOLER_TYPE: "ROIAlign"
    NUM_COARSE_SEGM_CHANNELS: 2
"""
S1X_YAML = """
_BASE_: "Base-DensePose-RCNN-FPN.yaml"
MODEL:
  WEIGHTS: "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
  RESNETS:
    DEPTH: 50
"""


def test_built_in_settings_equal_the_s1x_yaml_over_detectron2_defaults(tmp_path):
    from leffa.densepose.config import DensePoseConfig, config_from_yaml

    (tmp_path / "Base-DensePose-RCNN-FPN.yaml").write_text(BASE_YAML)
    (tmp_path / "densepose_rcnn_R_50_FPN_s1x.yaml").write_text(S1X_YAML)
    assert config_from_yaml(tmp_path / "densepose_rcnn_R_50_FPN_s1x.yaml") == DensePoseConfig()
    # Without the base file's POOLER_TYPE, DensePose's own default (ROIAlignV2, aligned) applies.
    without_type = BASE_YAML.replace('    POOLER_TYPE: "ROIAlign"\n    NUM_COARSE', "    NUM_COARSE")
    assert without_type != BASE_YAML
    (tmp_path / "v2.yaml").write_text(without_type)
    assert config_from_yaml(tmp_path / "v2.yaml").densepose_pooler_aligned is True


@pytest.mark.parametrize(
    ("change", "message"),
    [("DensePoseV1ConvXHead", "DensePoseDeepLabHead"), ("DEPTH: 50", "DEPTH: 101")],
)
def test_other_layouts_are_refused(tmp_path, change, message):
    from leffa.densepose.config import config_from_yaml

    (tmp_path / "Base-DensePose-RCNN-FPN.yaml").write_text(BASE_YAML.replace(change, message))
    (tmp_path / "s1x.yaml").write_text(S1X_YAML.replace(change, message))
    with pytest.raises(LeffaError, match="is not supported"):
        config_from_yaml(tmp_path / "s1x.yaml")


def test_decoding_only_the_boxes_window_matches_decoding_everything():
    from leffa.densepose.head import Decoder
    from leffa.densepose.network import decoder_window

    torch.manual_seed(0)
    decoder = Decoder(channels=16, conv_dims=16, num_outputs=16).eval()  # same structure, fewer channels
    levels = [torch.randn(1, 16, 256 >> i, 320 >> i) for i in range(4)]  # P2..P5 of a 1024 x 1280 input
    boxes = torch.tensor([[400.0, 300.0, 560.0, 520.0]])  # stride-4 rows 75..130, columns 100..140
    y0, y1, x0, x1 = decoder_window(boxes, (256, 320))
    assert (y0, x0) == (24, 48) and y0 > 0 and y1 < 256 and x0 > 0 and x1 < 320 and y1 % 8 == 0 and x1 % 8 == 0
    with torch.no_grad():
        full = decoder(levels)
        cropped = decoder([f[:, :, y0 >> i : y1 >> i, x0 >> i : x1 >> i] for i, f in enumerate(levels)])
    inner = cropped[:, :, 74 - y0 : 132 - y0, 99 - x0 : 142 - x0]  # the box +- 1 px
    assert torch.allclose(inner, full[:, :, 74:132, 99:142], atol=1e-5)
    # a margin that is too small would not do: the P5 branch reaches further than 8 px
    small = decoder([f[:, :, 72 >> i : 136 >> i, 96 >> i : 144 >> i] for i, f in enumerate(levels)])
    assert not torch.allclose(small[:, :, 2:58, 3:46], full[:, :, 74:130, 99:142], atol=1e-5)
    # touching the map border is exact too (the window is clipped to the map)
    assert decoder_window(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), (256, 320))[::2] == (0, 0)
