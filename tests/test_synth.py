"""Synthetic data: seeded, in the agreed layouts, and its ground-truth flow really maps target to reference."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from leffa.errors import LeffaError
from leffa.images import parse_size
from leffa.synth.body import DENSEPOSE
from leffa.synth.dataset import (
    generate_dataset,
    gt_warp,
    load_gt_flow,
    make_sample,
    pixels_to_grid,
    unpaired_sample,
    vton_sample,
)
from leffa.synth.garment import Fabric

SIZE = (256, 192)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def read(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255


@pytest.fixture(scope="module")
def vton_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("vton")
    generate_dataset("vton", out, 4, SIZE, seed=3, split="train")
    return out


@pytest.fixture(scope="module")
def pose_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pose")
    generate_dataset("pose", out, 4, SIZE, seed=3, split="test")
    return out


def test_same_seed_same_sample_and_other_seed_differs():
    for task in ("vton", "pose"):
        a, b = make_sample(task, 7, "train", 2, 128, 96), make_sample(task, 7, "train", 2, 128, 96)
        np.testing.assert_array_equal(a.target, b.target)
        np.testing.assert_array_equal(a.reference, b.reference)
        np.testing.assert_array_equal(a.flow, b.flow)
        other = make_sample(task, 8, "train", 2, 128, 96)
        assert np.abs(other.target - a.target).mean() > 0.01
        test_split = make_sample(task, 7, "test", 2, 128, 96)
        assert np.abs(test_split.target - a.target).mean() > 0.01


def test_files_do_not_depend_on_how_many_samples_are_drawn(tmp_path, vton_dir):
    generate_dataset("vton", tmp_path, 2, SIZE, seed=3, split="train")
    for relative in ("image/000001.jpg", "cloth/000001.jpg", "gt-flow/000001.npy", "agnostic-mask/000001_mask.png"):
        assert (tmp_path / "train" / relative).read_bytes() == (vton_dir / "train" / relative).read_bytes()


def test_vton_layout_and_conditions(vton_dir):
    split = vton_dir / "train"
    assert (vton_dir / "train_pairs.txt").read_text().splitlines() == [f"{i:06d}.jpg {i:06d}.jpg" for i in range(4)]
    name = "000000"
    person = Image.open(split / "image" / f"{name}.jpg")
    assert person.size == (SIZE[1], SIZE[0]) and person.mode == "RGB"
    mask = np.asarray(Image.open(split / "agnostic-mask" / f"{name}_mask.png"))
    assert set(np.unique(mask)) <= {0, 255}
    flow = load_gt_flow(split / "gt-flow" / f"{name}.npy")
    assert flow.shape == (*SIZE, 2) and flow.dtype == np.float32
    region = ~np.isnan(flow[..., 0])
    assert 0.03 < region.mean() < 0.4
    assert (mask[region] == 255).all(), "every garment pixel must be inside the region to regenerate"
    assert np.nanmin(flow) >= -1 and np.nanmax(flow) <= 1
    parse = np.asarray(Image.open(split / "image-parse-v3" / f"{name}.png"))
    assert set(np.unique(parse)) <= set(range(20)) and (parse[region] == 5).all()
    keypoints = json.loads((split / "openpose_json" / f"{name}_keypoints.json").read_text())
    points = np.array(keypoints["people"][0]["pose_keypoints_2d"]).reshape(25, 3)
    assert (points[:, 0] >= 0).all() and (points[:, 0] < SIZE[1]).all()
    neck, mid_hip = points[1], points[8]
    assert neck[1] < mid_hip[1], "neck above the hips"
    densepose = read(split / "image-densepose" / f"{name}.jpg")
    assert densepose[region].mean() > 0.1 and densepose[0, 0].max() < 0.05  # body coloured, background black


def test_vton_gt_flow_warps_the_garment_onto_the_person(vton_dir):
    split = vton_dir / "train"
    for index in range(4):
        name = f"{index:06d}"
        flow = load_gt_flow(split / "gt-flow" / f"{name}.npy")
        warped = gt_warp(read(split / "cloth" / f"{name}.jpg"), flow)
        region = ~np.isnan(flow[..., 0])
        assert np.isnan(warped[~region]).all()
        assert psnr(warped[region], read(split / "image" / f"{name}.jpg")[region]) > 30  # JPEG files, quality 95


def test_vton_gt_flow_is_exact_before_jpeg():
    sample = make_sample("vton", 0, "train", 0, *SIZE)
    warped = gt_warp(sample.reference, sample.flow)
    assert psnr(warped[sample.region], sample.target[sample.region]) > 80


def test_wrong_flow_is_caught():
    """The PSNR check has teeth: a flow off by two pixels, or with x and y swapped, fails it."""
    sample = make_sample("vton", 0, "train", 1, *SIZE)
    region = sample.region
    shifted = sample.flow + np.array([4.0 / SIZE[1], 0.0], dtype=np.float32)
    assert psnr(gt_warp(sample.reference, shifted)[region], sample.target[region]) < 25
    swapped = sample.flow[..., ::-1].copy()
    assert psnr(gt_warp(sample.reference, swapped)[region], sample.target[region]) < 20


def test_pose_layout_and_gt_flow(pose_dir):
    split = pose_dir / "test"
    with open(pose_dir / "test_pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["from"], row["to"]) for row in rows] == [(f"{i:06d}_1.jpg", f"{i:06d}_2.jpg") for i in range(4)]
    scores = []
    for row in rows:
        source, target = row["from"][:-4], row["to"][:-4]
        flow = load_gt_flow(split / "gt-flow" / f"{target}__{source}.npy")
        region = ~np.isnan(flow[..., 0])
        assert 0.08 < region.mean() < 0.4
        iuv = np.asarray(Image.open(split / "densepose" / f"{target}.png"))
        parts = set(np.unique(iuv[..., 2])) - {0}
        assert parts <= set(DENSEPOSE.values())
        assert (iuv[region, 2] > 0).all(), "every pixel with a correspondence lies on the body"
        warped = gt_warp(read(split / "image" / f"{source}.jpg"), flow)
        scores.append(psnr(warped[region], read(split / "image" / f"{target}.jpg")[region]))
    assert np.mean(scores) > 30 and min(scores) > 27
    # The poses really differ: the identity flow is far worse than the ground truth.
    identity = read(split / "image" / f"{source}.jpg")
    assert psnr(identity[region], read(split / "image" / f"{target}.jpg")[region]) < min(scores) - 8


def test_grid_units_hit_pixel_centres():
    image = np.random.default_rng(0).random((5, 7, 3)).astype(np.float32)
    ys, xs = np.mgrid[0:5, 0:7].astype(np.float64)
    flow = pixels_to_grid(xs, ys, 5, 7)
    flow[0, 0] = np.nan
    warped = gt_warp(image, flow)
    assert np.isnan(warped[0, 0]).all()
    np.testing.assert_allclose(warped[1:], image[1:], atol=1e-6)


def test_unpaired_ground_truth_is_the_person_in_the_next_garment(tmp_path):
    """--unpaired: same person, pose, background and mask; inside the garment region exactly the partner's
    garment under this person's fit (so pixels match warping the partner's cloth), elsewhere the photo."""
    size = (96, 72)
    names = generate_dataset("vton", tmp_path, 3, size, seed=5, split="test", unpaired=True)
    assert names == ["000000", "000001", "000002"]
    assert (tmp_path / "test_pairs_unpaired.txt").read_text().splitlines() == [
        "000000.jpg 000001.jpg",
        "000001.jpg 000002.jpg",
        "000002.jpg 000000.jpg",
    ]
    split = tmp_path / "test"
    for index in range(3):
        partner = (index + 1) % 3
        own = vton_sample(5, "test", index, *size)
        other = unpaired_sample(5, "test", index, partner, *size)
        np.testing.assert_array_equal(other.mask, own.mask)  # the person's own agnostic mask
        np.testing.assert_array_equal(other.target[~own.mask], own.target[~own.mask])  # the photo outside it
        assert other.region.any() and not other.region[~own.mask].any()
        garment = vton_sample(5, "test", partner, *size).reference
        np.testing.assert_array_equal(other.reference, garment)
        warped = gt_warp(garment, other.flow)
        assert psnr(warped[other.region], other.target[other.region]) > 80
        assert np.abs(other.target[own.mask] - own.target[own.mask]).mean() > 0.02  # the garment did change
        stem = f"{index:06d}__{partner:06d}"
        written = read(split / "image-unpaired" / f"{stem}.png")
        assert np.abs(written - other.target).max() <= 0.5 / 255 + 1e-6  # lossless PNG
        region = np.asarray(Image.open(split / "cloth-mask-unpaired" / f"{stem}.png")) > 127
        np.testing.assert_array_equal(region, other.region)
    # The paired files are those of a run without --unpaired.
    plain = tmp_path / "plain"
    generate_dataset("vton", plain, 3, size, seed=5, split="test")
    assert (plain / "test" / "image" / "000001.jpg").read_bytes() == (split / "image" / "000001.jpg").read_bytes()


def test_unpaired_pairs_are_what_the_loader_reads(tmp_path):
    from leffa.data import open_dataset

    generate_dataset("vton", tmp_path, 2, (64, 48), seed=0, split="test", unpaired=True)
    unpaired = open_dataset(tmp_path, "vitonhd", "test", (64, 48), mode="unpaired")
    assert unpaired.entries == [("000000.jpg", "000001.jpg"), ("000001.jpg", "000000.jpg")]
    paired = open_dataset(tmp_path, "vitonhd", "test", (64, 48), mode="paired")
    assert paired.entries == [("000000.jpg", "000000.jpg"), ("000001.jpg", "000001.jpg")]


def test_training_with_unpaired_truth_adds_each_person_in_the_other_garment(tmp_path):
    """unpaired_truth: the paired samples, then one per unpaired pair whose target is the person really wearing
    the other garment, with that garment as reference and the person's own mask and DensePose."""
    from leffa.data import load_rgb, open_dataset

    generate_dataset("vton", tmp_path, 2, (64, 48), seed=0, split="train", unpaired=True)
    paired = open_dataset(tmp_path, "vitonhd", "train", (64, 48))
    both = open_dataset(tmp_path, "vitonhd", "train", (64, 48), unpaired_truth=True)
    assert both.entries[:2] == paired.entries
    assert both.entries[2:] == [
        ("000000.jpg", "000001.jpg", "000000__000001"),
        ("000001.jpg", "000000.jpg", "000001__000000"),
    ]
    own, other, truth = paired[0], paired[1], both[2]
    split = tmp_path / "train"
    torch.testing.assert_close(truth["image"], load_rgb(split / "image-unpaired" / "000000__000001.png", (64, 48)))
    assert not torch.equal(truth["image"], own["image"])
    torch.testing.assert_close(truth["reference"], other["reference"])
    torch.testing.assert_close(truth["mask"], own["mask"])
    torch.testing.assert_close(truth["densepose"], own["densepose"])
    outside = own["mask"].expand(3, -1, -1) == 0  # the person's photo (JPEG) outside the mask, within its error
    assert (truth["image"] - own["image"])[outside].abs().mean() < 0.02


def test_unpaired_truth_needs_the_rendered_ground_truth(tmp_path):
    from leffa.data import open_dataset

    generate_dataset("vton", tmp_path, 2, (64, 48), seed=0, split="train")
    with pytest.raises(LeffaError, match=r"train: no unpaired ground truth .*--unpaired"):
        open_dataset(tmp_path, "vitonhd", "train", (64, 48), unpaired_truth=True)


def test_pattern_scale_coarsens_the_fabric_and_nothing_else():
    """--pattern-scale draws the same person, fit and garment outline with a longer pattern period."""
    plain, coarse = make_sample("vton", 0, "train", 3, 64, 48), make_sample("vton", 0, "train", 3, 64, 48, Fabric(2.0))
    np.testing.assert_array_equal(plain.mask, coarse.mask)
    np.testing.assert_array_equal(plain.flow, coarse.flow)
    background = ~plain.mask
    np.testing.assert_array_equal(plain.target[background][:200], coarse.target[background][:200])  # backdrop
    assert np.abs(plain.reference - coarse.reference).mean() > 0.02

    def roughness(image):  # mean absolute difference of horizontal neighbours inside the garment region
        inside = plain.region[:, 1:] & plain.region[:, :-1]
        return np.abs(np.diff(image, axis=1))[inside].mean()

    assert roughness(coarse.target) < roughness(plain.target)
    with pytest.raises(LeffaError, match="pattern_scale 20"):
        Fabric(pattern_scale=20.0)


def test_shading_tells_the_patches_apart_and_keeps_the_flow_exact():
    """--shading adds a colour ramp to the fabric: same person, fit and flow, the flow still rebuilds the worn garment,
    and the garment's colour shifts with position."""
    plain, shaded = (
        make_sample("vton", 0, "train", 3, 64, 48, Fabric(2.0)),
        make_sample("vton", 0, "train", 3, 64, 48, Fabric(2.0, 0.6)),
    )
    np.testing.assert_array_equal(plain.mask, shaded.mask)
    np.testing.assert_array_equal(plain.flow, shaded.flow)
    warped = gt_warp(shaded.reference, shaded.flow)
    assert psnr(warped[shaded.region], shaded.target[shaded.region]) > 80
    shift = shaded.reference - plain.reference  # (H, W, 3): the ramp, where the garment is
    fabric = plain.reference.min(axis=2) < 0.9  # off the white canvas
    columns = np.nonzero(fabric.any(axis=0))[0]
    middle = (columns[0] + columns[-1]) // 2
    left, right = fabric.copy(), fabric.copy()
    left[:, middle:], right[:, :middle] = False, False
    assert shift[..., 0][right].mean() - shift[..., 0][left].mean() > 0.1  # red rises left to right
    rows = np.nonzero(fabric.any(axis=1))[0]
    top, bottom = fabric.copy(), fabric.copy()
    top[(rows[0] + rows[-1]) // 2 :], bottom[: (rows[0] + rows[-1]) // 2] = False, False
    assert shift[..., 1][bottom].mean() - shift[..., 1][top].mean() > 0.1  # green rises top to bottom
    np.testing.assert_array_equal(
        make_sample("vton", 0, "train", 3, 64, 48, Fabric(2.0, 0.0)).reference, plain.reference
    )
    with pytest.raises(LeffaError, match="shading 2"):
        Fabric(2.0, 2.0)


def test_user_mistakes_are_one_line_errors(tmp_path):
    with pytest.raises(LeffaError, match="task 'dance'"):
        generate_dataset("dance", tmp_path, 1, SIZE)
    with pytest.raises(LeffaError, match="split 'val'"):
        generate_dataset("vton", tmp_path, 1, SIZE, split="val")
    with pytest.raises(LeffaError, match="--size"):
        parse_size("256by192", min_side=32)
    with pytest.raises(LeffaError, match="n 0"):
        generate_dataset("vton", tmp_path, 0, SIZE)
    with pytest.raises(LeffaError, match="unpaired: only for task vton"):
        generate_dataset("pose", tmp_path, 2, SIZE, unpaired=True)
    with pytest.raises(LeffaError, match="unpaired: needs n of at least 2"):
        generate_dataset("vton", tmp_path, 1, SIZE, unpaired=True)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(LeffaError, match="bad.npy"):
        load_gt_flow(bad)
    assert not (tmp_path / "train").exists()


def test_cli_writes_a_dataset(tmp_path, capsys):
    from leffa_cli.app import main

    with pytest.raises(SystemExit) as done:
        main(["prep", "synth", "--task", "pose", "--n", "2", "--size", "64x48", "-o", str(tmp_path), "--seed", "1"])
    assert done.value.code == 0
    assert len(list((tmp_path / "train" / "image").glob("*.jpg"))) == 4
    with pytest.raises(SystemExit) as failed:
        main(["prep", "synth", "--task", "dance", "-o", str(tmp_path)])
    assert failed.value.code == 2
    assert "leffa: error: --task 'dance'" in capsys.readouterr().err


def test_training_dataset_loader_reads_the_generated_folders(vton_dir, pose_dir):
    """The trainer's own loaders (leffa.data) detect and read both layouts, conditions aligned with the files."""
    from leffa.data import detect_layout, open_dataset

    assert detect_layout(vton_dir) == "vitonhd" and detect_layout(pose_dir) == "deepfashion"
    vton = open_dataset(vton_dir, split="train", size=SIZE)
    assert len(vton) == 4
    sample = vton[1]
    assert sample["name"] == "000001"
    assert sample["image"].shape == (3, *SIZE) and sample["reference"].shape == (3, *SIZE)
    assert float(sample["image"].min()) >= -1 and float(sample["image"].max()) <= 1
    flow = load_gt_flow(vton_dir / "train" / "gt-flow" / "000001.npy")
    region = ~np.isnan(flow[..., 0])
    assert (sample["mask"][0].numpy()[region] == 1).all()
    person = read(vton_dir / "train" / "image" / "000001.jpg")
    np.testing.assert_allclose((sample["image"].permute(1, 2, 0).numpy() + 1) / 2, person, atol=1 / 255)
    pose = open_dataset(pose_dir, split="test", size=SIZE)
    assert len(pose) == 4
    pair = pose[0]
    assert pair["name"] == "000000_2" and pair["densepose"].shape == (3, *SIZE)
    assert float(pair["mask"].min()) == 1.0
