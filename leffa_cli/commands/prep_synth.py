"""``leffa prep synth``: draw a seeded synthetic try-on or pose-transfer dataset with ground-truth flow."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress

from leffa_cli.groups import group


def synth(
    out: Path = typer.Option(..., "-o", "--out", help="Dataset folder (created); samples go to OUT/<split>/."),
    task: str = typer.Option("vton", "--task", help="vton (VITON-HD-like layout) or pose (DeepFashion-like layout)."),
    n: int = typer.Option(200, "--n", help="Number of samples (try-on pairs or pose pairs)."),
    size: str = typer.Option("256x192", "--size", help="Image size HEIGHTxWIDTH."),
    seed: int = typer.Option(0, "--seed", help="Seed; the same seed, split and index always give the same sample."),
    split: str = typer.Option("train", "--split", help="train or test (different samples for the same seed)."),
    unpaired: bool = typer.Option(
        False,
        "--unpaired",
        help="Try-on: also render each person wearing the next "
        "sample's garment (SPLIT_pairs_unpaired.txt, SPLIT/image-unpaired/), the ground "
        "truth `leffa eval --run --unpaired` scores against.",
    ),
    pattern_scale: float = typer.Option(
        1.0,
        "--pattern-scale",
        help="Multiply the period of garment and trouser patterns (2 at 64x48, so a 1/4 autoencoder can carry them).",
    ),
    shading: float = typer.Option(
        0.0,
        "--shading",
        help="Add a colour ramp of this strength (0-1) across each garment, so its patches differ in colour.",
    ),
) -> None:
    """Draw synthetic people wearing detailed garments, with all conditions and the ground-truth correspondence."""
    from leffa.images import parse_size
    from leffa.synth.dataset import generate_dataset
    from leffa.synth.garment import Fabric

    height, width = parse_size(size, min_side=32)
    with Progress(transient=True) as progress:
        bar = progress.add_task(f"{task} {split}", total=n)
        names = generate_dataset(
            task,
            out,
            n,
            (height, width),
            seed=seed,
            split=split,
            progress=lambda: progress.advance(bar),
            unpaired=unpaired,
            fabric=Fabric(pattern_scale, shading),
        )
    extra = " with unpaired ground truth" if unpaired else ""
    Console().print(f"wrote {len(names)} {task} samples{extra} ({height}x{width}, seed {seed}) to {out / split}")


def synth_base(
    data: Path = typer.Option(..., "--data", help="A synthetic dataset folder (from `leffa prep synth`)."),
    out: Path = typer.Option(..., "-o", "--out", help="Base-model folder to write (unet/, vae/, scheduler/)."),
    size: str = typer.Option("64x48", "--size", help="Training image size HEIGHTxWIDTH for the autoencoder."),
    steps: int = typer.Option(400, "--steps", help="Autoencoder optimiser steps (batch 16 half-size crops)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the autoencoder and of the initial UNet weights."),
    unet_channels: str = typer.Option("16,16,32,32", "--unet-channels", help="UNet widths, four multiples of 8."),
    vae_channels: str = typer.Option(
        "8,16,32", "--vae-channels", help="Autoencoder widths per level (latents at 1/2^(levels-1) of the image)."
    ),
    unet_attention: str = typer.Option(
        "1,2,3", "--unet-attention", help="UNet levels with self-attention (1 = full latent resolution)."
    ),
    unet_heads: str = typer.Option("4,4,4,4", "--unet-heads", help="Attention heads per UNet level (four counts)."),
    vae_from: Path | None = typer.Option(
        None, "--vae-from", help="Copy this base folder's trained autoencoder instead of training one."
    ),
) -> None:
    """Write a tiny from-scratch base model: train its autoencoder on the synthetic images, random UNet weights."""
    from leffa.errors import LeffaError
    from leffa.images import parse_size
    from leffa.synth.base import make_base_folder

    def integers(text: str, option: str, example: str) -> list[int]:
        try:
            return [int(part) for part in text.split(",")]
        except ValueError:
            raise LeffaError(f"{option} {text!r}: expected comma-separated integers, e.g. {example}") from None

    def widths(text: str, option: str) -> list[int]:
        values = integers(text, option, "32,32,64,64")
        if any(v < 8 or v % 8 for v in values) or len(values) < 2:
            raise LeffaError(f"{option} {text!r}: give at least two widths, each a multiple of 8")
        return values

    height, width = parse_size(size, min_side=32)
    unet_widths, vae_widths = widths(unet_channels, "--unet-channels"), widths(vae_channels, "--vae-channels")
    levels = integers(unet_attention, "--unet-attention", "2,3")
    heads = integers(unet_heads, "--unet-heads", "1,4,4,4")
    with Progress(transient=True) as progress:
        bar = progress.add_task("autoencoder", total=0 if vae_from else steps)
        stats = make_base_folder(
            out,
            data,
            (height, width),
            steps=steps,
            seed=seed,
            unet_channels=unet_widths,
            vae_channels=vae_widths,
            attention_levels=levels,
            heads=heads,
            vae_from=vae_from,
            progress=lambda step, loss: progress.update(
                bar, completed=step + 1, description=f"autoencoder loss {loss:.4f}"
            ),
        )
    if vae_from:
        Console().print(f"wrote {out}: autoencoder copied from {vae_from}, new UNet configuration and weights")
        return
    Console().print(
        f"wrote {out}: autoencoder trained on {stats['images']} images, reconstruction PSNR {stats['psnr']:.2f} dB, "
        f"latent scaling factor {stats['scaling_factor']}"
    )


def register(app: typer.Typer) -> None:
    prep = group(app, "prep")
    prep.command("synth")(synth)
    prep.command("synth-base")(synth_base)
