"""Human parsing wrapper: input contract (BGR, normalisation, letterbox), output choice, labels, combination."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from prep_models import colour_parsing_onnx

from leffa.errors import LeffaError
from leffa.preprocess.parsing import (
    ATR_LABELS,
    LIP_LABELS,
    PERSON_LABELS,
    HumanParser,
    Letterbox,
    add_neck,
    combine_parsings,
    fill_upper_clothes_islands,
    label_image,
    logits_to_photo,
    model_input,
    read_label_image,
    to_person_labels,
)  # fmt: skip

UPPER, PANTS = ATR_LABELS.index("upper-clothes"), ATR_LABELS.index("pants")


def red_blue_photo(width: int = 48, height: int = 64) -> Image.Image:
    """Left half pure red, right half pure blue (portrait, so the letterbox pads left and right)."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = (255, 0, 0)
    pixels[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(pixels)


def test_label_sets_are_the_published_ones():
    assert len(ATR_LABELS) == 18 and len(LIP_LABELS) == 20
    assert ATR_LABELS[4] == "upper-clothes" and ATR_LABELS[11] == "face" and ATR_LABELS[17] == "scarf"
    assert LIP_LABELS[5] == "upper-clothes" and LIP_LABELS[13] == "face" and LIP_LABELS[19] == "right-shoe"
    assert PERSON_LABELS[18] == "neck"


def test_model_input_is_normalised_bgr_letterbox():
    x = model_input(red_blue_photo(), 64)
    assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32
    # Red photo pixels: channel 2 (R in BGR) high, channel 0 (B) low; ImageNet stats in BGR order.
    assert x[0, 2, 32, 20] == pytest.approx((1 - 0.485) / 0.229, abs=1e-4)
    assert x[0, 0, 32, 20] == pytest.approx((0 - 0.406) / 0.225, abs=1e-4)
    assert x[0, 0, 32, 44] == pytest.approx((1 - 0.406) / 0.225, abs=1e-4)
    # SCHP's transform: a 48 x 64 photo into 64 x 64 is a pure shift by 8 columns (scale (64 - 1) / (64 - 1)).
    assert x[0, 1, 32, 2] == pytest.approx(-0.456 / 0.224, abs=1e-4)
    box = Letterbox(48, 64, 64)
    assert box.to_input(np.array(0.0), np.array(0.0)) == (pytest.approx(8.0), pytest.approx(0.0))
    assert box.to_input(np.array(47.0), np.array(63.0)) == (pytest.approx(55.0), pytest.approx(63.0))


def schp_matrix(width: int, height: int, size: int) -> np.ndarray:
    """SCHP's get_affine_transform for the box [0, 0, w - 1, h - 1] at rotation 0, written from its rules: centre
    c = ((w - 1) / 2, (h - 1) / 2), scale s = max(w - 1, h - 1); the points c, c + (0, -s / 2) and
    c + (-s / 2, -s / 2) go to ((S - 1) / 2, (S - 1) / 2), ((S - 1) / 2, 0) and (0, 0)."""
    cx, cy, s, half = (width - 1) / 2, (height - 1) / 2, max(width - 1, height - 1), (size - 1) / 2
    src = np.array([[cx, cy, 1], [cx, cy - s / 2, 1], [cx - s / 2, cy - s / 2, 1]])
    dst = np.array([[half, half], [half, 0], [0, 0]])
    return np.linalg.solve(src, dst).T


@pytest.mark.parametrize("width,height,size", [(384, 512, 512), (384, 512, 473), (500, 333, 512), (48, 64, 64)])
def test_letterbox_is_schps_affine_transform(width, height, size):
    box = Letterbox(width, height, size)
    np.testing.assert_allclose(box.matrix(), schp_matrix(width, height, size), atol=1e-9)
    np.testing.assert_allclose(box.inverse_matrix() @ np.append(box.matrix()[:, 2], 1), [0, 0], atol=1e-9)


def normalised(bgr: np.ndarray) -> np.ndarray:
    return ((bgr.astype(np.float32) / np.float32(255) - np.array([0.406, 0.456, 0.485], np.float32))
            / np.array([0.225, 0.224, 0.229], np.float32)).transpose(2, 0, 1)  # fmt: skip


def test_model_input_equals_the_schp_warp_where_it_samples_whole_pixels():
    rng = np.random.default_rng(3)
    # 48 x 64 into 64: a shift by 8 columns, black outside.
    photo = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    expected = np.zeros((64, 64, 3), np.uint8)
    expected[:, 8:56] = photo[:, :, ::-1]
    np.testing.assert_array_equal(model_input(Image.fromarray(photo), 64)[0], normalised(expected))
    # 127 x 127 into 64: scale (64 - 1) / 126 = 1/2 exactly, so input pixel (i, j) is photo pixel (2i, 2j).
    photo = rng.integers(0, 256, (127, 127, 3), dtype=np.uint8)
    np.testing.assert_array_equal(model_input(Image.fromarray(photo), 64)[0], normalised(photo[::2, ::2, ::-1].copy()))


def test_model_input_follows_warpaffine_fixed_point_rules():
    """cv2.warpAffine's published fixed-point bilinear rules: each sample position is computed in 1/1024 pixel,
    rounded to the nearest 1/32 pixel, and 8-bit results are rounded half up. On a ramp (value 5 x column) the
    sample at output column j of a 48 x 48 photo in a 64 input reads x = j * 47 / 63."""
    ramp = np.repeat((np.arange(48, dtype=np.uint8) * 5)[None, :, None], 3, axis=2)
    ramp = np.repeat(ramp, 48, axis=0)
    got = model_input(Image.fromarray(ramp), 64)[0]
    for j in range(64):
        x32 = (round(j * 47 / 63 * 1024) + 16) >> 5  # position in 1/32 pixel
        ix, fx = x32 >> 5, x32 & 31
        right = 5 * min(ix + 1, 47) if ix + 1 < 48 else 0
        value = ((32 - fx) * 5 * ix * 1024 + fx * right * 1024 + (1 << 14)) >> 15
        assert got[0, 20, j] == normalised(np.full((1, 1, 3), value, np.uint8))[0, 0, 0], j


def test_logits_come_back_through_the_inverse_transform():
    rng = np.random.default_rng(4)
    low = rng.standard_normal((3, 16, 16)).astype(np.float32)
    square = torch.nn.functional.interpolate(torch.from_numpy(low)[None], size=(64, 64), mode="bilinear",
                                             align_corners=True)[0]  # fmt: skip
    back = logits_to_photo(low, Letterbox(48, 64, 64))  # photo pixel x is input pixel x + 8
    assert back.shape == (3, 64, 48)
    torch.testing.assert_close(back, square[:, :, 8:56], rtol=0, atol=0)


def test_atr_parser_reads_fusion_output_and_maps_back_to_the_photo(tmp_path):
    path = colour_parsing_onnx(tmp_path / "atr.onnx", 18, {UPPER: 2, PANTS: 0}, input_name="image")
    parser = HumanParser(path, "atr")
    assert parser.input_name == "image" and parser.size == 64 and parser.output_index == 1
    labels = parser(red_blue_photo())
    assert labels.shape == (64, 48)
    assert (labels[:, 4:18] == UPPER).all()  # red -> upper-clothes: BGR order respected
    assert (labels[:, 30:44] == PANTS).all()  # blue -> pants; no letterbox padding leaks into the photo


def test_lip_parser_with_dynamic_input_uses_the_default_size(tmp_path):
    lip_upper, lip_pants = LIP_LABELS.index("upper-clothes"), LIP_LABELS.index("pants")
    path = colour_parsing_onnx(tmp_path / "lip.onnx", 20, {lip_upper: 2, lip_pants: 0}, size=None)
    parser = HumanParser(path, "lip")
    assert parser.size == 473
    labels = parser(red_blue_photo(40, 30))  # landscape: padding above and below
    assert labels.shape == (30, 40)
    assert (labels[3:27, 2:16] == lip_upper).all() and (labels[3:27, 24:38] == lip_pants).all()


def test_wrong_label_set_and_missing_file_are_clear_errors(tmp_path):
    path = colour_parsing_onnx(tmp_path / "atr.onnx", 18, {UPPER: 2})
    with pytest.raises(LeffaError, match="no output has 20 channels.*pass --model"):
        HumanParser(path, "lip")
    with pytest.raises(LeffaError, match="parsing model not found"):
        HumanParser(tmp_path / "nope.onnx", "atr")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(LeffaError, match="not a loadable ONNX model"):
        HumanParser(tmp_path / "junk.onnx", "atr")


def test_lip_labels_fold_into_person_labels():
    lip = np.array([[LIP_LABELS.index(n) for n in ("coat", "jumpsuits", "face", "glove", "right-shoe")]])
    person = to_person_labels(lip, "lip")
    assert [PERSON_LABELS[i] for i in person[0]] == ["upper-clothes", "dress", "face", "glove", "right-shoe"]


def test_neck_is_atr_face_that_lip_does_not_call_face():
    atr = np.full((4, 4), ATR_LABELS.index("face"), dtype=np.uint8)
    lip = np.full((4, 4), LIP_LABELS.index("face"), dtype=np.uint8)
    lip[2:] = LIP_LABELS.index("upper-clothes")
    person = add_neck(atr, lip)
    assert (person[:2] == PERSON_LABELS.index("face")).all() and (person[2:] == PERSON_LABELS.index("neck")).all()


def test_small_islands_in_upper_clothes_are_filled_large_ones_kept():
    person = np.zeros((100, 100), dtype=np.uint8)
    person[10:90, 10:90] = UPPER
    person[20:23, 20:23] = ATR_LABELS.index("bag")  # 9 px: a speck
    person[50:70, 50:70] = ATR_LABELS.index("bag")  # 400 px = 4 % of the image: a real bag
    person[30:40, 80:90] = ATR_LABELS.index("left-arm")  # arms are never relabelled
    out = fill_upper_clothes_islands(person)
    assert (out[20:23, 20:23] == UPPER).all()
    assert (out[50:70, 50:70] == ATR_LABELS.index("bag")).all()
    assert (out[30:40, 80:90] == ATR_LABELS.index("left-arm")).all()
    assert combine_parsings(person).shape == person.shape


def test_label_png_round_trip(tmp_path):
    labels = np.arange(20, dtype=np.uint8).reshape(4, 5)
    label_image(labels).save(tmp_path / "p.png")
    assert (read_label_image(tmp_path / "p.png") == labels).all()
    Image.new("RGB", (2, 2)).save(tmp_path / "rgb.png")
    with pytest.raises(LeffaError, match="palette or greyscale"):
        read_label_image(tmp_path / "rgb.png")


def test_tall_photos_are_labelled_on_a_smaller_copy(tmp_path, monkeypatch):
    path = colour_parsing_onnx(tmp_path / "atr.onnx", 18, {UPPER: 2, PANTS: 0})
    monkeypatch.setattr("leffa.preprocess.parsing.MAX_LABEL_HEIGHT", 32)
    labels = HumanParser(path, "atr")(red_blue_photo(48, 64))
    assert labels.shape == (64, 48)
    assert (labels[:, 4:18] == UPPER).all() and (labels[:, 30:44] == PANTS).all()
