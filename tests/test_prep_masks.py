"""Garment-agnostic mask rules on a drawn person whose regions are known pixel by pixel."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from leffa.errors import LeffaError
from leffa.preprocess.example_person import example_person
from leffa.preprocess.masks import Skeleton, agnostic_mask, hand_region
from leffa.preprocess.openpose import KEYPOINT_NAMES
from leffa.preprocess.parsing import PERSON_LABELS

H = 256


def region(labels, *names):
    return np.isin(labels, [PERSON_LABELS.index(n) for n in names])


def interior(mask, pixels=2):
    return ndimage.binary_erosion(mask, iterations=pixels)


@pytest.fixture(scope="module")
def shirt_and_pants():
    return example_person(H, "shirt_and_pants")


@pytest.fixture(scope="module")
def dress():
    return example_person(H, "dress")


def hands(labels, keypoints):
    skeleton = Skeleton(keypoints)
    return hand_region(labels, skeleton, "left") | hand_region(labels, skeleton, "right")


@pytest.mark.parametrize("style", ["hd", "dc"])
def test_upper_body_covers_top_and_arms_keeps_face_hands_and_pants(shirt_and_pants, style):
    labels, keypoints, _ = shirt_and_pants
    mask = agnostic_mask(labels, keypoints, "upper_body", style, mask_style="tight")
    hand = hands(labels, keypoints)
    arms = region(labels, "left-arm", "right-arm") & ~hand
    assert hand.sum() > 100  # the drawn hands exist
    assert mask[region(labels, "upper-clothes")].all()
    assert mask[arms].mean() > 0.98
    assert mask[region(labels, "neck")].mean() > 0.9
    assert not mask[region(labels, "face")].any()
    assert not mask[hand].any()
    assert not mask[region(labels, "left-shoe", "right-shoe")].any()
    pants = region(labels, "pants")
    assert not mask[interior(pants)].any() and mask[pants].mean() < 0.03  # at most the waistband edge
    assert mask[region(labels, "background")].any()  # the margin lets a wider garment fit


@pytest.mark.parametrize("style", ["hd", "dc"])
def test_lower_body_covers_pants_and_legs_keeps_top_arms_and_feet(shirt_and_pants, style):
    labels, keypoints, _ = shirt_and_pants
    mask = agnostic_mask(labels, keypoints, "lower_body", style, mask_style="tight")
    assert mask[region(labels, "pants")].all()
    ankle_y = keypoints[KEYPOINT_NAMES.index("left-ankle"), 1]
    shins = region(labels, "left-leg", "right-leg") & (np.arange(H)[:, None] < ankle_y)
    assert shins.any() and mask[shins].all()  # bare skin between the trousers and the ankles
    assert not mask[interior(region(labels, "upper-clothes"))].any()
    assert not mask[region(labels, "left-arm", "right-arm", "face", "left-shoe", "right-shoe")].any()
    below_ankles = region(labels, "left-leg", "right-leg") & (np.arange(H)[:, None] > ankle_y)
    assert below_ankles.any() and not mask[below_ankles].any()


@pytest.mark.parametrize("style", ["hd", "dc"])
def test_dresses_cover_dress_arms_and_knees_keep_face_hands_feet(dress, style):
    labels, keypoints, _ = dress
    mask = agnostic_mask(labels, keypoints, "dresses", style, mask_style="tight")
    assert mask[region(labels, "dress")].all()
    hand = hands(labels, keypoints)
    assert mask[region(labels, "left-arm", "right-arm") & ~hand].mean() > 0.98
    assert not mask[region(labels, "face")].any() and not mask[hand].any()
    assert not mask[region(labels, "left-shoe", "right-shoe")].any()
    knee_y = keypoints[KEYPOINT_NAMES.index("left-knee"), 1]
    thighs = region(labels, "left-leg", "right-leg") & (np.arange(H)[:, None] < knee_y)
    assert mask[thighs].all()


def test_upper_body_on_a_dress_keeps_the_skirt_part(dress):
    labels, keypoints, _ = dress
    mask = agnostic_mask(labels, keypoints, "upper_body", "hd", mask_style="tight")
    hip_y = keypoints[KEYPOINT_NAMES.index("left-hip"), 1]
    skirt = region(labels, "dress") & (np.arange(H)[:, None] > hip_y + 0.06 * H)
    assert mask[region(labels, "dress") & (np.arange(H)[:, None] < hip_y - 0.08 * H)].all()  # bodice
    assert not mask[interior(skirt)].any() and mask[skirt].mean() < 0.03


def test_styles_differ_as_documented(shirt_and_pants):
    labels, keypoints, _ = shirt_and_pants
    hd = agnostic_mask(labels, keypoints, "upper_body", "hd", mask_style="tight")
    dc = agnostic_mask(labels, keypoints, "upper_body", "dc", mask_style="tight")
    hair = region(labels, "hair")
    assert not dc[hair].any()  # DressCode-like keeps hair
    assert hd.sum() > dc.sum()  # wider bands and margins
    assert ndimage.label(hd)[1] == 1


def test_missing_wrist_masks_that_whole_arm(shirt_and_pants):
    labels, keypoints, _ = shirt_and_pants
    keypoints = keypoints.copy()
    keypoints[KEYPOINT_NAMES.index("left-wrist")] = 0
    mask = agnostic_mask(labels, keypoints, "upper_body", "hd", mask_style="tight")
    assert mask[region(labels, "left-arm")].all()  # no wrist: the hand's place is unknown
    right_hand = hand_region(labels, Skeleton(keypoints), "right")
    assert right_hand.any() and not mask[right_hand].any()


def test_rules_are_resolution_independent():
    small_labels, small_keypoints, _ = example_person(256)
    big_labels, big_keypoints, _ = example_person(512)
    small = agnostic_mask(small_labels, small_keypoints, "upper_body", "hd", mask_style="tight")
    big = agnostic_mask(big_labels, big_keypoints, "upper_body", "hd", mask_style="tight")
    down = big.reshape(256, 2, -1, 2).mean(axis=(1, 3)) > 0.5
    assert (small & down).sum() / (small | down).sum() > 0.95


def test_nothing_to_mask_and_bad_options_are_clear_errors(shirt_and_pants):
    labels, keypoints, _ = shirt_and_pants
    empty = np.zeros((64, 48), np.uint8)
    with pytest.raises(LeffaError, match="no upper_body region found"):
        agnostic_mask(empty, np.zeros((18, 3)), "upper_body")
    with pytest.raises(LeffaError, match="--type shoes"):
        agnostic_mask(labels, keypoints, "shoes")
    with pytest.raises(LeffaError, match="--style vitonhd"):
        agnostic_mask(labels, keypoints, "upper_body", "vitonhd")
    with pytest.raises(LeffaError, match=r"keypoints: expected shape \(18, 3\)"):
        agnostic_mask(labels, keypoints[:, :2], "upper_body")
    with pytest.raises(LeffaError, match="outside the person label set"):
        agnostic_mask(np.full((8, 8), 40, np.uint8), keypoints, "upper_body")
