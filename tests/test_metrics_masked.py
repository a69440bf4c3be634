"""Region metrics: masked PSNR inside / outside the mask and the garment region's mean-colour Delta E."""

from __future__ import annotations

import math

import pytest
import torch

from leffa.metrics.masked import masked_psnr, mean_colour_delta_e, rgb_to_lab


def test_masked_psnr_counts_only_the_mask():
    target = torch.zeros(2, 3, 8, 8)
    pred = target.clone()
    pred[:, :, :4] = 0.1  # error only in the top half
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, :4] = 1  # image 0: the mask is the top half; image 1: empty mask
    scores = masked_psnr(pred, target, mask)
    assert scores[0].item() == pytest.approx(20.0, abs=1e-4)  # mse 0.01
    assert math.isnan(scores[1].item())
    assert masked_psnr(pred, target, 1 - mask)[0].item() == pytest.approx(100.0)  # untouched bottom half


def test_lab_of_known_colours():
    colours = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    lab = rgb_to_lab(colours.view(4, 3, 1, 1)).view(4, 3)
    expected = torch.tensor([[100.0, 0.0, 0.0], [53.24, 80.09, 67.20], [0.0, 0.0, 0.0], [53.39, 0.0, 0.0]])
    torch.testing.assert_close(lab, expected, atol=0.05, rtol=0)


def test_delta_e_compares_mean_colours_of_the_region():
    target = torch.zeros(1, 3, 4, 4)
    target[..., ::2, :] = 1.0  # white and black stripes
    shifted = target.roll(1, dims=2)  # the stripes moved by one row: same mean colour per column pair
    region = torch.ones(1, 1, 4, 4)
    assert mean_colour_delta_e(shifted, target, region).item() == pytest.approx(0.0, abs=1e-3)
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1.0
    white = torch.ones(1, 3, 4, 4)
    assert mean_colour_delta_e(red, white, region).item() == pytest.approx(114.6, abs=0.3)  # CIE76 red vs white
    outside = torch.zeros(1, 1, 4, 4)
    outside[..., 0, 0] = 1
    assert mean_colour_delta_e(red, red, outside).item() == pytest.approx(0.0, abs=1e-4)
    assert math.isnan(mean_colour_delta_e(red, white, torch.zeros(1, 1, 4, 4)).item())
