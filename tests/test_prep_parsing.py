"""Human parsing wrapper: input contract (BGR, normalisation, letterbox), output choice, labels, combination."""

from __future__ import annotations

import numpy as np
import pytest
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
    # Letterbox: a 48-wide photo scaled by 64/63 spans x in about [8, 56]; outside is black, normalised.
    assert x[0, 1, 32, 2] == pytest.approx(-0.456 / 0.224, abs=1e-4)
    box = Letterbox(48, 64, 64)
    assert box.to_input(np.array(0.0), np.array(0.0))[1] == pytest.approx(0.0)
    assert box.to_input(np.array(47.0), np.array(63.0))[1] == pytest.approx(64.0)


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
