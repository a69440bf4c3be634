"""The Python API (``leffa.TryOnPipeline`` / ``leffa.PosePipeline``): same pixels as the commands, batches, conditions."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import leffa
from leffa_cli.app import main

PHOTO = (50, 80)  # (W, H): not 3:4, so cropped and pasted back


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    rng = np.random.default_rng(3)
    for name, size in (("person", PHOTO), ("person2", (48, 64)), ("garment", (40, 52))):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(root / f"{name}.png")
    mask = np.zeros((PHOTO[1], PHOTO[0]), np.uint8)
    mask[30:60, 10:40] = 255
    Image.fromarray(mask).save(root / "mask.png")
    Image.fromarray(rng.integers(0, 256, (PHOTO[1], PHOTO[0], 3), dtype=np.uint8)).save(root / "densepose.png")
    iuv = np.stack(
        [rng.integers(0, 256, PHOTO[::-1]), rng.integers(0, 256, PHOTO[::-1]), rng.integers(0, 25, PHOTO[::-1])],
        axis=-1,
    ).astype(np.uint8)
    Image.fromarray(iuv).save(root / "iuv.png")
    return root


@pytest.fixture(scope="module")
def pipe():
    return leffa.TryOnPipeline.from_pretrained("synth-tiny", device="cpu", dtype="fp32")


def run(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_api_equals_tryon_command_pixel_for_pixel(files, pipe, tmp_path, capsys):
    out = tmp_path / "cli.png"
    code, _, err = run(
        [
            "tryon",
            files / "person.png",
            files / "garment.png",
            "-o",
            out,
            "--mask",
            files / "mask.png",
            "--densepose",
            files / "densepose.png",
            "--model",
            "synth-tiny",
            "--steps",
            "3",
            "--seed",
            "5",
            "--repaint",
            "--device",
            "cpu",
            "--dtype",
            "fp32",
        ],
        capsys,
    )
    assert code == 0, err
    result = pipe(
        files / "person.png",
        files / "garment.png",
        mask=files / "mask.png",
        densepose=files / "densepose.png",
        steps=3,
        seed=5,
        repaint=True,
    )
    assert len(result.images) == 1 and result.images[0].size == PHOTO
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(Image.open(out)))
    # PIL images in, same pixels out; the conditions used come back at the photo's size
    same = pipe(
        Image.open(files / "person.png"),
        Image.open(files / "garment.png"),
        mask=Image.open(files / "mask.png"),
        densepose=Image.open(files / "densepose.png"),
        steps=3,
        seed=5,
        repaint=True,
    )
    assert np.array_equal(np.asarray(same.images[0]), np.asarray(result.images[0]))
    assert same.masks[0].size == same.denseposes[0].size == PHOTO
    assert np.array_equal(np.asarray(same.masks[0]), np.asarray(Image.open(files / "mask.png")))
    other = pipe(
        files / "person.png",
        files / "garment.png",
        mask=files / "mask.png",
        densepose=files / "densepose.png",
        steps=3,
        seed=6,
        repaint=True,
    )
    assert not np.array_equal(np.asarray(other.images[0]), np.asarray(result.images[0]))


def test_a_batch_returns_each_photo_at_its_size_as_run_alone(files, pipe):
    people = [files / "person.png", files / "person2.png"]
    dense = [files / "densepose.png", Image.new("RGB", (48, 64))]
    masks = [files / "mask.png", Image.new("L", (48, 64), 255)]
    batch = pipe(people, files / "garment.png", mask=masks, densepose=dense, steps=2)
    assert [image.size for image in batch.images] == [PHOTO, (48, 64)]
    alone = pipe(people[1], files / "garment.png", mask=masks[1], densepose=dense[1], steps=2)
    difference = np.abs(np.asarray(batch.images[1], int) - np.asarray(alone.images[0], int))
    assert difference.max() <= 1  # per-image seeding; only batched float rounding differs (docs/inference.md)


def test_missing_conditions_come_from_the_conditions_plugins(files, pipe, monkeypatch):
    import leffa.pipeline

    calls = []

    def fake(name):
        def make(photo, arg, offline, **options):
            calls.append((name, arg, offline))
            return Image.new("L" if name == "mask" else "RGB", photo.size, 255 if name == "mask" else 0)

        return make

    monkeypatch.setattr(leffa.pipeline, "condition_plugin", fake)
    result = pipe(files / "person.png", files / "garment.png", garment_type="lower_body", steps=1)
    assert calls == [("mask", "lower_body", False), ("densepose", "rgb", False)]
    assert result.masks[0].getextrema() == (255, 255) and result.denseposes[0].size == PHOTO


def test_pose_pipeline_equals_pose_command(files, tmp_path, capsys):
    out = tmp_path / "pose.png"
    code, _, err = run(
        [
            "pose",
            files / "garment.png",
            files / "person.png",
            "-o",
            out,
            "--densepose",
            files / "iuv.png",
            "--model",
            "synth-tiny",
            "--steps",
            "2",
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert code == 0, err
    pose = leffa.PosePipeline.from_pretrained("synth-tiny", device="cpu", dtype="fp32")
    result = pose(files / "garment.png", files / "person.png", densepose=files / "iuv.png", steps=2)
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(Image.open(out)))
    assert result.masks[0].getextrema() == (255, 255)


def test_bad_calls_are_leffa_errors(files, pipe):
    with pytest.raises(leffa.LeffaError, match="mask: 1 given for 2 images"):
        pipe([files / "person.png"] * 2, files / "garment.png", mask=[files / "mask.png"])
    with pytest.raises(leffa.LeffaError, match="person photo not found"):
        pipe(files / "nope.png", files / "garment.png", mask=files / "mask.png", densepose=files / "densepose.png")
    with pytest.raises(leffa.LeffaError, match="steps: 0 is out of range"):
        pipe(files / "person.png", files / "garment.png", steps=0)
    with pytest.raises(leffa.LeffaError, match="not a known model"):
        leffa.TryOnPipeline.from_pretrained("no-such-model")


def test_import_leffa_is_light_and_exports_the_stable_core():
    code = "import sys, leffa; assert 'torch' not in sys.modules, 'torch imported'; print(sorted(leffa.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for name in (
        "TryOnPipeline",
        "PosePipeline",
        "LeffaModel",
        "LeffaConfig",
        "leffa_loss",
        "SamplerOptions",
        "LeffaError",
    ):
        assert name in out
    from leffa.errors import LeffaError
    from leffa.loss import leffa_loss
    from leffa.model import LeffaModel

    assert leffa.LeffaModel is LeffaModel and leffa.leffa_loss is leffa_loss and leffa.LeffaError is LeffaError
    with pytest.raises(AttributeError):
        leffa.NoSuchThing  # noqa: B018
