"""Attention as flow: where each target token looks in the reference, and the reference warped by it.

For one attention layer with queries ``Q`` of the target tokens and keys ``K`` of the reference tokens, per head
``A_h = softmax(Q_h K_h^T / (tau sqrt(d)))``; the head-averaged map times the reference coordinate grid ``C`` is
the flow. Since ``mean_h(A_h) C = mean_h(A_h C)``, every head's flow is an ordinary attention with values ``C``,
so a fused kernel computes it in O(n) memory; ``explicit_attention_flow`` builds the n x n map and exists for tests,
benchmarks and visualisation only.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from leffa.errors import LeffaError


def coordinate_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(height * width, 2) token-centre coordinates in [-1, 1], (x, y) order as ``grid_sample`` reads them.

    Top-left token -> (-1, -1), bottom-right -> (1, 1); row-major like the flattened token sequence.
    """
    ys = (
        torch.linspace(-1.0, 1.0, height, device=device, dtype=dtype)
        if height > 1
        else torch.zeros(1, device=device, dtype=dtype)
    )
    xs = (
        torch.linspace(-1.0, 1.0, width, device=device, dtype=dtype)
        if width > 1
        else torch.zeros(1, device=device, dtype=dtype)
    )
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1).reshape(height * width, 2)


def check_temperature(temperature: float) -> float:
    """The softmax temperature tau must be a positive finite number (0, NaN or inf give NaN flows)."""
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not (math.isfinite(temperature) and temperature > 0)
    ):
        raise LeffaError(f"--temperature: {temperature!r} must be a positive finite number")
    return float(temperature)


def _scale(head_dim: int, temperature: float) -> float:
    return 1.0 / (check_temperature(temperature) * math.sqrt(head_dim))


def attention_flow(
    queries: torch.Tensor, keys: torch.Tensor, height: int, width: int, temperature: float = 2.0
) -> torch.Tensor:
    """Head-averaged attention flow ``(B, height, width, 2)`` from per-head ``queries``/``keys`` ``(B, H, n, d)``.

    Fused: ``scaled_dot_product_attention`` with the coordinate grid as values, never materialising n x n.
    """
    batch, heads, tokens, head_dim = queries.shape
    if keys.shape[2] != height * width:
        raise ValueError(f"{keys.shape[2]} reference tokens do not form a {height}x{width} grid")
    coords = coordinate_grid(height, width, queries.device, queries.dtype)
    values = coords.expand(batch, heads, -1, 2)
    if head_dim != 2:
        # Fused kernels (CUDA, and CPU too) want value width == head width; a narrower value silently falls back to
        # the math path, which builds the n x n map (5 GB and 5x slower at n = 12288 with 4 heads on CPU).
        values = F.pad(values, (0, head_dim - 2))
    flow = F.scaled_dot_product_attention(queries, keys, values, scale=_scale(head_dim, temperature))[..., :2]
    return flow.mean(dim=1).reshape(batch, height, width, 2)


def attention_map(queries: torch.Tensor, keys: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """Explicit head-averaged attention ``(B, n, m)``: softmax over the reference keys, per head, then mean."""
    scores = queries @ keys.transpose(-1, -2) * _scale(queries.shape[-1], temperature)
    return scores.softmax(dim=-1).mean(dim=1)


def explicit_attention_flow(
    queries: torch.Tensor, keys: torch.Tensor, height: int, width: int, temperature: float = 2.0
) -> torch.Tensor:
    """The same flow as ``attention_flow`` through the explicit n x n map (reference implementation)."""
    coords = coordinate_grid(height, width, queries.device, queries.dtype)
    return (attention_map(queries, keys, temperature) @ coords).reshape(queries.shape[0], height, width, 2)


def upsample_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly upsample a ``(B, h, w, 2)`` flow to ``size`` = (H, W) and clamp it to [-1, 1]."""
    upsampled = F.interpolate(flow.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False)
    return upsampled.permute(0, 2, 3, 1).clamp(-1.0, 1.0)


def _as_tensor(flow) -> torch.Tensor:
    return flow if isinstance(flow, torch.Tensor) else torch.from_numpy(np.asarray(flow))


def end_point_errors(pred_flow, gt_flow) -> torch.Tensor:
    """Per-pixel end-point error in pixels, ``(..., H, W)``, NaN where the ground truth has no correspondence.

    Both flows are ``(..., H, W, 2)`` in normalised (x, y) units; the image size is read from their shape.
    """
    pred, gt = _as_tensor(pred_flow).double(), _as_tensor(gt_flow).double()
    if pred.shape != gt.shape or pred.shape[-1] != 2:
        raise ValueError(f"flow shapes differ or are not (..., H, W, 2): {tuple(pred.shape)} vs {tuple(gt.shape)}")
    height, width = gt.shape[-3], gt.shape[-2]
    dx = (pred[..., 0] - gt[..., 0]) * width / 2
    dy = (pred[..., 1] - gt[..., 1]) * height / 2
    return torch.sqrt(dx.square() + dy.square())  # NaN propagates from the ground truth


def flow_epe(pred_flow, gt_flow) -> float:
    """Mean end-point error in pixels over the pixels with a correspondence (NaN when there are none)."""
    errors = end_point_errors(pred_flow, gt_flow)
    valid = ~torch.isnan(errors)
    return float(errors[valid].mean()) if bool(valid.any()) else float("nan")


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` (B, C, H, W) at ``flow`` (B, H', W', 2) coordinates: bilinear, ``align_corners=False``."""
    return F.grid_sample(image, flow.to(image.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


def token_grid(tokens: int, image_height: int, image_width: int) -> tuple[int, int]:
    """The (h, w) token grid of a layer with ``tokens`` tokens for an image of the given aspect."""
    for downscale in (2**k for k in range(12)):
        height, width = -(-image_height // downscale), -(-image_width // downscale)
        if height * width == tokens:
            return height, width
    raise ValueError(f"{tokens} tokens do not tile a {image_height}x{image_width} image")
