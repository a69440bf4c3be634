"""leffa.images: opening every mode, limits without Pillow's warnings, one resize/threshold/size rule, and the same
tensors from the training datasets, try-on, pose and the attention probe."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from leffa import images
from leffa.data import DeepFashionPose, VitonHD
from leffa.errors import LeffaError
from leffa.pipeline import pose_job, prepare, tryon_job
from leffa.probe import load_densepose, load_image, load_mask


def _gradient(height=40, width=30) -> np.ndarray:
    return np.tile(np.linspace(0, 1, width), (height, 1))


def _open(image: Image.Image, tmp_path: Path, name: str = "x.png", **save) -> Image.Image:
    path = tmp_path / name
    image.save(path, **save)
    return images.open_image(path, "test image")


# -- modes --------------------------------------------------------------------------------------------------------


def test_sixteen_bit_greyscale_keeps_its_tones(tmp_path):
    values = np.round(_gradient() * 65535).astype(np.uint16)
    opened = _open(Image.fromarray(values), tmp_path)
    assert opened.mode == "I;16"
    rgb = np.asarray(images.to_rgb(opened))
    expected = np.round(_gradient() * 255)
    assert rgb.shape == (40, 30, 3) and np.abs(rgb[..., 0] - expected).max() <= 1
    assert (rgb[..., 0] == rgb[..., 1]).all() and rgb.mean() < 140  # not white, as Pillow's own convert makes it
    assert np.asarray(opened.convert("L")).mean() > 200  # the bug being avoided
    assert np.abs(np.asarray(images.to_grey(opened)).astype(int) - expected).max() <= 1


def test_integer_and_float_greyscale():
    sixteen = Image.fromarray(np.round(_gradient() * 65535).astype(np.int32), mode="I")
    eight = Image.fromarray(np.round(_gradient() * 255).astype(np.int32), mode="I")
    unit = Image.fromarray(_gradient().astype(np.float32), mode="F")
    byte_range = Image.fromarray((_gradient() * 255).astype(np.float32), mode="F")
    expected = np.round(_gradient() * 255)
    for image in (sixteen, eight, unit, byte_range):
        grey = np.asarray(images.to_grey(image)).astype(int)
        assert np.abs(grey - expected).max() <= 1, image.mode


def test_transparency_is_composited_over_white_and_noted(tmp_path):
    rgba = np.zeros((40, 30, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:20, :, 3] = 255  # top half opaque red, bottom half fully transparent
    notes: list[str] = []
    rgb = np.asarray(images.read_rgb(_save(Image.fromarray(rgba), tmp_path, "a.png"), "garment", notes))
    assert (rgb[:20] == [200, 0, 0]).all() and (rgb[20:] == 255).all()
    assert notes and "transparency" in notes[0] and "a.png: garment" in notes[0]
    la = Image.fromarray(np.stack([np.full((40, 30), 50, np.uint8), rgba[..., 3]], axis=-1), mode="LA")
    grey = np.asarray(images.to_rgb(la))
    assert (grey[:20] == 50).all() and (grey[20:] == 255).all()
    # masks and DensePose ignore alpha: their colour is the meaning
    assert (np.asarray(images.to_rgb(Image.fromarray(rgba), alpha="ignore"))[20:, :, 0] == 200).all()


def test_palette_with_a_transparent_index(tmp_path):
    palette_image = Image.new("P", (30, 40), 1)
    palette_image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette_image.paste(0, (0, 0, 30, 10))
    path = tmp_path / "p.png"
    palette_image.save(path, transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rgb = np.asarray(images.read_rgb(path, "garment"))
    assert (rgb[:10] == 255).all() and (rgb[10:] == [10, 200, 30]).all()


def test_cmyk_lab_and_other_modes_become_the_same_rgb():
    base = Image.new("RGB", (30, 40), (200, 100, 50))
    lab = ImageCms.applyTransform(
        base, ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    )
    for image in (base.convert("CMYK"), base.convert("YCbCr"), base.convert("RGBA"), base.convert("RGBa"), lab):
        rgb = np.asarray(images.to_rgb(image)).astype(int)
        assert rgb.shape == (40, 30, 3) and np.abs(rgb - [200, 100, 50]).max() <= 2, image.mode
    assert (np.asarray(images.to_rgb(Image.new("1", (30, 40), 1))) == 255).all()


def test_multi_frame_uses_the_first_frame_with_a_note(tmp_path):
    frames = [Image.new("RGB", (30, 40), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    notes: list[str] = []
    rgb = np.asarray(images.read_rgb(path, "person photo", notes))
    assert rgb[0, 0, 0] > 200 and rgb[0, 0, 2] < 50
    assert notes == [f"{path}: person photo has 2 frames; the first is used"]


def test_exif_orientation_is_applied(tmp_path):
    picture = np.zeros((40, 30, 3), np.uint8)
    picture[:5] = 255  # a white band on top
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(picture).save(path, exif=exif, quality=100)
    opened = images.open_image(path, "photo")
    assert opened.size == (40, 30) and images.image_size(path) == (30, 40)
    assert np.asarray(opened)[:, -5:].mean() > 200  # the top band is now on the right


# -- files and limits ---------------------------------------------------------------------------------------------


def _save(image: Image.Image, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    image.save(path)
    return path


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` (no pixel data needed: the limit is checked first)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize("side", [9_000, 20_000])  # Pillow warns above 89 MP and raises above 179 MP
def test_huge_images_are_refused_without_pillow_warnings(tmp_path, side):
    path = _png_header_only(tmp_path / "huge.png", side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(LeffaError, match=r"huge\.png: person photo is (9000x9000, )?too large \(at most 64 MP\)"):
            images.open_image(path, "person photo")
        with pytest.raises(LeffaError, match="too large"):
            images.read_rgb(path, "garment")


def test_pixel_limit_and_minimum_side_are_ours(tmp_path):
    path = _save(Image.new("RGB", (30, 40)), tmp_path, "small.png")
    with pytest.raises(LeffaError, match="small.png: photo is 30x40, too large"):
        images.open_image(path, "photo", max_pixels=1000)
    with pytest.raises(LeffaError, match="small.png: photo is 30x40, too small"):
        images.open_image(path, "photo", min_side=32)


def test_bad_paths_name_the_problem(tmp_path):
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "text.png").write_text("hello")
    good = _save(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)), tmp_path, "g.png")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    cases = {
        tmp_path / "folder.png": "folder.png: --mask is a folder, not an image file",
        tmp_path / "missing.png": "missing.png: --mask not found",
        tmp_path / "text.png": "text.png: --mask is not an image",
        truncated: "cut.png: --mask is damaged or truncated",
    }
    for path, message in cases.items():
        with pytest.raises(LeffaError, match=message.replace(".", r"\.")):
            images.open_image(path, "--mask")


# -- one rule each ------------------------------------------------------------------------------------------------


def test_parse_size_is_height_by_width():
    assert images.parse_size("512x384") == (512, 384)
    assert images.parse_size(" 512 X 384 ") == (512, 384) == images.parse_size("512*384")
    assert images.parse_size([64, 48], multiple=8) == (64, 48)
    for text, message in (("512by384", "expected HEIGHTxWIDTH"), ("0x8", "positive"), ("100x96", "multiples of 8")):
        with pytest.raises(LeffaError, match=f"--size {text}: .*{message}|--size '{text}': {message}"):
            images.parse_size(text, multiple=8)
    with pytest.raises(LeffaError, match="at least 32"):
        images.parse_size("16x64", min_side=32)


def test_mask_threshold_is_half_and_shared():
    grey = Image.fromarray(np.array([[0, 127, 128, 255]], np.uint8))
    assert images.mask_array(grey).tolist() == [[False, False, True, True]]
    assert np.asarray(images.binarize_image(grey)).tolist() == [[0, 0, 255, 255]]
    assert images.mask_tensor(grey, (1, 4)).tolist() == [[[0.0, 0.0, 1.0, 1.0]]]
    assert images.is_empty_mask(Image.new("L", (4, 4), 127)) and not images.is_empty_mask(grey)


def test_all_black_mask_gives_a_note(tmp_path):
    rng = np.random.default_rng(1)
    person = _save(Image.fromarray(rng.integers(0, 256, (64, 48, 3), np.uint8)), tmp_path, "person.png")
    mask = _save(Image.new("L", (48, 64), 0), tmp_path, "mask.png")
    job = tryon_job(person, person, tmp_path / "out.png", mask=mask, densepose=person)
    assert any("mask.png: garment mask is all black, nothing to regenerate" in note for note in job.notes)


# -- training and inference prepare the same tensors --------------------------------------------------------------

SIZE = (64, 48)  # (H, W) working size
PHOTO = (96, 72)  # (H, W) of the files: same aspect, so try-on's crop box is the whole photo


def _photo(rng, path: Path, size=PHOTO) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 256, (12, 9, 3), np.uint8)).resize(size[::-1], Image.BICUBIC))
    Image.fromarray(smooth).save(path, quality=95)
    return path


def test_training_and_tryon_prepare_identical_tensors(tmp_path):
    rng = np.random.default_rng(5)
    root = tmp_path / "viton"
    person = _photo(rng, root / "test" / "image" / "00001_00.jpg")
    garment = _photo(rng, root / "test" / "cloth" / "00001_00.jpg")
    densepose = _photo(rng, root / "test" / "image-densepose" / "00001_00.jpg")
    mask = np.zeros(PHOTO, np.uint8)
    mask[20:70, 10:60] = 255
    mask[40:45, 30:35] = 100  # grey values: the threshold is exercised too
    mask_path = root / "test" / "agnostic-mask" / "00001_00_mask.png"
    mask_path.parent.mkdir(parents=True)
    Image.fromarray(mask).save(mask_path)
    (root / "test_pairs.txt").write_text("00001_00.jpg 00001_00.jpg\n")

    sample = VitonHD(root, split="test", size=SIZE)[0]
    prepared = prepare(tryon_job(person, garment, tmp_path / "o.png", mask=mask_path, densepose=densepose), SIZE)
    assert prepared.box == (0, 0, PHOTO[1], PHOTO[0])
    pairs = {
        "image": prepared.person,
        "reference": prepared.reference,
        "mask": prepared.mask,
        "densepose": prepared.densepose,
    }
    for key, inference in pairs.items():
        assert torch.equal(sample[key][None], inference), key
    assert 0 < float(sample["mask"].mean()) < 1
    # the attention probe (viz-flow) reads them the same way
    assert torch.equal(load_image(person, SIZE, "PERSON"), prepared.person)
    assert torch.equal(load_mask(mask_path, SIZE), prepared.mask)
    assert torch.equal(load_densepose(densepose, SIZE), prepared.densepose)


def test_training_and_pose_prepare_identical_tensors(tmp_path):
    rng = np.random.default_rng(6)
    root = tmp_path / "deepfashion"
    source = _photo(rng, root / "train" / "image" / "a.jpg")
    target = _photo(rng, root / "train" / "image" / "b.jpg")
    iuv = np.concatenate([rng.integers(0, 256, (*PHOTO, 2)), rng.integers(0, 25, (*PHOTO, 1))], -1).astype(np.uint8)
    iuv_path = root / "train" / "densepose" / "b.png"
    iuv_path.parent.mkdir(parents=True)
    Image.fromarray(iuv).save(iuv_path)
    (root / "train_pairs.csv").write_text("from,to\na.jpg,b.jpg\n")

    sample = DeepFashionPose(root, split="train", size=SIZE)[0]
    prepared = prepare(pose_job(source, target, tmp_path / "o.png", densepose=iuv_path), SIZE)
    pairs = {
        "image": prepared.person,
        "reference": prepared.reference,
        "mask": prepared.mask,
        "densepose": prepared.densepose,
    }
    for key, inference in pairs.items():
        assert torch.equal(sample[key][None], inference), key
    assert float(sample["densepose"][2].max()) <= 1 and float(sample["densepose"][2].min()) >= -1
    assert torch.equal(load_densepose(iuv_path, SIZE, "iuv"), prepared.densepose)
