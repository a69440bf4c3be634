"""Garment clean-up, the `leffa prep` commands end to end (tiny models), and the resumable dataset filler."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from prep_models import colour_parsing_onnx
from typer.testing import CliRunner

from leffa.errors import LeffaError
from leffa.preprocess.conditions import PrepTools, automatic_conditions
from leffa.preprocess.dataset import ItemPaths, fill_item, plan_dataset
from leffa.preprocess.example_person import example_person
from leffa.preprocess.garment import clean_garment, find_garment
from leffa.preprocess.masks import agnostic_mask
from leffa.preprocess.openpose import BodyPoseNet, PoseEstimator, keypoints_json
from leffa.preprocess.parsing import ATR_LABELS, LIP_LABELS, HumanParser, label_image
from leffa_cli.app import build_app, main

runner = CliRunner()


def invoke(*args):
    return runner.invoke(build_app(), list(map(str, args)))


def test_alpha_garment_is_cropped_and_centred_on_white():
    rgba = np.zeros((100, 80, 4), np.uint8)
    rgba[10:40, 50:70] = (200, 0, 0, 255)  # a 20 x 30 red garment off-centre, transparent elsewhere
    canvas, cut = clean_garment(Image.fromarray(rgba), size=(80, 60), margin=0.0)
    assert cut.method == "alpha" and cut.box == (50, 10, 70, 40)
    pixels = np.asarray(canvas).astype(int)
    assert canvas.size == (60, 80)
    red = (pixels[:, :, 0] > 150) & (pixels[:, :, 1] < 60)
    ys, xs = np.nonzero(red)
    assert abs(xs.mean() - 29.5) < 1.5 and abs(ys.mean() - 39.5) < 1.5  # centred
    assert ys.max() - ys.min() + 1 >= 78  # scaled to fill the height (a 2:3 garment on a 3:4 canvas)
    assert (pixels[:, :2] == 255).all() and (pixels[:, -2:] == 255).all()  # white beside it


def test_backdrop_garment_and_busy_photo():
    photo = np.full((120, 90, 3), (205, 200, 198), np.uint8)
    photo[30:90, 20:60] = (20, 90, 30)
    photo[50:55, 30:35] = (206, 201, 199)  # a backdrop-coloured print inside stays garment
    cut = find_garment(Image.fromarray(photo))
    assert cut.method == "backdrop" and cut.box == (20, 30, 60, 90)
    assert cut.alpha[52, 32] == 1.0 and cut.alpha[5, 5] == 0.0
    canvas, _ = clean_garment(Image.fromarray(photo), size=(40, 30))
    assert np.asarray(canvas)[1, 1].tolist() == [255, 255, 255]
    busy = np.random.default_rng(0).integers(0, 255, (60, 40, 3), dtype=np.uint8)
    assert find_garment(Image.fromarray(busy)).method == "none"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny ATR/LIP parsers that read the example person's blue shirt (blue minus red) as upper clothes."""
    folder = tmp_path_factory.mktemp("models")
    blue = (1.0, 0.0, -1.0)
    atr = colour_parsing_onnx(folder / "atr.onnx", 18, {ATR_LABELS.index("upper-clothes"): blue}, None, background=1.0)
    lip = colour_parsing_onnx(folder / "lip.onnx", 20, {LIP_LABELS.index("upper-clothes"): blue}, None, background=1.0)
    return atr, lip


@pytest.fixture(scope="module")
def zero():
    """An OpenPose network that sees nobody (all weights zero)."""
    with torch.no_grad():
        net = BodyPoseNet().eval()
        for p in net.parameters():
            p.zero_()
    return net


@pytest.fixture(scope="module")
def person(tmp_path_factory):
    folder = tmp_path_factory.mktemp("person")
    labels, keypoints, photo = example_person(256)
    photo.save(folder / "person.png")
    label_image(labels).save(folder / "parse.png")
    (folder / "keypoints.json").write_text(json.dumps(keypoints_json(keypoints)))
    return folder, labels, keypoints


def test_prep_mask_from_given_parsing_and_keypoints_matches_the_library(person, tmp_path):
    folder, labels, keypoints = person
    result = invoke("prep", "mask", folder / "person.png", "--parse", folder / "parse.png", "--keypoints",
                    folder / "keypoints.json", "--type", "lower_body", "--style", "dc", "--work-height", 256,
                    "-o", tmp_path / "mask.png", "--overlay", tmp_path / "grey.png")  # fmt: skip
    assert result.exit_code == 0, result.output
    written = np.asarray(Image.open(tmp_path / "mask.png")) > 127
    assert (written == agnostic_mask(labels, keypoints, "lower_body", "dc")).all()  # default: upstream rules
    result = invoke("prep", "mask", folder / "person.png", "--parse", folder / "parse.png", "--keypoints",
                    folder / "keypoints.json", "--type", "upper_body", "--mask-style", "tight", "--work-height", 256,
                    "-o", tmp_path / "tight.png")  # fmt: skip
    assert result.exit_code == 0, result.output
    tight = np.asarray(Image.open(tmp_path / "tight.png")) > 127
    assert (tight == agnostic_mask(labels, keypoints, "upper_body", "hd", "tight")).all()
    assert (tight != agnostic_mask(labels, keypoints, "upper_body", "hd", "upstream")).any()
    result = invoke("prep", "mask", folder / "person.png", "--parse", folder / "parse.png", "--mask-style", "loose",
                    "-o", tmp_path / "never.png")  # fmt: skip
    assert result.exit_code != 0 and "--mask-style loose" in str(result.exception)
    assert not (tmp_path / "never.png").exists()
    assert Image.open(tmp_path / "grey.png").size == (192, 256)


def test_prep_mask_and_parse_with_onnx_models(person, models, tmp_path):
    folder, labels, keypoints = person
    atr, lip = models
    result = invoke("prep", "mask", folder / "person.png", "--keypoints", folder / "keypoints.json",
                    "--parsing-model", atr, "--lip-model", lip, "--offline", "--work-height", 256,
                    "-o", tmp_path / "mask.png")  # fmt: skip
    assert result.exit_code == 0, result.output
    mask = np.asarray(Image.open(tmp_path / "mask.png")) > 127
    assert mask[labels == ATR_LABELS.index("upper-clothes")].mean() > 0.99
    assert not mask[200:].any()  # legs and feet untouched (this tiny parser knows only the shirt)
    result = invoke("prep", "parse", folder / "person.png", "--model", "lip", "--parsing-model", lip,
                    "-o", tmp_path / "parse.png")  # fmt: skip
    assert result.exit_code == 0 and "upper-clothes" in result.output
    assert Image.open(tmp_path / "parse.png").mode == "P"


def test_library_entry_point_for_inference(person, models):
    folder, labels, keypoints = person
    atr, lip = models
    scale = np.array([2.0, 2.0, 1.0])  # the photo is 256 high, the work copy 512 (its default height)
    tools = PrepTools(
        atr=HumanParser(atr, "atr"), lip=HumanParser(lip, "lip"), pose=lambda image, source="": keypoints * scale
    )
    mask = automatic_conditions(Image.open(folder / "person.png"), "upper_body", "hd", tools=tools)
    assert mask.mode == "L" and mask.size == (192, 256)
    assert (np.asarray(mask) > 127)[labels == ATR_LABELS.index("upper-clothes")].mean() > 0.99


def test_no_person_is_a_one_line_cli_error(person, zero, monkeypatch, capsys, tmp_path):
    folder, _, _ = person
    monkeypatch.setattr("leffa.preprocess.conditions.load_pose", lambda *a, **k: PoseEstimator(zero, (0.15,)))
    with pytest.raises(SystemExit) as exit_info:
        main(["prep", "pose", str(folder / "person.png"), "-o", str(tmp_path / "k.json")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leffa: error: ") and "person.png: no person detected" in err and "\n" not in err
    assert not (tmp_path / "k.json").exists()


def test_prep_garment_command(tmp_path):
    rgba = np.zeros((50, 40, 4), np.uint8)
    rgba[5:25, 5:15] = (0, 0, 200, 255)
    Image.fromarray(rgba).save(tmp_path / "g.png")
    result = invoke("prep", "garment", tmp_path / "g.png", "-o", tmp_path / "clean.jpg", "--width", 30, "--height", 40)
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "clean.jpg").size == (30, 40) and "alpha channel" in result.output


def test_dataset_fill_is_resumable_and_skips_undetected_people(person, models, zero, monkeypatch, tmp_path):
    folder, _, keypoints = person
    atr, lip = models
    images = tmp_path / "viton" / "test" / "image"
    images.mkdir(parents=True)
    photo = Image.open(folder / "person.png").convert("RGB").resize((384, 512))
    photo.save(images / "00001_00.jpg")
    Image.new("RGB", (384, 512), "white").save(images / "00002_00.jpg")  # nobody in it
    (tmp_path / "viton" / "test" / "openpose_json").mkdir()
    scaled = keypoints.copy()
    scaled[:, :2] *= 2
    (tmp_path / "viton" / "test" / "openpose_json" / "00001_00_keypoints.json").write_text(
        json.dumps(keypoints_json(scaled))
    )
    tools = PrepTools(atr=HumanParser(atr, "atr"), lip=HumanParser(lip, "lip"), pose=PoseEstimator(zero, (0.15,)))
    plan = plan_dataset(tmp_path / "viton")
    assert [i.image.name for i in plan.items] == ["00001_00.jpg", "00002_00.jpg"] and plan.complete == 0
    first = ItemPaths.for_image(images / "00001_00.jpg")
    assert fill_item(first, tools, work_height=256) == ["mask", "parse", "skeleton"]  # keypoints existed
    assert Image.open(first.mask).size == (384, 512) and Image.open(first.parse).mode == "P"
    with pytest.raises(LeffaError, match="00002_00.jpg: no person detected"):
        fill_item(ItemPaths.for_image(images / "00002_00.jpg"), tools, work_height=256)
    stamp = first.mask.stat().st_mtime_ns
    assert fill_item(first, tools) == [] and first.mask.stat().st_mtime_ns == stamp
    assert [i.image.name for i in plan_dataset(tmp_path / "viton").items] == ["00002_00.jpg"]
    # The command: a missing model file is an up-front error; with a pose model, the photo without a person is
    # reported and skipped while a new photo with keypoints is filled.
    result = invoke("prep", "dataset", tmp_path / "viton", "--parsing-model", atr, "--lip-model", lip,
                    "--pose-model", tmp_path / "missing.pth")  # fmt: skip
    assert result.exit_code != 0 and "missing.pth: model file not found" in str(result.exception)
    photo.save(images / "00003_00.jpg")
    (tmp_path / "viton" / "test" / "openpose_json" / "00003_00_keypoints.json").write_text(
        json.dumps(keypoints_json(scaled))
    )
    monkeypatch.setattr("leffa.preprocess.conditions.load_pose", lambda *a, **k: PoseEstimator(zero, (0.15,)))
    result = invoke("prep", "dataset", tmp_path / "viton", "--parsing-model", atr, "--lip-model", lip,
                    "--work-height", 256)  # fmt: skip
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "1 photos complete, 2 to fill" in output and "skipped" in output and "no person detected" in output
    assert (tmp_path / "viton" / "test" / "agnostic-mask" / "00003_00_mask.png").exists()
    assert not (tmp_path / "viton" / "test" / "agnostic-mask" / "00002_00_mask.png").exists()
    with pytest.raises(LeffaError, match="no test/ or train/image folder|no train/ or test/image folder"):
        plan_dataset(tmp_path)


def test_offline_without_cached_models_names_the_file(person, tmp_path):
    import os
    import subprocess
    import sys

    folder, _, _ = person
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"),
        "LEFFA_WEIGHTS": str(tmp_path / "weights"),
    }
    command = [sys.executable, "-m", "leffa_cli.app", "prep", "pose", str(folder / "person.png"),
               "-o", str(tmp_path / "k.json"), "--offline"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "body_pose_model.pth (OpenPose body model) is not on this machine and --offline was given" in result.stderr
    assert "--pose-model FILE" in result.stderr and str(tmp_path / "weights" / "franciszzj" / "Leffa") in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_dataset_from_prep_synth_is_complete_and_skeletons_need_no_model(tmp_path):
    """A `leffa prep synth` folder has masks, parsing, BODY_25 keypoints and skeletons: nothing to fill. A missing
    skeleton is drawn from the keypoints on disk without loading any model; a missing mask needs the parsers only."""
    from leffa.preprocess.conditions import PrepTools
    from leffa.preprocess.dataset import models_needed
    from leffa.synth.dataset import generate_dataset

    generate_dataset("vton", tmp_path / "synth", 2, (64, 48), seed=0, split="test")
    plan = plan_dataset(tmp_path / "synth")
    assert plan.complete == 2 and plan.items == []
    item = ItemPaths.for_image(tmp_path / "synth" / "test" / "image" / "000000.jpg")
    item.skeleton.unlink()
    plan = plan_dataset(tmp_path / "synth")
    assert plan.complete == 1 and plan.missing_counts()["skeleton"] == 1 and models_needed(plan.items) == set()
    assert fill_item(item, PrepTools(), work_height=64) == ["skeleton"]  # no parser, no OpenPose
    assert item.skeleton.is_file() and Image.open(item.skeleton).size == (48, 64)
    item.mask.unlink()
    assert models_needed(plan_dataset(tmp_path / "synth").items) == {"parsing"}
    item.keypoints.unlink()
    assert models_needed(plan_dataset(tmp_path / "synth").items) == {"parsing", "pose"}
