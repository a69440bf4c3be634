"""``leffa viz-flow``: see where each generative self-attention layer looks in the reference."""

from __future__ import annotations

from pathlib import Path

import typer


def viz_flow(
    person: Path = typer.Argument(..., help="Person image (the target whose latent is noised to --t)."),
    garment: Path = typer.Argument(..., help="Garment image (the reference)."),
    model: str = typer.Option(
        ...,
        "--model",
        "-m",
        help="viton_hd, dress_code, pose_transfer, synth-tiny, a local file or folder (our .safetensors, or an "
        "upstream .pth with --base), or a hub repository owner/name.",
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Grid PNG to write."),
    base: Path | None = typer.Option(None, "--base", help="Base-model folder for an upstream .pth checkpoint."),
    task: str = typer.Option("vton", "--task", help="vton or pose: which upstream model a repository id means."),
    offline: bool = typer.Option(False, "--offline", help="Use only the local hub cache; never contact the hub."),
    mask: Path | None = typer.Option(None, "--mask", help="Garment mask (white = regenerate); default all."),
    densepose: Path | None = typer.Option(None, "--densepose", help="DensePose rendering; default black."),
    timestep: int = typer.Option(250, "--t", help="Diffusion timestep of the forward pass (0..999)."),
    layers: str = typer.Option(
        "all", "--layers", help="'all' or comma-separated layer names (full or e.g. up1.a0.b0)."
    ),
    target: Path | None = typer.Option(None, "--target", help="Image to compare each warped reference with."),
    points: list[str] = typer.Option(
        [], "--points", help='Target pixels x,y for attention heatmaps; repeat, or quote several: "40,60 10,20".'
    ),
    gt_flow: Path | None = typer.Option(None, "--gt-flow", help="Ground-truth flow .npy (H, W, 2), NaN = none."),
    html: Path | None = typer.Option(None, "--html", help="Also write a self-contained HTML page to flip layers."),
    size: str | None = typer.Option(
        None, "--size", help="HxW; default the size the model was trained at, else 1024x768."
    ),
    wheel_radius: float | None = typer.Option(
        None,
        "--wheel-radius",
        help="Colour-wheel radius in pixels (default: largest GT, else largest shown, displacement).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise added to the person latent."),
    temperature: float = typer.Option(2.0, "--temperature", help="Softmax temperature tau of the flow (Leffa: 2)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    dtype: str = typer.Option(
        "auto", "--dtype", help="auto (fp16 on GPU, fp32 on CPU), fp32, fp16 or bf16; flows use fp32."
    ),
) -> None:
    """One forward pass at timestep t; per attention layer the flow (colour wheel), the warped reference, the error
    against --target and attention heatmaps for --points, as one labelled PNG grid (and optional HTML page)."""
    from leffa.atomic import atomic_path, save_image
    from leffa.errors import LeffaError
    from leffa.images import parse_size
    from leffa.probe import (
        load_densepose,
        load_gt_flow,
        load_image,
        load_mask,
        parse_points,
        probe_flows,
        resolve_layers,
    )
    from leffa.runtime import resolve_device, resolve_dtype
    from leffa.viz.render import compose_grid, default_tile_height, flow_page, flow_rows
    from leffa.weights import open_model

    for path, option in ((output, "-o"), (html, "--html")):
        if path is not None and path.suffix.lower() != (".png" if option == "-o" else ".html"):
            raise LeffaError(f"{option} {path}: must end in {'.png' if option == '-o' else '.html'}")
    if task not in ("vton", "pose"):
        raise LeffaError(f"--task {task!r}: choose vton or pose")
    if temperature <= 0:
        raise LeffaError(f"--temperature {temperature}: must be positive")
    if wheel_radius is not None and wheel_radius <= 0:
        raise LeffaError(f"--wheel-radius {wheel_radius}: must be positive")
    resolve_dtype(dtype, resolve_device(device))  # fail on a bad --device/--dtype before loading a model
    requested_size = parse_size(size) if size else None
    if requested_size is not None:
        parse_points(points, requested_size)  # fail on bad points before loading a model

    resolved = open_model(model, task, device=device, dtype=dtype, size=requested_size, offline=offline, base=base)
    for note in resolved.notes:
        typer.echo(f"note: {note}", err=True)
    leffa_model, image_size = resolved.model, resolved.image_size
    chosen_points = parse_points(points, image_size)
    chosen_layers = resolve_layers(layers, leffa_model.layer_names)
    person_image = load_image(person, image_size, "PERSON")
    garment_image = load_image(garment, image_size, "GARMENT")
    mask_image = load_mask(mask, image_size) if mask else None
    densepose_image = load_densepose(densepose, image_size, "iuv" if task == "pose" else "rgb") if densepose else None
    target_image = load_image(target, image_size, "--target") if target else None
    gt = load_gt_flow(gt_flow, image_size) if gt_flow else None

    probe = probe_flows(
        leffa_model,
        person_image,
        garment_image,
        mask=mask_image,
        densepose=densepose_image,
        timestep=timestep,
        layers=chosen_layers,
        points=chosen_points,
        seed=seed,
        temperature=temperature,
    )
    rows = flow_rows(
        garment_image,
        probe.flows,
        target=target_image,
        mask=mask_image,
        gt_flow=gt,
        points=chosen_points,
        attention=probe.attention,
        radius=wheel_radius,
    )
    tile_height = default_tile_height(image_size[0])
    grid = compose_grid([rows], tile_height)
    page = None
    if html is not None:
        note = f"model {resolved.source}, t = {timestep}, seed {seed}, tau = {temperature}, "
        note += f"{image_size[0]}x{image_size[1]}"
        page = flow_page(rows, title=f"Attention flow: {person.name}", note=note, tile_height=tile_height)
    save_image(grid, output)
    if page is not None:
        with atomic_path(html) as temp:
            temp.write_text(page, encoding="utf-8")
    typer.echo(
        f"wrote {output} ({len(probe.flows)} layers, {grid.width}x{grid.height})" + (f" and {html}" if html else "")
    )


def register(app: typer.Typer) -> None:
    app.command("viz-flow")(viz_flow)
