"""A tiny from-scratch base model for synthetic data: configs, a trained autoencoder, random UNet weights.

There is no pretrained Stable Diffusion on our machines, and ``leffa train`` keeps the VAE frozen, so a model
trained from scratch needs an autoencoder first. ``make_base_folder`` writes a diffusers-style base folder
(``unet/``, ``vae/``, ``scheduler/`` configs and weights) shaped like SD1.5-inpainting but tiny: the VAE has three
levels (latents at 1/4 of the image) and the UNet four (16-16-32-32 channels, as the tiny test fixture), sized for
CPU training in minutes at 64x48 on a shared 2-core machine.
``leffa train --base FOLDER --init base`` then starts both UNets from the same random weights and keeps this VAE.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import load_file, save_file

from leffa.atomic import atomic_path
from leffa.base_folder import WEIGHT_FILES, part_weights_file
from leffa.errors import LeffaError
from leffa.images import read_rgb, rgb_tensor

UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 4,
    "block_out_channels": [16, 16, 32, 32],
    "center_input_sample": False,
    "cross_attention_dim": 32,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 9,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 8,
    "out_channels": 4,
    "sample_size": 16,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
VAE_CONFIG = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [8, 16, 32],
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 64,
    "scaling_factor": 1.0,  # set from the trained latents' spread
}
SCHEDULER_CONFIG = {  # SD1.5-inpainting's
    "_class_name": "DDPMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "prediction_type": "epsilon",
}
WEIGHTS = WEIGHT_FILES[0]  # written in full precision


def _clean(config: dict) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def collect_images(data: str | Path, size: tuple[int, int], limit: int = 4000) -> torch.Tensor:
    """All person and garment images under ``data`` (any split) as one (N, 3, H, W) tensor in [-1, 1]."""
    paths = sorted(Path(data).glob("*/image/*.jpg")) + sorted(Path(data).glob("*/cloth/*.jpg"))
    if not paths:
        raise LeffaError(f"{data}: no */image/*.jpg or */cloth/*.jpg images to train the autoencoder on")
    pictures = []
    for path in paths[:limit]:
        pictures.append(rgb_tensor(read_rgb(path, "autoencoder training image"), size))
    return torch.stack(pictures).contiguous()


LOG_VARIANCE = -30.0  # diffusers clamps the posterior's log-variance to [-30, 20]: std = exp(-15)


@torch.no_grad()
def pin_variance(vae: AutoencoderKL) -> None:
    """Make the posterior deterministic: the log-variance half of ``quant_conv``'s output is the constant -30."""
    latent = vae.config.latent_channels
    vae.quant_conv.weight[latent:] = 0
    vae.quant_conv.bias[latent:] = LOG_VARIANCE


def vae_config(channels: list[int] | None = None) -> dict:
    """The tiny VAE's config; ``channels`` (one width per level; latents at 1 / 2^(levels - 1)) replaces 8-16-32."""
    config = dict(VAE_CONFIG)
    if channels:
        config.update(
            block_out_channels=list(channels),
            down_block_types=["DownEncoderBlock2D"] * len(channels),
            up_block_types=["UpDecoderBlock2D"] * len(channels),
        )
    return config


def unet_config(
    channels: list[int] | None = None,
    attention_levels: list[int] | None = None,
    heads: list[int] | None = None,
) -> dict:
    """The tiny UNet's config; ``channels`` (four widths, multiples of 8) replaces 16-16-32-32,
    ``attention_levels`` (1-based, 1 = full latent resolution) the levels with self-attention (default 1, 2, 3, as
    SD1.5) and ``heads`` (one count per level, dividing its width) the 4 attention heads everywhere. Attention at a
    32x24 latent (a 64x48 image through a two-level VAE) with 4 heads is 3/5 to 4/5 of a training step's time; one
    head there costs less than half of that (benchmarks/train_step.py, docs/synthetic.md)."""
    config = dict(UNET_CONFIG)
    if channels:
        if len(channels) != 4 or any(c % 8 for c in channels):
            raise LeffaError(f"--unet-channels {','.join(map(str, channels))}: give four widths, multiples of 8")
        config["block_out_channels"] = list(channels)
    if attention_levels is not None:
        if not attention_levels or any(level not in (1, 2, 3, 4) for level in attention_levels):
            raise LeffaError(
                f"--unet-attention {','.join(map(str, attention_levels))}: give levels between 1 and 4, e.g. 2,3"
            )
        levels = range(1, 5)
        config["down_block_types"] = [
            "CrossAttnDownBlock2D" if level in attention_levels else "DownBlock2D" for level in levels
        ]
        config["up_block_types"] = [
            "CrossAttnUpBlock2D" if level in attention_levels else "UpBlock2D" for level in reversed(levels)
        ]
    if heads is not None:
        widths: list[int] = list(config["block_out_channels"])  # type: ignore[call-overload]
        if len(heads) != 4 or any(h < 1 or width % h for h, width in zip(heads, widths, strict=True)):
            raise LeffaError(
                f"--unet-heads {','.join(map(str, heads))}: give four head counts, each dividing its level's width"
            )
        config["attention_head_dim"] = list(heads)  # diffusers reads this legacy name as the number of heads
    return config


def train_autoencoder(
    images: torch.Tensor,
    steps: int,
    batch_size: int = 16,
    lr: float = 2e-3,
    seed: int = 0,
    kl_weight: float = 1e-6,
    progress=None,
    config: dict | None = None,
) -> tuple[AutoencoderKL, dict]:
    """Train the tiny VAE on ``images``: L1 + MSE reconstruction of the posterior's mode, a small KL term on the
    mean, AdamW with one-cycle decay.

    The autoencoder is deterministic: its log-variance output is pinned to the minimum (``pin_variance``), so a
    posterior sample (what the trainer encodes with) is the mode. Training through samples of an unpinned variance
    (std about 1 at initialisation, shrinking slowly) feeds the decoder noise: with the 16-32-64 widths and 1,500
    steps it reached 15.1 dB inside the try-on mask (synthetic test split), 15.6 dB through the mode.
    Returns the VAE (scaling factor set so latents have unit spread) and the final reconstruction PSNR (dB).
    """
    torch.manual_seed(seed)
    vae = AutoencoderKL.from_config(_clean(config or VAE_CONFIG))
    pin_variance(vae)
    optimiser = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.05)
    generator = torch.Generator().manual_seed(seed)
    vae.train()
    height, width = images.shape[-2:]
    crop_h, crop_w = max(8, height // 2 // 4 * 4), max(8, width // 2 // 4 * 4)
    for step in range(steps):
        # Random half-size crops: the autoencoder is convolutional, and crops cost a quarter of whole images.
        picks = torch.randint(0, len(images), (batch_size,), generator=generator)
        top = int(torch.randint(0, height - crop_h + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - crop_w + 1, (1,), generator=generator))
        batch = images[picks, :, top : top + crop_h, left : left + crop_w]
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.mode()).sample
        loss = F.l1_loss(reconstruction, batch) + F.mse_loss(reconstruction, batch)
        loss = loss + kl_weight * posterior.mean.pow(2).sum(dim=(1, 2, 3)).mean() / 2  # the KL's mean term
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        pin_variance(vae)
        if progress is not None:
            progress(step, loss.item())
    vae.eval()
    with torch.no_grad():
        probe = images[: min(64, len(images))]
        latents = vae.encode(probe).latent_dist.mode()
        reconstruction = vae.decode(latents).sample.clamp(-1, 1)
        mse = F.mse_loss((reconstruction + 1) / 2, (probe + 1) / 2).item()
        scaling = 1.0 / latents.std().item()
    vae.register_to_config(scaling_factor=round(scaling, 5))
    return vae, {"psnr": 10 * np.log10(1 / max(mse, 1e-12)), "scaling_factor": round(scaling, 5)}


def _write_json(config: dict, path: Path) -> None:
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(config, indent=1))


def _write_weights(module: torch.nn.Module, path: Path) -> None:
    tensors = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    with atomic_path(path) as temp:
        save_file(tensors, str(temp))


def make_base_folder(
    out: str | Path,
    data: str | Path,
    size: tuple[int, int] = (64, 48),
    steps: int = 400,
    seed: int = 0,
    progress=None,
    unet_channels: list[int] | None = None,
    vae_channels: list[int] | None = None,
    attention_levels: list[int] | None = None,
    heads: list[int] | None = None,
    vae_from: str | Path | None = None,
) -> dict:
    """Write a tiny base-model folder whose VAE is trained on the synthetic images in ``data``; returns stats.

    ``unet_channels`` / ``vae_channels`` change the widths (defaults: UNet 16-16-32-32, VAE 8-16-32);
    ``attention_levels`` the UNet levels with self-attention (default 1, 2, 3), ``heads`` their heads (4 each).
    ``vae_from`` (a base folder) reuses its trained VAE instead of training one: a new UNet shape on the same
    latents, which ``leffa train --grow`` needs (``data`` and ``steps`` are then unused)."""
    unet_settings = unet_config(unet_channels, attention_levels, heads)
    out = Path(out)
    if vae_from is not None:
        settings_file, weights_file = Path(vae_from) / "vae" / "config.json", part_weights_file(Path(vae_from), "vae")
        if not settings_file.is_file() or weights_file is None:
            raise LeffaError(f"{vae_from}: not a base folder with a trained VAE (vae/config.json, vae/{WEIGHTS})")
        vae_settings = json.loads(settings_file.read_text())
        vae = AutoencoderKL.from_config(_clean(vae_settings))
        vae.load_state_dict(load_file(str(weights_file)), strict=True)
        stats: dict = {"images": 0}
    else:
        if steps < 1:
            raise LeffaError(f"steps {steps}: need at least one autoencoder step", option="steps")
        vae_settings = vae_config(vae_channels)
        images = collect_images(data, size)
        vae, stats = train_autoencoder(images, steps, seed=seed, progress=progress, config=vae_settings)
        vae_settings = dict(vae_settings, sample_size=max(size), scaling_factor=stats["scaling_factor"])
        stats = {**stats, "images": len(images)}
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(_clean(unet_settings))
    _write_json(copy.deepcopy(unet_settings), out / "unet" / "config.json")
    _write_json(vae_settings, out / "vae" / "config.json")
    _write_json(copy.deepcopy(SCHEDULER_CONFIG), out / "scheduler" / "scheduler_config.json")
    _write_weights(unet, out / "unet" / WEIGHTS)
    _write_weights(vae, out / "vae" / WEIGHTS)
    return stats
