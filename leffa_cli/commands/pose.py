"""``leffa pose``: show a person in the pose of another photo (pose transfer; a folder of pairs with ``--batch``)."""

from __future__ import annotations

from pathlib import Path

import typer

from leffa.errors import LeffaError
from leffa_cli.options import (
    ATTENTION_SLICE,
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
    OFFLOAD,
    REFERENCE_ONCE,
    SCHEDULER,
    SEED,
    SIZE,
    STEPS,
    pipeline_loader,
    run_batch,
    run_single,
    sampler_options,
)


def pose(
    person: Path | None = typer.Argument(None, help="Photo of the person to show."),
    target_pose: Path | None = typer.Argument(None, help="Photo of someone in the target pose (sets the output size)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output PNG (with --batch: the output folder)."),
    densepose: Path | None = typer.Option(
        None,
        "--densepose",
        help="DensePose IUV of TARGET_POSE, same size "
        "(channels U, V in 0-255 and part index 0-24; use a lossless PNG).",
    ),
    batch: Path | None = typer.Option(
        None,
        "--batch",
        help="Run a DeepFashion-layout split folder: image/NAME.jpg and densepose/NAME.png (IUV); needs --pairs.",
    ),
    pairs: Path | None = typer.Option(None, "--pairs", help="Pairs file: lines 'person.jpg target.jpg'."),
    batch_size: int = typer.Option(1, "--batch-size", help="Images sampled together in --batch mode."),
    model: str | None = MODEL,
    base: Path | None = BASE,
    offline: bool = OFFLINE,
    steps: int = STEPS,
    guidance: float = GUIDANCE,
    guidance_mode: str = GUIDANCE_MODE,
    scheduler: str = SCHEDULER,
    eta: float = ETA,
    seed: int = SEED,
    dtype: str = DTYPE,
    device: str = DEVICE,
    size: str | None = SIZE,
    crop: bool = CROP,
    reference_once: bool = REFERENCE_ONCE,
    compile: bool = COMPILE,
    channels_last: bool = CHANNELS_LAST,
    save_intermediates: bool = INTERMEDIATES,
    every: int = EVERY,
    backend: str = BACKEND,
    offload: str = OFFLOAD,
    attention_slice: int = ATTENTION_SLICE,
) -> None:
    """Show PERSON in the pose of TARGET_POSE and write the result to OUT."""
    from leffa.images import parse_size
    from leffa.pipeline import output_path, pose_items
    from leffa.pipelines import PosePipeline, prepare_pose
    from leffa.sampler import check_seed

    options = sampler_options(steps, guidance, guidance_mode, scheduler, eta, reference_once)
    check_seed(seed)  # before any model loads
    every = every if save_intermediates else 0
    working = parse_size(size) if size else None
    load = pipeline_loader(
        PosePipeline,
        model,
        base,
        offline,
        device,
        dtype,
        working,
        channels_last,
        compile,
        backend,
        offload,
        attention_slice,
    )
    if batch is not None:
        if pairs is None:
            raise LeffaError("--batch needs --pairs FILE (lines 'person.jpg target.jpg')")
        if person is not None or target_pose is not None:
            raise LeffaError("--batch takes no PERSON/TARGET_POSE arguments")
        items = pose_items(batch, pairs, output)
        make_jobs = lambda group: prepare_pose(  # noqa: E731
            [i.person for i in group],
            [i.target for i in group],
            [i.densepose for i in group],
            [i.output for i in group],
            offline,
        )
        run_batch(load, items, "pose", make_jobs, batch_size, options, seed, crop, False, every, output)
        return
    if person is None or target_pose is None:
        raise LeffaError("give PERSON and TARGET_POSE images (or --batch DIR --pairs FILE)")
    jobs = prepare_pose(person, target_pose, densepose, [output_path(output)], offline)
    run_single(load, jobs, options, seed, crop, False, every)


def register(app: typer.Typer) -> None:
    app.command("pose")(pose)
