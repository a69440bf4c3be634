"""Region metrics for try-on, where ground truth is known pixel for pixel (synthetic data, paired or unpaired).

- ``psnr_mask``: PSNR inside the region a try-on regenerates (the agnostic mask): how well the garment was made.
- ``psnr_outside``: PSNR outside it: how much of the photo the model kept (without ``--repaint``).
- ``delta_e``: CIE76 colour difference (Euclidean in CIE Lab, D65) between the *mean* colour of the garment region
  in the prediction and in the ground truth: whether the right garment colour arrived, independent of where its
  stripes fall. A Delta E of about 2 is a just-noticeable difference; 10 is "same colour family".

All functions take batches ``(B, 3, H, W)`` in [0, 1] and masks ``(B, 1, H, W)`` in {0, 1} and return ``(B,)``;
an empty region gives NaN (the image is left out of the mean).
"""

from __future__ import annotations

import torch

from leffa.errors import LeffaError

MASK_METRICS = ("psnr_mask", "psnr_outside", "delta_e")

# sRGB (D65) -> XYZ, and the D65 white point.
_RGB_TO_XYZ = torch.tensor(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
_WHITE = torch.tensor([0.95047, 1.0, 1.08883])


def region_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the pixels where ``mask`` is 1, all three channels; ``(B,)``, NaN for an empty mask.

    Area-normalised, unlike ``leffa.viz.render.masked_mse`` (the Leffa loss term, a mean over the whole image).
    """
    mask = mask.to(pred.dtype)
    area = mask.sum(dim=(1, 2, 3)) * pred.shape[1]
    mse = (((pred - target) ** 2) * mask).sum(dim=(1, 2, 3)) / area.clamp(min=1)
    return torch.where(area > 0, mse, torch.full_like(mse, float("nan")))


def masked_psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PSNR (data range 1) over the pixels where ``mask`` is 1, all three channels; ``(B,)`` in dB."""
    return 10 * torch.log10(1 / region_mse(pred, target, mask).clamp(min=1e-10))


def rgb_to_lab(images: torch.Tensor) -> torch.Tensor:
    """sRGB ``(..., 3, H, W)`` in [0, 1] -> CIE Lab (D65) of the same shape (L in [0, 100])."""
    linear = torch.where(images > 0.04045, ((images + 0.055) / 1.055) ** 2.4, images / 12.92)
    xyz = torch.einsum("ij,...jhw->...ihw", _RGB_TO_XYZ.to(images), linear)
    xyz = xyz / _WHITE.to(images).view(3, 1, 1)
    f = torch.where(xyz > (6 / 29) ** 3, xyz.clamp(min=1e-12) ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    fx, fy, fz = f.unbind(dim=-3)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)


def mean_colour_delta_e(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """CIE76 Delta E between the region's mean Lab colour in ``pred`` and in ``target``; ``(B,)``."""
    region = region.to(pred.dtype)
    area = region.sum(dim=(1, 2, 3))
    means = [(rgb_to_lab(image) * region).sum(dim=(2, 3)) / area.clamp(min=1)[:, None] for image in (pred, target)]
    delta = (means[0] - means[1]).norm(dim=1)
    return torch.where(area > 0, delta, torch.full_like(delta, float("nan")))


def region_scores(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, region: torch.Tensor | None, metrics
) -> dict[str, torch.Tensor]:
    """The chosen ``MASK_METRICS`` for a batch: the mask ones need ``mask``, ``delta_e`` needs ``region``."""
    scores = {}
    if "psnr_mask" in metrics or "psnr_outside" in metrics:
        if mask is None:
            raise LeffaError("psnr_mask and psnr_outside need the mask of each prediction", option="mask")
        if "psnr_mask" in metrics:
            scores["psnr_mask"] = masked_psnr(pred, target, mask)
        if "psnr_outside" in metrics:
            scores["psnr_outside"] = masked_psnr(pred, target, 1 - mask)
    if "delta_e" in metrics:
        if region is None:
            raise LeffaError("delta_e needs the garment region of each prediction", option="region")
        scores["delta_e"] = mean_colour_delta_e(pred, target, region)
    return scores
