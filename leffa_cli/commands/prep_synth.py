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
) -> None:
    """Draw synthetic people wearing detailed garments, with all conditions and the ground-truth correspondence."""
    from leffa.synth import generate_dataset, parse_size

    height, width = parse_size(size)
    with Progress(transient=True) as progress:
        bar = progress.add_task(f"{task} {split}", total=n)
        names = generate_dataset(task, out, n, (height, width), seed=seed, split=split,
                                 progress=lambda: progress.advance(bar))
    Console().print(f"wrote {len(names)} {task} samples ({height}x{width}, seed {seed}) to {out / split}")


def register(app: typer.Typer) -> None:
    group(app, "prep").command("synth")(synth)
