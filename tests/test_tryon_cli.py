"""``leffa tryon`` / ``leffa pose`` end to end on a tiny safetensors model, and their refusals of bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leffa.pipeline import crop_box, feather_radius, repaint
from leffa_cli.app import main

# Not imported from conftest: importing it as a module would run its torch.set_num_threads(2) again.
TINY_SD15 = Path(__file__).parent / "fixtures" / "upstream_parity" / "stable-diffusion-inpainting"
SIZE = (64, 48)  # working size recorded in the tiny model's config
PHOTO = (50, 80)  # (W, H) of the person photo: not 3:4, so it is cropped and pasted back


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _rgb(rng, size):
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from leffa.checkpoint import save_model
    from leffa.model import LeffaModel

    root = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    model = LeffaModel.from_base_folder(TINY_SD15)
    model.config.extra["image_size"] = list(SIZE)
    save_model(model, root / "tiny.safetensors", dtype="fp32")
    rng = np.random.default_rng(0)
    _rgb(rng, PHOTO).save(root / "person.png")
    _rgb(rng, (48, 64)).save(root / "garment.jpg")
    mask = np.zeros((PHOTO[1], PHOTO[0]), np.uint8)
    mask[30:60, 10:40] = 255
    Image.fromarray(mask).save(root / "mask.png")
    _rgb(rng, PHOTO).save(root / "densepose.png")
    iuv = np.stack(
        [
            rng.integers(0, 256, (PHOTO[1], PHOTO[0])),
            rng.integers(0, 256, (PHOTO[1], PHOTO[0])),
            rng.integers(0, 25, (PHOTO[1], PHOTO[0])),
        ],
        axis=-1,
    ).astype(np.uint8)
    Image.fromarray(iuv).save(root / "iuv.png")
    return root


def run(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def tryon_args(files, out, *extra):
    return [
        "tryon",
        files / "person.png",
        files / "garment.jpg",
        "-o",
        out,
        "--mask",
        files / "mask.png",
        "--densepose",
        files / "densepose.png",
        "--model",
        files / "tiny.safetensors",
        "--steps",
        "2",
        *extra,
    ]


def test_tryon_writes_png_at_photo_size_pasted_into_the_crop(files, tmp_path, capsys):
    out = tmp_path / "out.png"
    code, stdout, _ = run(tryon_args(files, out, "--save-intermediates", "--every", "1"), capsys)
    assert code == 0 and str(out) in stdout
    result = np.asarray(Image.open(out))
    person = np.asarray(Image.open(files / "person.png"))
    assert Image.open(out).format == "PNG" and result.shape == person.shape
    left, top, right, bottom = crop_box((PHOTO[1], PHOTO[0]), SIZE)
    assert (right - left, bottom - top) == (50, 67)
    outside = np.ones(result.shape[:2], bool)
    outside[top:bottom, left:right] = False
    assert np.array_equal(result[outside], person[outside])
    assert not np.array_equal(result[~outside], person[~outside])
    steps = sorted(p.name for p in (tmp_path / "out_steps").iterdir())
    assert steps == ["densepose.png", "mask.png", "step_001.png", "step_002.png"]

    again = tmp_path / "again.png"
    assert run(tryon_args(files, again), capsys)[0] == 0
    assert again.read_bytes() == out.read_bytes()  # same seed, same image; intermediates change nothing
    other = tmp_path / "other.png"
    assert run(tryon_args(files, other, "--seed", "7", "--scheduler", "euler-a"), capsys)[0] == 0
    assert other.read_bytes() != out.read_bytes()


def test_repaint_keeps_pixels_outside_the_feathered_mask(files, tmp_path, capsys):
    out = tmp_path / "out.png"
    assert run(tryon_args(files, out, "--repaint", "--no-crop"), capsys)[0] == 0
    result = np.asarray(Image.open(out)).astype(int)
    person = np.asarray(Image.open(files / "person.png")).astype(int)
    far = np.ones(result.shape[:2], bool)
    far[30 - 3 : 60 + 3, 10 - 3 : 40 + 3] = False  # the mask grown by more than the blur reaches
    assert np.array_equal(result[far], person[far])
    assert np.abs(result[35:55, 15:35] - person[35:55, 15:35]).mean() > 5


def test_repaint_is_upstreams_formula():
    rng = np.random.default_rng(1)
    person, generated = _rgb(rng, (96, 256)), _rgb(rng, (96, 256))
    mask = np.zeros((256, 96), np.uint8)
    mask[64:192, 24:72] = 255
    mask_image = Image.fromarray(mask)
    from PIL import ImageFilter

    assert feather_radius(256) == 3 and feather_radius(1024) == 11 and feather_radius(128) == 1
    blurred = np.asarray(mask_image.convert("RGB").filter(ImageFilter.GaussianBlur(3))) / 255
    expected = (np.asarray(person) * (1 - blurred) + np.asarray(generated) * blurred).astype(np.uint8)
    assert np.array_equal(np.asarray(repaint(person, mask_image, generated)), expected)


def test_pose_transfer_end_to_end(files, tmp_path, capsys):
    out = tmp_path / "pose.png"
    code, _, err = run(
        [
            "pose",
            files / "garment.jpg",
            files / "person.png",
            "-o",
            out,
            "--densepose",
            files / "iuv.png",
            "--model",
            files / "tiny.safetensors",
            "--steps",
            "2",
        ],
        capsys,
    )
    assert code == 0, err
    assert Image.open(out).size == PHOTO


def test_transparent_and_greyscale_inputs_are_converted_with_a_note(files, tmp_path, capsys):
    rng = np.random.default_rng(2)
    rgba = np.concatenate([rng.integers(0, 256, (64, 48, 3)), np.full((64, 48, 1), 128)], -1).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "garment.png")
    Image.open(files / "person.png").convert("L").save(tmp_path / "grey.png")
    out = tmp_path / "out.png"
    args = tryon_args(files, out, "--steps", "1")
    args[1], args[2] = tmp_path / "grey.png", tmp_path / "garment.png"
    code, _, err = run(args, capsys)
    assert code == 0
    assert "greyscale; converted to RGB" in err and "transparency; composited over white" in err
    assert Image.open(out).mode == "RGB"


def _bad_cases(files, tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    Image.new("RGB", (16, 16)).save(tmp_path / "tiny.png")
    Image.new("L", (9000, 8000)).save(tmp_path / "huge.png")
    Image.new("L", (48, 64)).save(tmp_path / "small_mask.png")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 64)
    person, garment = files / "person.png", files / "garment.jpg"
    base = lambda p=person, g=garment: ["tryon", p, g]  # noqa: E731
    conditions = ["--mask", files / "mask.png", "--densepose", files / "densepose.png"]
    model = ["--model", files / "tiny.safetensors"]
    return {
        "missing file": (base(p=tmp_path / "nope.png") + conditions + model, "person photo not found"),
        "not an image": (base(g=tmp_path / "text.png") + conditions + model, "garment image is not an image"),
        "tiny image": (base(p=tmp_path / "tiny.png") + conditions + model, "16x16, too small"),
        "huge image": (base(p=tmp_path / "huge.png") + conditions + model, "9000x8000, too large"),
        "mask of another size": (
            base() + ["--mask", tmp_path / "small_mask.png", "--densepose", files / "densepose.png"] + model,
            "must be the same size",
        ),
        "wrong checkpoint": (
            base() + conditions + ["--model", tmp_path / "broken.safetensors"],
            "not a readable safetensors file",
        ),
        "no mask, offline, models not cached": (
            base() + ["--densepose", files / "densepose.png", "--offline"] + model,
            "parsing_atr.onnx (ATR human parsing model) is not on this machine",
        ),
        "bad scheduler": (base() + conditions + model + ["--scheduler", "magic"], "--scheduler 'magic': unknown"),
        "bad size": (base() + conditions + model + ["--size", "100x77"], "multiples of 8"),
        "not png": (base() + conditions + model, "give a name ending in .png"),
    }


def test_bad_inputs_exit_nonzero_with_one_line_and_write_nothing(files, tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # automatic-mask models absent
    monkeypatch.setenv("LEFFA_WEIGHTS", str(tmp_path / "empty-weights"))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for name, (args, expected) in _bad_cases(files, tmp_path).items():
        out = out_dir / ("out.jpg" if name == "not png" else "out.png")
        code, stdout, err = run(args + ["-o", out], capsys)
        lines = err.strip().splitlines()
        assert code == 2, name
        assert len(lines) == 1 and lines[0].startswith("leffa: error: "), (name, err)
        assert expected in lines[0], (name, lines[0])
        assert list(out_dir.iterdir()) == [], name


def test_offline_upstream_model_without_cache_fails_clearly(files, tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    out = tmp_path / "out.png"
    args = tryon_args(files, out)[:-4] + ["--model", "viton_hd", "--offline"]
    code, _, err = run(args, capsys)
    assert code == 2 and "--offline" in err and "virtual_tryon.pth" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def _viton_hd(root: Path, files: Path, names):
    for folder in ("image", "cloth", "agnostic-mask", "image-densepose"):
        (root / folder).mkdir(parents=True)
    for name in names:
        Image.open(files / "person.png").save(root / "image" / f"{name}.jpg", quality=95)
        Image.open(files / "garment.jpg").save(root / "cloth" / f"{name}.jpg", quality=95)
        Image.open(files / "mask.png").save(root / "agnostic-mask" / f"{name}_mask.png")
        Image.open(files / "densepose.png").save(root / "image-densepose" / f"{name}.jpg", quality=95)
    (root / "pairs.txt").write_text("".join(f"{a}.jpg {b}.jpg\n" for a, b in zip(names, reversed(names))))


def test_batch_folder_skips_done_outputs_and_matches_single_runs(files, tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "results"
    _viton_hd(data, files, ["00001_00", "00002_00", "00003_00"])
    out.mkdir()
    (out / "00002_00.png").write_bytes(b"done before")
    code, stdout, err = run(
        [
            "tryon",
            "--batch",
            data,
            "--pairs",
            data / "pairs.txt",
            "-o",
            out,
            "--model",
            files / "tiny.safetensors",
            "--steps",
            "2",
            "--batch-size",
            "2",
        ],
        capsys,
    )
    assert code == 0, err
    assert "1 outputs already exist" in err
    assert sorted(p.name for p in out.iterdir()) == ["00001_00__00003_00.png", "00002_00.png", "00003_00__00001_00.png"]
    assert (out / "00002_00.png").read_bytes() == b"done before"

    single = tmp_path / "single.png"
    assert (
        run(
            [
                "tryon",
                data / "image" / "00001_00.jpg",
                data / "cloth" / "00003_00.jpg",
                "-o",
                single,
                "--mask",
                data / "agnostic-mask" / "00001_00_mask.png",
                "--densepose",
                data / "image-densepose" / "00001_00.jpg",
                "--model",
                files / "tiny.safetensors",
                "--steps",
                "2",
            ],
            capsys,
        )[0]
        == 0
    )
    batched = np.asarray(Image.open(out / "00001_00__00003_00.png")).astype(int)
    assert np.abs(batched - np.asarray(Image.open(single)).astype(int)).max() <= 1


def test_paired_batch_output_is_scored_by_eval_against_the_photos(files, tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "results"
    names = ["00001_00", "00002_00"]
    _viton_hd(data, files, names)
    (data / "pairs.txt").write_text("".join(f"{name}.jpg {name}.jpg\n" for name in names))
    code, _, err = run(
        [
            "tryon",
            "--batch",
            data,
            "--pairs",
            data / "pairs.txt",
            "-o",
            out,
            "--model",
            files / "tiny.safetensors",
            "--steps",
            "1",
        ],
        capsys,
    )
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["00001_00.png", "00002_00.png"]
    code, stdout, err = run(
        ["eval", "--pred", out, "--gt", data / "image", "--metrics", "ssim,psnr", "-o", tmp_path / "scores.json"],
        capsys,
    )
    assert code == 0, err
    assert '"count": 2' in (tmp_path / "scores.json").read_text()
