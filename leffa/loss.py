"""The Leffa loss: attention maps of the generative UNet turned into flow fields that must warp the reference onto
the target (Zhou et al., CVPR 2025, Sec. 3.2-3.3; the working formulas are in docs/method.md).

Per selected self-attention layer ``l``: the queries of the generative tokens against the keys of the reference
tokens only give ``A_h = softmax(Q_h K_h^T / (tau sqrt(d)))``; the head-averaged map times the normalised reference
coordinate grid is the flow (computed fused, as attention with the coordinates as values, never n x n); the flow is
upsampled bilinearly to image size, warps the reference image with ``grid_sample``, and the masked distance to the
target is averaged over all pixels. Layers are averaged, each sample is gated by ``t < theta_t``, the batch is
averaged and the result is weighted by ``lambda``. Only layers with ``h^l / H >= theta_res`` take part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from leffa.flow import attention_flow, explicit_attention_flow, token_grid, upsample_flow, warp

Distance = Literal["l2", "smooth_l1"]


@dataclass(frozen=True)
class LeffaLossSettings:
    """The loss's knobs with the paper's defaults (``lambda``, ``tau``, ``theta_res``, ``theta_t``)."""

    weight: float = 1e-3
    temperature: float = 2.0
    resolution_threshold: float = 1 / 32
    resolution_inclusive: bool = True  # ">=" as the authors' code (1/8, 1/16, 1/32 layers); False: ">" as the paper
    timestep_threshold: int = 500
    distance: Distance = "l2"  # squared L2 as the paper; "smooth_l1" as the authors' early code


def select_layers(layer_downscale: dict[str, int], threshold: float = 1 / 32, inclusive: bool = True) -> list[str]:
    """Layers whose attention-map side ratio ``h^l / H = 1 / downscale`` passes the resolution gate."""
    tolerance = 1e-12
    chosen = []
    for name, downscale in layer_downscale.items():
        ratio = 1.0 / downscale
        if (ratio >= threshold - tolerance) if inclusive else (ratio > threshold + tolerance):
            chosen.append(name)
    return chosen


def timestep_gate(timesteps: torch.Tensor, threshold: int = 500) -> torch.Tensor:
    """Per-sample weight 1 where ``t < theta_t``, else 0 (float, shape (B,))."""
    return (torch.as_tensor(timesteps) < threshold).float()


def layer_flow(
    queries: torch.Tensor,
    keys: torch.Tensor,
    image_size: tuple[int, int],
    temperature: float = 2.0,
    fused: bool = True,
) -> torch.Tensor:
    """Head-averaged flow ``(B, h, w, 2)`` of one layer from its captured per-head queries and reference keys."""
    height, width = token_grid(keys.shape[2], *image_size)
    compute = attention_flow if fused else explicit_attention_flow
    return compute(queries, keys, height, width, temperature)


def warp_reference(flow: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The reference image warped by a token-grid flow upsampled to the reference's size (float32)."""
    upsampled = upsample_flow(flow.float(), (reference.shape[-2], reference.shape[-1]))
    return warp(reference.float(), upsampled)


def masked_distance(
    warped: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, distance: Distance = "l2"
) -> torch.Tensor:
    """Per-sample distance of ``warped * mask`` to ``target * mask``, averaged over all pixels (not the mask area)."""
    mask = mask.to(warped.dtype)
    warped, target = warped * mask, target.to(warped.dtype) * mask
    if distance == "l2":
        per_pixel = (warped - target).pow(2)
    elif distance == "smooth_l1":
        per_pixel = F.smooth_l1_loss(warped, target, reduction="none")
    else:
        raise ValueError(f"unknown Leffa distance {distance!r}; choose l2 or smooth_l1")
    return per_pixel.flatten(1).mean(dim=1)


@dataclass
class LeffaLossResult:
    """``loss`` is weighted (``lambda * ...``) and ready to add; ``unweighted`` is for logging."""

    loss: torch.Tensor
    unweighted: torch.Tensor
    per_layer: dict[str, torch.Tensor]


def leffa_loss(
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]],
    reference: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    timesteps: torch.Tensor,
    settings: LeffaLossSettings = LeffaLossSettings(),
    sample_weight: torch.Tensor | None = None,
    fused: bool = True,
) -> LeffaLossResult:
    """The gated, weighted Leffa loss over the captured layers ``{layer: (queries, reference keys)}``.

    ``reference``/``target`` are images (B, 3, H, W) in [-1, 1], ``mask`` (B, 1, H, W) with 1 = region to
    regenerate. ``sample_weight`` (B,) multiplies the timestep gate, e.g. 0 for samples whose reference was dropped.
    """
    if not captured:
        raise ValueError("no captured attention layers for the Leffa loss (check the resolution gate)")
    image_size = (target.shape[-2], target.shape[-1])
    per_layer = {}
    for name, (queries, keys) in captured.items():
        flow = layer_flow(queries, keys, image_size, settings.temperature, fused=fused)
        per_layer[name] = masked_distance(warp_reference(flow, reference), target, mask, settings.distance)
    per_sample = torch.stack(list(per_layer.values())).mean(dim=0)
    gate = timestep_gate(timesteps, settings.timestep_threshold).to(per_sample.device)
    if sample_weight is not None:
        gate = gate * sample_weight.to(gate)
    unweighted = (per_sample * gate).mean()
    return LeffaLossResult(
        loss=settings.weight * unweighted,
        unweighted=unweighted.detach(),
        per_layer={name: value.detach().mean() for name, value in per_layer.items()},
    )


def predicts(scheduler) -> str:
    """The scheduler's prediction type (epsilon when its config has none, as diffusers assumes): what the UNet
    predicts, which decides both the target and the Min-SNR weight."""
    return scheduler.config.get("prediction_type", "epsilon")


def diffusion_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet should predict: the noise (epsilon, Leffa's choice) or the velocity for v-prediction bases."""
    prediction_type = predicts(scheduler)
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported scheduler prediction_type {prediction_type!r}")


def diffusion_loss(
    prediction: torch.Tensor, target: torch.Tensor, sample_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error in float32 (bf16 predictions would lose the small differences late in training).

    ``sample_weight`` ``(B,)`` scales each sample's mean error (Min-SNR weighting); without it, the plain mean."""
    if sample_weight is None:
        return F.mse_loss(prediction.float(), target.float())
    per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").flatten(1).mean(1)
    return (per_sample * sample_weight.float()).mean()


def min_snr_weight(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights ``(B,)`` (Hang et al., ICCV 2023): min(SNR(t), gamma) / SNR(t) for epsilon
    targets, / (SNR(t) + 1) for velocity targets.

    Why: the nearly clean timesteps (high SNR) have small, conflicting gradients that slow the learning of the coarse
    structure; capping their weight at gamma is reported to converge about 3x faster. SNR from diffusers'
    ``compute_snr`` (the scheduler's own alphas)."""
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, timesteps).float()
    capped = snr.clamp(max=gamma)
    if predicts(scheduler) == "v_prediction":
        return capped / (snr + 1)
    return capped / snr
