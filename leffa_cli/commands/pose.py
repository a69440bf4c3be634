"""``leffa pose``: show a person in the pose of another photo (pose transfer)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from leffa_cli.options import (
    BACKEND,
    BASE,
    CHANNELS_LAST,
    COMPILE,
    CROP,
    DEVICE,
    DTYPE,
    ETA,
    EVERY,
    GUIDANCE,
    GUIDANCE_MODE,
    INTERMEDIATES,
    MODEL,
    OFFLINE,
    REFERENCE_ONCE,
    SCHEDULER,
    SEED,
    SIZE,
    STEPS,
    load_pipeline,
    run_single,
    sampler_options,
)


def pose(
    person: Path = typer.Argument(..., help="Photo of the person to show."),
    target_pose: Path = typer.Argument(..., help="Photo of someone in the target pose (sets the output size)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output PNG."),
    densepose: Optional[Path] = typer.Option(None, "--densepose", help="DensePose IUV of TARGET_POSE, same size "
                                             "(channels U, V in 0-255 and part index 0-24; use a lossless PNG)."),
    model: Optional[str] = MODEL,
    base: Optional[Path] = BASE,
    offline: bool = OFFLINE,
    steps: int = STEPS,
    guidance: float = GUIDANCE,
    guidance_mode: str = GUIDANCE_MODE,
    scheduler: str = SCHEDULER,
    eta: float = ETA,
    seed: int = SEED,
    dtype: str = DTYPE,
    device: str = DEVICE,
    size: Optional[str] = SIZE,
    crop: bool = CROP,
    reference_once: bool = REFERENCE_ONCE,
    compile: bool = COMPILE,
    channels_last: bool = CHANNELS_LAST,
    save_intermediates: bool = INTERMEDIATES,
    every: int = EVERY,
    backend: str = BACKEND,
) -> None:
    """Show PERSON in the pose of TARGET_POSE and write the result to OUT."""
    from leffa.images import parse_size
    from leffa.sampler import check_seed
    from leffa.pipeline import output_path
    from leffa.pipelines import PosePipeline, prepare_pose

    options = sampler_options(steps, guidance, guidance_mode, scheduler, eta, reference_once)
    check_seed(seed)  # before any model loads
    working = parse_size(size) if size else None
    jobs = prepare_pose(person, target_pose, densepose, [output_path(output)], offline)
    load = lambda: load_pipeline(PosePipeline, model, base, offline, device, dtype, working,  # noqa: E731
                                 channels_last, compile, backend)
    run_single(load, jobs, options, seed, crop, False, every if save_intermediates else 0)


def register(app: typer.Typer) -> None:
    app.command("pose")(pose)
