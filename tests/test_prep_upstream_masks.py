"""The authors' agnostic-mask rules (mask style ``upstream``) on constructed label maps, with expectations written
from the published rules: OpenCV's dilation with a k x k ones kernel anchored at (k // 2, k // 2), the 10 x 10 x 5
garment dilation, the 5 x 5 erosion of kept parts, the arm bands and the neck rules of ``hd`` and ``dc``."""

from __future__ import annotations

import numpy as np
import pytest

from leffa.preprocess.masks import agnostic_mask
from leffa.preprocess.openpose import KEYPOINT_NAMES
from leffa.preprocess.parsing import PERSON_LABELS
from leffa.preprocess.upstream_masks import dilate, erode, fill_holes, upstream_mask

H, W = 512, 384


def lab(name: str) -> int:
    return PERSON_LABELS.index(name)


def keypoints(**points) -> np.ndarray:
    """(18, 3) with the named joints found (confidence 0.9) and every other one missing."""
    out = np.zeros((len(KEYPOINT_NAMES), 3), dtype=np.float32)
    for name, (x, y) in points.items():
        out[KEYPOINT_NAMES.index(name.replace("_", "-"))] = (x, y, 0.9)
    return out


def test_dilation_anchor_and_schedule_are_opencvs():
    # cv2.dilate with np.ones((10, 10)): dst(x, y) = max of src(x + j - 5, y + i - 5), i, j in 0..9, so one pass
    # grows a pixel 4 up/left and 5 down/right; five passes: 20 up/left, 25 down/right.
    single = np.zeros((80, 90), dtype=bool)
    single[40, 30] = True
    expected = np.zeros_like(single)
    expected[40 - 20 : 40 + 25 + 1, 30 - 20 : 30 + 25 + 1] = True
    np.testing.assert_array_equal(dilate(single, 10, 5), expected)
    # odd kernels are symmetric: 5 x 5 four times grows 8 each way
    expected = np.zeros_like(single)
    expected[32:49, 22:39] = True
    np.testing.assert_array_equal(dilate(single, 5, 4), expected)
    # nothing comes in from outside the image, and outside never erodes
    full = np.ones((20, 20), dtype=bool)
    full[10, 10] = False
    expected = np.ones_like(full)
    expected[8:13, 8:13] = False
    np.testing.assert_array_equal(erode(full, 5), expected)


def test_hole_fill_clears_the_border_then_fills_enclosed_background():
    ring = np.zeros((12, 12), dtype=bool)
    ring[2:10, 2:10] = True
    ring[4:8, 4:8] = False  # a hole
    ring[0, :] = True  # touches the top edge: cleared, as the app zeroes the one-pixel border
    expected = np.zeros_like(ring)
    expected[2:10, 2:10] = True
    np.testing.assert_array_equal(fill_holes(ring), expected)


def test_hd_top_is_the_garment_dilated_10x10_five_times_plus_the_neck():
    labels = np.zeros((H, W), dtype=np.uint8)
    labels[200:300, 120:260] = lab("upper-clothes")
    labels[170:180, 180:200] = lab("neck")
    labels[100:170, 170:210] = lab("face")
    mask = upstream_mask(labels, keypoints(), "upper_body", "hd", fixes=False)  # no joints: arms are parsed arms
    expected = np.zeros((H, W), dtype=bool)
    expected[200 - 20 : 300 + 25, 120 - 20 : 260 + 25] = True  # 10 x 10, five times
    expected[168:182, 178:202] = True  # the neck, dilated by 5 x 5 (2 each way)
    expected[100:170, 170:210] = False  # minus the head (face kept)
    np.testing.assert_array_equal(mask, expected)
    # identical through the public entry point (default mask style), and the fixes change nothing here
    np.testing.assert_array_equal(agnostic_mask(labels, keypoints(), "upper_body", "hd"), expected)


def test_hd_kept_parts_are_eroded_5x5_so_the_mask_overlaps_them():
    labels = np.zeros((H, W), dtype=np.uint8)
    labels[200:300, 120:260] = lab("upper-clothes")
    labels[300:400, 120:260] = lab("pants")
    mask = upstream_mask(labels, keypoints(), "upper_body", "hd")
    # pants are kept, eroded by 2 px: the garment's 25-px dilation reaches 2 rows into them
    assert mask[301, 200] and not mask[302, 200]
    assert not mask[330, 200]


def test_hd_arm_band_masks_the_arm_and_keeps_the_hand_past_the_pushed_wrist():
    labels = np.zeros((H, W), dtype=np.uint8)
    labels[150:300, 150:230] = lab("upper-clothes")
    labels[195:206, 60:150] = lab("right-arm")  # an arm held out to the image's left, hand at x < 40
    labels[195:206, 20:60] = lab("right-arm")
    joints = keypoints(right_shoulder=(150, 200), right_elbow=(110, 200), right_wrist=(70, 200),
                       left_shoulder=(230, 200))  # fmt: skip
    mask = upstream_mask(labels, joints, "upper_body", "hd")
    # band: shoulder -> elbow -> the wrist pushed to elbow + 1.2 (wrist - elbow) = x 62, 60 px wide
    assert mask[200, 140] and mask[200, 80] and mask[175, 100]
    # hand = arm pixels off the band (x < 62), kept after a 5 x 5 erosion (2 px): masked up to x 60, kept beyond
    assert mask[200, 60] and not mask[200, 58] and not mask[200, 30]
    # the left wrist is missing: that arm would be its parsed pixels (none here), nothing drawn
    assert not mask[200, 300]


def test_dc_neck_rule_masks_the_head_below_the_lifted_shoulder_line():
    labels = np.zeros((H, W), dtype=np.uint8)
    labels[80:160, 170:210] = lab("face")
    labels[160:300, 130:250] = lab("upper-clothes")
    joints = keypoints(right_shoulder=(140, 170), left_shoulder=(240, 170), right_elbow=(130, 230),
                       left_elbow=(250, 230), right_wrist=(125, 290), left_wrist=(255, 290))  # fmt: skip
    mask = upstream_mask(labels, joints, "upper_body", "dc")
    # shoulder line y = 170, lifted by 20 px: face rows >= 150 join the garment, rows < 150 are kept
    assert mask[150:160, 170:210].all()
    assert not mask[80:150, 170:210].any()


def test_dc_dilation_depends_on_the_frame_height():
    for height, _reach in ((512, 25), (256, 12)):  # 10 x 10 x 5 over 256 px; 5 x 5 x 5 (2 each way) at <= 256
        labels = np.zeros((height, 200), dtype=np.uint8)
        labels[100:140, 60:140] = lab("pants")
        mask = upstream_mask(labels, keypoints(), "lower_body", "dc")
        below = 139 + (25 if height == 512 else 10)
        assert mask[below, 100] and not mask[below + 1, 100], height


def test_fix_kept_parts_enclosed_by_the_mask_stay_kept():
    labels = np.zeros((H, W), dtype=np.uint8)
    labels[150:320, 110:270] = lab("upper-clothes")
    labels[200:260, 160:220] = lab("bag")  # held in front of the shirt
    published = upstream_mask(labels, keypoints(), "upper_body", "hd", fixes=False)
    fixed = upstream_mask(labels, keypoints(), "upper_body", "hd")
    assert published[200:260, 160:220].all()  # hole filling swallows the bag
    assert not fixed[205:255, 165:215].any()  # kept (eroded by 2 px, so the mask overlaps its edge)


def test_fix_dc_bottoms_include_the_skirt():
    labels = np.zeros((H, W), dtype=np.uint8)
    labels[250:380, 120:260] = lab("skirt")
    labels[380:470, 150:230] = lab("left-leg")
    assert not upstream_mask(labels, keypoints(), "lower_body", "dc", fixes=False)[250:340, 120:260].all()
    assert upstream_mask(labels, keypoints(), "lower_body", "dc")[250:380, 120:260].all()


def test_fix_missing_joints_are_not_drawn_at_the_corner():
    labels = np.zeros((H, W), dtype=np.uint8)
    labels[150:300, 130:250] = lab("upper-clothes")
    joints = keypoints(
        right_shoulder=(140, 160),
        right_wrist=(120, 280),
        left_shoulder=(240, 160),
        left_elbow=(250, 220),
        left_wrist=(255, 280),
    )  # right elbow not found
    published = upstream_mask(labels, joints, "upper_body", "hd", fixes=False)
    assert published[5, 5]  # the band runs to the missing elbow, read as pixel (0, 0)
    assert not upstream_mask(labels, joints, "upper_body", "hd")[:100, :100].any()


def test_fix_a_wrist_pushed_past_the_edge_does_not_wrap_around():
    labels = np.zeros((H, W), dtype=np.uint8)
    labels[150:300, 130:250] = lab("upper-clothes")
    joints = keypoints(
        right_shoulder=(140, 160),
        right_elbow=(60, 60),
        right_wrist=(10, 5),
        left_shoulder=(240, 160),
        left_elbow=(250, 220),
        left_wrist=(255, 280),
    )  # arm raised
    # pushed wrist = elbow + 1.2 (wrist - elbow) = (0, -6): the app's uint16 cast makes y 65530
    published = upstream_mask(labels, joints, "upper_body", "hd", fixes=False)
    assert published[H - 2, 60]  # a band from the elbow straight down past the bottom edge
    assert not upstream_mask(labels, joints, "upper_body", "hd")[H - 2, 60]


@pytest.mark.parametrize("garment_type", ["upper_body", "lower_body", "dresses"])
def test_upstream_is_the_default_and_tight_is_kept(garment_type):
    from leffa.preprocess.example_person import example_person

    labels, joints, _ = example_person(512)
    default = agnostic_mask(labels, joints, garment_type)
    np.testing.assert_array_equal(default, upstream_mask(labels, joints, garment_type, "hd"))
    tight = agnostic_mask(labels, joints, garment_type, mask_style="tight")
    assert tight.sum() < default.sum()  # the authors' masks are looser
