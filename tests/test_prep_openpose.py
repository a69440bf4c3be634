"""OpenPose body network (layer names/shapes, loading) and part-affinity-field decoding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from leffa.errors import LeffaError
from leffa.preprocess.example_person import BASE_KEYPOINTS
from leffa.preprocess.openpose import (
    KEYPOINT_NAMES,
    LIMBS,
    PAF_CHANNELS,
    BodyPoseNet,
    PoseEstimator,
    decode_people,
    draw_skeleton,
    keypoints_json,
    load_body_pose_net,
    main_person,
    network_maps,
    read_keypoints,
)  # fmt: skip


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return BodyPoseNet().eval()


def test_layer_names_and_shapes_match_the_annotator_checkpoint(net):
    state = net.state_dict()
    assert state["model0.conv1_1.weight"].shape == (64, 3, 3, 3)
    assert state["model0.conv4_4_CPM.weight"].shape == (128, 256, 3, 3)
    assert state["model1_1.conv5_1_CPM_L1.weight"].shape == (128, 128, 3, 3)
    assert state["model1_1.conv5_5_CPM_L1.weight"].shape == (38, 512, 1, 1)
    assert state["model1_2.conv5_5_CPM_L2.weight"].shape == (19, 512, 1, 1)
    assert state["model2_1.Mconv1_stage2_L1.weight"].shape == (128, 185, 7, 7)
    assert state["model2_2.Mconv7_stage2_L2.weight"].shape == (19, 128, 1, 1)
    assert state["model6_1.Mconv7_stage6_L1.weight"].shape == (38, 128, 1, 1)
    assert len(state) == 2 * (12 + 2 * 5 + 5 * 2 * 7)  # weight + bias of 12 VGG/CPM, 2x5 stage-1, 5x2x7 later convs
    assert sum(v.numel() for v in state.values()) == 52_311_446


def test_loads_annotator_keys_without_block_prefix(net, tmp_path):
    small = {k: v for k, v in net.state_dict().items()}
    torch.save({k.split(".", 1)[1]: v for k, v in small.items()}, tmp_path / "body_pose_model.pth")
    loaded = load_body_pose_net(tmp_path / "body_pose_model.pth")
    assert torch.equal(loaded.model2_2.Mconv7_stage2_L2.weight, net.model2_2.Mconv7_stage2_L2.weight)
    torch.save({"conv1_1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(LeffaError, match="not an OpenPose body model"):
        load_body_pose_net(tmp_path / "bad.pth")
    with pytest.raises(LeffaError, match="pose model not found"):
        load_body_pose_net(tmp_path / "missing.pth")


def test_random_network_runs_and_maps_come_back_at_image_size(net):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 60, 3), dtype=np.uint8))
    heatmaps, pafs = network_maps(net, image, scales=(0.15,))
    assert heatmaps.shape == (19, 80, 60) and pafs.shape == (38, 80, 60)
    with torch.no_grad():
        assert (net(torch.randn(1, 3, 16, 16))[1] >= 0).all()  # the annotator's final heatmap layer keeps its ReLU
    two = network_maps(net, image, scales=(0.1, 0.15))[0]
    assert two.shape == (19, 80, 60) and np.isfinite(two).all()


def construct_maps(people: list[dict[str, tuple[float, float]]], height: int, width: int):
    """Ideal network output: a Gaussian per keypoint, unit vectors along every limb within 3 px of it."""
    heatmaps = np.zeros((19, height, width), dtype=np.float32)
    pafs = np.zeros((38, height, width), dtype=np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    for person in people:
        for index, name in enumerate(KEYPOINT_NAMES):
            if name in person:
                x, y = person[name]
                heatmaps[index] = np.maximum(heatmaps[index], np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 4.0**2)))
        for (a, b), (cx, cy) in zip(LIMBS, PAF_CHANNELS):
            na, nb = KEYPOINT_NAMES[a], KEYPOINT_NAMES[b]
            if na not in person or nb not in person:
                continue
            start, end = np.array(person[na]), np.array(person[nb])
            direction = end - start
            length = np.hypot(*direction)
            unit = direction / length
            t = np.clip(((xs - start[0]) * unit[0] + (ys - start[1]) * unit[1]) / length, 0, 1)
            near = np.hypot(xs - (start[0] + t * direction[0]), ys - (start[1] + t * direction[1])) <= 3
            pafs[cx][near], pafs[cy][near] = unit[0], unit[1]
    return heatmaps, pafs


def test_constructed_maps_decode_to_the_skeleton():
    person = {name: (x / 2, y / 2) for name, (x, y) in BASE_KEYPOINTS.items()}  # 192 x 256 image
    heatmaps, pafs = construct_maps([person], 256, 192)
    people = decode_people(heatmaps, pafs)
    assert len(people) == 1
    keypoints = main_person(people).keypoints()
    expected = np.array([person[name] for name in KEYPOINT_NAMES])
    assert (keypoints[:, 2] > 0.9).all()
    np.testing.assert_allclose(keypoints[:, :2], expected, atol=1.0)


def test_two_people_are_separated_and_the_most_complete_is_kept():
    big = {name: (x / 2, y / 2) for name, (x, y) in BASE_KEYPOINTS.items()}
    small = {name: (300 + x / 4, 20 + y / 4) for name, (x, y) in BASE_KEYPOINTS.items()
             if name not in ("left-knee", "left-ankle", "right-knee", "right-ankle")}  # fmt: skip
    heatmaps, pafs = construct_maps([small, big], 256, 420)
    people = decode_people(heatmaps, pafs)
    assert sorted(len(p.parts) for p in people) == [14, 18]
    main = main_person(people).keypoints()
    assert main[KEYPOINT_NAMES.index("nose"), 0] == pytest.approx(big["nose"][0], abs=1)


def test_no_person_is_a_clear_error():
    heatmaps, pafs = np.zeros((19, 64, 48), np.float32), np.zeros((38, 64, 48), np.float32)
    assert decode_people(heatmaps, pafs) == []
    with pytest.raises(LeffaError, match="blank.jpg: no person detected"):
        main_person([], "blank.jpg")
    zero = BodyPoseNet().eval()
    for p in zero.parameters():
        torch.nn.init.zeros_(p)
    with pytest.raises(LeffaError, match="no person detected"):
        PoseEstimator(zero, scales=(0.2,))(Image.new("RGB", (48, 64), "white"), source="blank.jpg")


def test_keypoints_json_round_trip_and_drawing(tmp_path):
    keypoints = np.zeros((18, 3), np.float32)
    keypoints[1] = (10.5, 20.25, 0.8)
    keypoints[2] = (30, 20, 0.7)
    data = keypoints_json(keypoints)
    assert len(data["people"][0]["pose_keypoints_2d"]) == 54
    (tmp_path / "k.json").write_text(json.dumps(data))
    np.testing.assert_allclose(read_keypoints(tmp_path / "k.json"), keypoints, atol=1e-3)
    (tmp_path / "xy.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": [1.0, 2.0] + [0.0] * 34}]}))
    assert read_keypoints(tmp_path / "xy.json")[0].tolist() == [1.0, 2.0, 1.0]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(LeffaError, match="not an OpenPose keypoints JSON"):
        read_keypoints(tmp_path / "bad.json")
    picture = np.asarray(draw_skeleton(keypoints, (30, 40)))
    assert picture.shape == (30, 40, 3) and picture[20, 20].tolist() == [255, 0, 0]  # neck-right shoulder limb


def test_large_photos_are_decoded_small_and_keypoints_scaled_back(monkeypatch):
    person = {name: (x / 2, y / 2) for name, (x, y) in BASE_KEYPOINTS.items()}  # constructed at 256 x 192
    maps = construct_maps([person], 256, 192)
    seen = []

    def fake_maps(net, image, scales):
        seen.append(image.size)
        return maps

    monkeypatch.setattr("leffa.preprocess.openpose.network_maps", fake_maps)
    monkeypatch.setattr("leffa.preprocess.openpose.MAX_DECODE_HEIGHT", 256)
    keypoints = PoseEstimator(net=None)(Image.new("RGB", (768, 1024)))
    assert seen == [(192, 256)]
    np.testing.assert_allclose(keypoints[KEYPOINT_NAMES.index("nose"), :2], np.array(person["nose"]) * 4, atol=4)


def test_body_25_keypoints_read_as_coco_18(tmp_path):
    """OpenPose's default BODY_25 (75 numbers), as ``leffa prep synth`` writes it, reads as the 18 points the mask
    rules use: each COCO-18 point is the BODY_25 point of the same name (mid-hip and feet dropped)."""
    from leffa.synth.dataset import BODY_25, vton_sample

    sample = vton_sample(0, "test", 0, 64, 48)
    body = np.reshape(sample.keypoints, (25, 3))
    (tmp_path / "b25.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": sample.keypoints}]}))
    coco = read_keypoints(tmp_path / "b25.json")
    assert coco.shape == (18, 3)
    for index, name in enumerate(KEYPOINT_NAMES):
        source = "head" if name == "nose" else name.replace("-", "_")
        np.testing.assert_allclose(coco[index], body[BODY_25.index(source)], atol=1e-4)
    pairs = np.arange(50, dtype=np.float32) + 1  # BODY_25 as bare x, y pairs
    (tmp_path / "b25xy.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": pairs.tolist()}]}))
    assert read_keypoints(tmp_path / "b25xy.json")[8].tolist() == [19.0, 20.0, 1.0]  # right hip = BODY_25 point 9
    (tmp_path / "odd.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": [0.0] * 60}]}))
    with pytest.raises(LeffaError, match="60 numbers, expected 54 .COCO-18. or 75 .BODY_25."):
        read_keypoints(tmp_path / "odd.json")
