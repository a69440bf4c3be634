"""``leffa tryon``: dress a person in a garment (one pair, or a VITON-HD-layout folder with ``--batch``)."""

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
    GARMENT_LENGTH,
    GUIDANCE,
    GUIDANCE_MODE,
    INTERMEDIATES,
    MASK_GROW,
    MASK_SHRINK,
    MODEL,
    OFFLINE,
    OFFLOAD,
    REFERENCE_ONCE,
    SAVE_CONDITIONS,
    SCHEDULER,
    SEED,
    SIZE,
    STEPS,
    pipeline_loader,
    run_batch,
    run_single,
    sampler_options,
)


def tryon(
    person: Path | None = typer.Argument(None, help="Person photo."),
    garment: Path | None = typer.Argument(None, help="Garment image."),
    output: Path = typer.Option(..., "-o", "--output", help="Output PNG (with --batch: the output folder)."),
    mask: Path | None = typer.Option(
        None, "--mask", help="Garment mask, same size as the photo (white = region to regenerate)."
    ),
    densepose: Path | None = typer.Option(None, "--densepose", help="DensePose rendering, same size as the photo."),
    garment_type: str = typer.Option("upper_body", "--garment-type", help="upper_body, lower_body or dresses."),
    mask_style: str = typer.Option(
        "upstream",
        "--mask-style",
        help="Automatic mask (no --mask): upstream (the authors' rules, default) or tight (hugs the garment).",
    ),
    mask_grow: int = MASK_GROW,
    mask_shrink: int = MASK_SHRINK,
    garment_length: float | None = GARMENT_LENGTH,
    save_conditions: Path | None = SAVE_CONDITIONS,
    repaint: bool = typer.Option(False, "--repaint", help="Keep the original pixels outside a feathered mask."),
    batch: Path | None = typer.Option(None, "--batch", help="Run a VITON-HD-layout folder (needs --pairs)."),
    pairs: Path | None = typer.Option(None, "--pairs", help="Pairs file: lines 'person.jpg cloth.jpg'."),
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
    """Dress PERSON in GARMENT and write the result to OUT (a PNG at the photo's size)."""
    from leffa.atomic import ensure_writable_destination
    from leffa.images import parse_size
    from leffa.mask_edit import MaskEdit
    from leffa.pipeline import output_path, viton_hd_items
    from leffa.pipelines import TryOnPipeline, conditions_style, prepare_tryon
    from leffa.sampler import check_seed

    options = sampler_options(steps, guidance, guidance_mode, scheduler, eta, reference_once)
    check_seed(seed)  # before any model loads
    every = every if save_intermediates else 0
    edit = MaskEdit(mask_grow, mask_shrink, garment_length).check(garment_type)
    if save_conditions is not None:
        ensure_writable_destination(save_conditions, "folder", "--save-conditions")
    working = parse_size(size) if size else None
    load = pipeline_loader(
        TryOnPipeline,
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
            raise LeffaError("--batch needs --pairs FILE (lines 'person.jpg cloth.jpg')")
        if person is not None or garment is not None:
            raise LeffaError("--batch takes no PERSON/GARMENT arguments")
        items = viton_hd_items(batch, pairs, output)
        style = conditions_style(model)
        make_jobs = lambda group: prepare_tryon(  # noqa: E731
            [i.person for i in group],
            [i.garment for i in group],
            [i.mask for i in group],
            [i.densepose for i in group],
            garment_type,
            [i.output for i in group],
            offline,
            mask_style,
            style,
            edit,
        )
        run_batch(
            load, items, "try-on", make_jobs, batch_size, options, seed, crop, repaint, every, output, save_conditions
        )
        return
    if person is None or garment is None:
        raise LeffaError("give PERSON and GARMENT images (or --batch DIR --pairs FILE)")
    jobs = prepare_tryon(
        person,
        garment,
        mask,
        densepose,
        garment_type,
        [output_path(output)],
        offline,
        mask_style,
        conditions_style(model),
        edit,
    )
    run_single(load, jobs, options, seed, crop, repaint, every, save_conditions)


def register(app: typer.Typer) -> None:
    app.command("tryon")(tryon)
