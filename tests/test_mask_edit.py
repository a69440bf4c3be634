"""``leffa.mask_edit``: the one mask correction (grow, shrink, garment length, brush) and ``leffa tryon``'s options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leffa.errors import LeffaError
from leffa.mask_edit import MaskEdit, edit_mask
from leffa_cli.app import main

EXAMPLES = Path(__file__).parent.parent / "examples"


def _mask(region: np.ndarray) -> Image.Image:
    return Image.fromarray(region.astype(np.uint8) * 255)


def _array(image: Image.Image) -> np.ndarray:
    return np.asarray(image) > 127


def test_grow_and_shrink_are_disks():
    dot = np.zeros((41, 41), dtype=bool)
    dot[20, 20] = True
    disk = _array(edit_mask(_mask(dot), MaskEdit(grow=10)))
    ys, xs = np.nonzero(disk)
    assert np.hypot(ys - 20, xs - 20).max() <= 10 and disk[20, 10] and disk[10, 20] and not disk[12, 12]
    assert abs(disk.sum() - np.pi * 100) < 0.05 * np.pi * 100  # a disk's area, not a square's
    assert np.array_equal(_array(edit_mask(_mask(disk), MaskEdit(shrink=10))), dot)

    square = np.zeros((40, 40), dtype=bool)
    square[10:30, 10:30] = True
    shrunk = _array(edit_mask(_mask(square), MaskEdit(shrink=3)))
    assert np.array_equal(np.nonzero(shrunk.any(0))[0], np.arange(13, 27))
    gap = square.copy()
    gap[:, 19:21] = False  # a 2 px slit: grow then shrink by 2 closes it inside, the outline stays
    closed = _array(edit_mask(_mask(gap), MaskEdit(grow=2, shrink=2)))
    assert closed[12:28, 19:21].all() and not (closed & ~square).any() and (closed != square).sum() == 4


def test_length_cuts_from_the_top_and_the_brush_paints_last():
    legs = np.zeros((100, 40), dtype=bool)
    legs[20:80, 10:30] = True
    cut = _array(edit_mask(_mask(legs), MaskEdit(length=0.5), "lower_body"))
    assert np.flatnonzero(cut.any(1))[[0, -1]].tolist() == [20, 49]
    add, erase = np.zeros_like(legs), np.zeros_like(legs)
    add[90:95, :] = True
    erase[20:30, :] = True
    painted = _array(edit_mask(_mask(legs), MaskEdit(length=0.5), "dresses", add=add, erase=erase))
    assert np.flatnonzero(painted.any(1)).tolist() == list(range(30, 50)) + list(range(90, 95))
    assert np.array_equal(_array(edit_mask(_mask(legs), MaskEdit())), legs)


@pytest.mark.parametrize(
    "edit, garment_type, message",
    [
        (MaskEdit(grow=-1), "upper_body", "mask_grow -1: give a whole number"),
        (MaskEdit(shrink=2.5), "upper_body", "mask_shrink 2.5"),
        (MaskEdit(length=0), "lower_body", "garment_length 0: give a fraction"),
        (MaskEdit(length=float("nan")), "dresses", "garment_length nan"),
        (MaskEdit(length=0.5), "upper_body", "applies to lower_body and dresses only"),
    ],
)
def test_bad_edits_are_one_line_errors(edit, garment_type, message):
    with pytest.raises(LeffaError, match=message):
        edit_mask(Image.new("L", (8, 8)), edit, garment_type)


def run(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_tryon_corrects_the_mask_and_saves_the_conditions(tmp_path, capsys):
    torch.set_num_threads(1)
    args = [
        "tryon",
        EXAMPLES / "person.jpg",
        EXAMPLES / "garment.jpg",
        "--mask",
        EXAMPLES / "mask.png",
        "--densepose",
        EXAMPLES / "densepose.jpg",
        "--model",
        "synth-tiny",
        "--offline",
        "--steps",
        "1",
    ]
    code, out, err = run(
        args
        + [
            "-o",
            tmp_path / "out.png",
            "--garment-type",
            "dresses",
            "--mask-grow",
            "4",
            "--garment-length",
            "0.6",
            "--save-conditions",
            tmp_path / "cond",
        ],
        capsys,
    )
    assert code in (0, None), err
    saved = Image.open(tmp_path / "cond" / "out_mask.png")
    expected = edit_mask(Image.open(EXAMPLES / "mask.png"), MaskEdit(grow=4, length=0.6), "dresses")
    assert np.array_equal(np.asarray(saved), np.asarray(expected))
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "cond" / "out_densepose.png")),
        np.asarray(Image.open(EXAMPLES / "densepose.jpg").convert("RGB")),
    )
    assert Image.open(tmp_path / "out.png").size == saved.size

    code, out, err = run(args + ["-o", tmp_path / "bad.png", "--garment-length", "0.5"], capsys)
    assert code == 2 and err.strip() == (
        "leffa: error: --garment-length 0.5: applies to lower_body and dresses only, not upper_body"
    )
    assert not (tmp_path / "bad.png").exists()
