"""``leffa eval``: score predictions (FID, KID, SSIM, LPIPS, PSNR), generate-and-score (--run), attention flow
(EPE), or compare runs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _progress(label: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True
    )
    task = bar.add_task(label, total=None)
    return bar, lambda done, total: bar.update(task, completed=done, total=total)


def _format(value: float) -> str:
    from leffa.metrics.chart import format_value

    return format_value(value)


def _cell(result, metric: str) -> str:
    text = _format(result.metrics.get(metric, float("nan")))
    if metric == "kid" and "kid_std" in result.metrics:
        text += f" ± {_format(result.metrics['kid_std'])}"
    return text


def _results_table(results, title: str) -> Table:
    """One row per run and a column per metric; transposed (a row per metric) when there are many metrics."""
    from leffa.metrics.chart import shared_metrics
    from leffa.metrics.scores import lower_is_better

    metrics = shared_metrics(results)
    arrows = {m: {True: " ↓", False: " ↑"}.get(lower_is_better(m, results[0].mode), "") for m in metrics}
    label = (lambda m: m.upper()) if results[0].mode != "flow" else (lambda m: m)
    table = Table(title=title)
    if len(metrics) > 6:
        table.add_column("metric")
        for result in results:
            table.add_column(f"{result.name or result.mode} (n={result.count})", justify="right")
        for metric in metrics:
            table.add_row(label(metric) + arrows[metric], *(_cell(result, metric) for result in results))
        return table
    table.add_column("run")
    table.add_column("n", justify="right")
    for metric in metrics:
        table.add_column(label(metric) + arrows[metric], justify="right")
    for result in results:
        table.add_row(result.name or result.mode, str(result.count), *(_cell(result, m) for m in metrics))
    return table


def _flow_table(result) -> Table:
    table = Table(title=f"attention-flow end-point error (pixels), t={result.settings['timestep']}, n={result.count}")
    for column, justify in (("layer", "left"), ("1/k", "right"), ("EPE", "right"), ("examples", "right")):
        table.add_column(column, justify=justify)
    for short, entry in result.settings["layers"].items():
        table.add_row(short, str(entry.get("downscale", "")), _format(entry["epe"]), str(entry["samples"]))
    table.add_row("mean", "", _format(result.metrics["mean"]), "", style="bold")
    return table


def _default_output(pred: Path, mode: str) -> Path:
    return pred.parent / f"{pred.name}.{mode}.eval.json"


def _compare(results_files: list[Path], output: Path | None) -> None:
    from leffa.atomic import ensure_writable_destination, save_image
    from leffa.errors import LeffaError
    from leffa.metrics.chart import compare_chart
    from leffa.metrics.scores import read_result

    if not results_files:
        raise LeffaError(
            "--compare: give the result JSON files to compare, e.g. leffa eval --compare a.json b.json -o chart.png"
        )
    if output is not None and output.suffix.lower() != ".png":
        raise LeffaError(f"-o {output}: the comparison chart must be a .png")
    if output is not None:
        ensure_writable_destination(output, "file", "-o")
    results = [read_result(path) for path in results_files]
    console.print(_results_table(results, "comparison"))
    if output is not None:
        save_image(compare_chart(results), output)
        console.print(f"chart: {output}")


def _open(model_spec, base, offline, data, layout, device, dtype, size=None):
    """Load and place a model by name, file, folder or hub id (``leffa.weights.open_model``) for the dataset's task."""
    from leffa.data import detect_layout
    from leffa.weights import open_model

    task = "pose" if (layout if layout != "auto" else detect_layout(data)) == "deepfashion" else "vton"
    with console.status("loading the model"):
        resolved = open_model(
            model_spec, task, device=device or "auto", dtype=dtype, size=size, offline=offline, base=base
        )
    for note in resolved.notes:
        console.print(f"leffa: note: {note}", markup=False)
    return resolved


def _model_name(spec: str) -> str:
    return Path(spec).stem if Path(spec).suffix else spec.replace("/", "-")


def _flow(model_spec, base, offline, data, split, layout, timestep, temperature, seed, layers, limit, device, output):
    import torch

    from leffa.atomic import ensure_writable_destination
    from leffa.errors import LeffaError
    from leffa.flow import check_temperature
    from leffa.metrics.flow import evaluate_flow
    from leffa.metrics.scores import write_result
    from leffa.probe import resolve_layers
    from leffa.sampler import check_seed

    if model_spec is None or data is None:
        raise LeffaError("--flow needs --model CHECKPOINT and --data DATASET_FOLDER")
    check_temperature(temperature)
    check_seed(seed)
    output = output or Path(data) / f"flow-epe.{split}.t{timestep}.{_model_name(model_spec)}.json"
    ensure_writable_destination(output, "file", "-o")
    model = _open(model_spec, base, offline, data, layout, device, "fp32").model  # flows are measured in fp32
    chosen = resolve_layers(layers, model.layer_names)
    bar, progress = _progress("flow")
    with bar, torch.inference_mode():
        result = evaluate_flow(model, data, timestep, temperature, seed, chosen, limit, progress, split, layout)
    result.name = _model_name(model_spec)
    console.print(_flow_table(result))
    write_result(result, output)
    console.print(f"results: {output}")


def _run_out_dir(out_dir, model_spec, split, paired) -> Path:
    """--run's output folder (default eval-runs/MODEL.SPLIT.PAIRING), checked writable before any loading."""
    from leffa.atomic import ensure_writable_destination

    mode = "paired" if paired else "unpaired"
    out_dir = out_dir or Path("eval-runs") / f"{_model_name(model_spec)}.{split}.{mode}"
    return ensure_writable_destination(out_dir, "folder", "--out-dir")


def _run(
    model_spec,
    base,
    offline,
    data,
    split,
    layout,
    paired,
    size,
    sampler,
    seed,
    dtype,
    device,
    batch_size,
    limit,
    out_dir,
    shard,
):
    """Generate the split (resuming; this process's share under torchrun / accelerate launch), and return (pred dir,
    gt dir, run settings) for scoring."""
    import contextlib

    from leffa.errors import LeffaError
    from leffa.integrity import weights_fingerprint
    from leffa.metrics.run import generate_split, run_settings
    from leffa.sampler import check_seed

    if model_spec is None or data is None:
        raise LeffaError("--run needs --model and --data DATASET_FOLDER")
    check_seed(seed)
    mode = "paired" if paired else "unpaired"
    out_dir = _run_out_dir(out_dir, model_spec, split, paired)
    resolved = _open(model_spec, base, offline, data, layout, shard.device_for(device or "auto"), dtype, size)
    model, working = resolved.model, resolved.image_size
    label = f"generating {working[0]}x{working[1]}, {sampler.steps} steps"
    if shard.world > 1:
        label += f", {shard.world} processes"
    settings = run_settings(resolved.source, working, sampler, seed, split, mode, weights_fingerprint(model))
    bar, progress = _progress(label) if shard.is_main else (contextlib.nullcontext(), None)
    with bar:
        pred_dir, gt_dir, made = generate_split(
            model,
            data,
            out_dir,
            working,
            split,
            mode,
            layout,
            sampler,
            seed,
            batch_size,
            limit,
            progress,
            shard,
            settings,
        )
    if shard.is_main:
        console.print(f"{made} images generated into {pred_dir}" + (" by this process" if shard.world > 1 else ""))
    return pred_dir, gt_dir, settings


def eval_command(
    results_files: list[Path] | None = typer.Argument(
        None, help="With --compare: result JSON files.", show_default=False
    ),
    pred: Path | None = typer.Option(None, "--pred", help="Folder of predicted images."),
    gt: Path | None = typer.Option(None, "--gt", help="Folder of ground-truth (paired) or real (unpaired) images."),
    paired: bool = typer.Option(
        True,
        "--paired/--unpaired",
        help="Paired: match by name, all five metrics; unpaired: FID, "
        "KID (--run on `leffa prep synth --unpaired` data: scored pixel for pixel against the "
        "person really wearing the garment).",
    ),
    mask: Path | None = typer.Option(
        None,
        "--mask",
        help="Paired: folder of masks NAME.png (255 = regenerated region) "
        "for psnr_mask and psnr_outside (--run writes OUT/mask).",
    ),
    region: Path | None = typer.Option(
        None,
        "--region",
        help="Paired: folder of garment regions NAME.png for delta_e (--run on synthetic data writes OUT/region).",
    ),
    metrics: str | None = typer.Option(
        None, "--metrics", help="Comma-separated subset, e.g. ssim,psnr (default: all for the mode)."
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Result JSON (default beside --pred), or the chart PNG with --compare."
    ),
    name: str | None = typer.Option(None, "--name", help="Run name stored in the JSON and shown in comparisons."),
    inception: Path | None = typer.Option(
        None,
        "--inception",
        help="Local pt_inception-2015-12-05-6726825d.pth (default: pytorch-fid's release, cached in $TORCH_HOME/hub/checkpoints).",
    ),
    lpips: Path | None = typer.Option(
        None,
        "--lpips",
        help="Local squeezenet1_1-b8a52dc0.pth, or a folder with it (and optionally squeeze.pth); default: torchvision's file, cached like --inception, and torchmetrics' packaged linear layers.",
    ),
    offline: bool = typer.Option(
        False,
        "--offline",
        help="Never download: metric weights from the caches or local files, models from the hub cache.",
    ),
    ignore_extra_gt: bool = typer.Option(
        False, "--ignore-extra-gt", help="Paired: allow ground truth without a prediction (score a subset)."
    ),
    batch_size: int = typer.Option(16, "--batch-size", help="Images per batch."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, mps (default: the best available)."),
    compare: bool = typer.Option(
        False, "--compare", help="Compare result JSONs: table, and a bar chart with -o chart.png."
    ),
    flow: bool = typer.Option(False, "--flow", help="Attention-flow end-point error per layer on a synthetic dataset."),
    run: bool = typer.Option(
        False,
        "--run",
        help="Generate --data's split with --model, then score it (paired: "
        "each person with their own garment; --unpaired: the pairs file's garments).",
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help="--run/--flow: model (viton_hd, pose_transfer, synth-tiny, a file or folder, or a hub repo id).",
    ),
    base: Path | None = typer.Option(
        None, "--base", help="--run/--flow: base-model folder for an upstream checkpoint."
    ),
    data: Path | None = typer.Option(
        None, "--data", help="--run/--flow: dataset folder in a training layout (--flow: its split has gt-flow/)."
    ),
    split: str = typer.Option("test", "--split", help="--run/--flow: dataset split."),
    layout: str = typer.Option(
        "auto", "--layout", help="--run/--flow: dataset layout (auto, vitonhd, dresscode, deepfashion)."
    ),
    out_dir: Path | None = typer.Option(
        None, "--out-dir", help="--run: where pred/ and gt/ go (default eval-runs/MODEL.SPLIT.PAIRING)."
    ),
    size: str | None = typer.Option(None, "--size", help="--run: working size HxW (default: the model's)."),
    steps: int = typer.Option(30, "--steps", help="--run: denoising steps."),
    guidance: float = typer.Option(2.5, "--guidance", help="--run: classifier-free guidance scale."),
    scheduler: str = typer.Option("ddpm", "--scheduler", help="--run: ddpm, ddim, dpm++, unipc or euler-a."),
    dtype: str = typer.Option("auto", "--dtype", help="--run: auto (fp16 on GPU, fp32 on CPU), fp32, fp16, bf16."),
    timestep: int = typer.Option(250, "--t", help="--flow: diffusion timestep of the forward pass."),
    temperature: float = typer.Option(2.0, "--temperature", help="--flow: attention softmax temperature tau."),
    layers: str = typer.Option(
        "all", "--layers", help="--flow: 'all' or comma-separated layer names (e.g. up1.a0.b0)."
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="--flow: noise seed (default 0); --run: sampling seed (default 42, upstream's)."
    ),
    limit: int | None = typer.Option(None, "--limit", help="--run/--flow: use only the first N examples."),
) -> None:
    """Score predicted images against ground truth (FID, KID, SSIM, LPIPS, PSNR as the try-on papers report them);
    generate a dataset split and score it (--run); measure attention-flow end-point error on synthetic data
    (--flow); or compare result files (--compare)."""
    from leffa.atomic import ensure_writable_destination
    from leffa.environment import best_device
    from leffa.errors import LeffaError

    if sum([compare, flow, run]) > 1:
        raise LeffaError("choose one of --compare, --flow and --run")
    if compare:
        return _compare(list(results_files or []), output)
    if results_files:
        raise LeffaError(f"{results_files[0]}: result files are only read with --compare")
    if flow:
        return _flow(
            model,
            base,
            offline,
            data,
            split,
            layout,
            timestep,
            temperature,
            0 if seed is None else seed,
            layers,
            limit,
            device,
            output,
        )

    from leffa.metrics.masked import MASK_METRICS
    from leffa.metrics.run import unpaired_truth
    from leffa.metrics.scores import (
        PAIRED_METRICS,
        UNPAIRED_METRICS,
        check_metrics,
        evaluate_paired,
        evaluate_unpaired,
        list_images,
        load_metric_networks,
        match_pairs,
        write_result,
    )

    if run and (pred is not None or gt is not None):
        raise LeffaError("--run writes its own predictions; give --data (and --out-dir), not --pred/--gt")
    if not run and (pred is None or gt is None):
        raise LeffaError("give --pred DIR and --gt DIR (or --run / --compare / --flow)")
    if batch_size < 1:
        raise LeffaError(f"--batch-size: must be at least 1, got {batch_size}")
    if run and (mask is not None or region is not None):
        raise LeffaError("--run writes its own masks (OUT/mask, OUT/region); --mask/--region go with --pred/--gt")
    # Unpaired try-on on synthetic data has pixel ground truth: score it like a paired run.
    truth = run and not paired and unpaired_truth(data, split)
    score_paired = paired or truth
    if (mask is not None or region is not None) and not score_paired:
        raise LeffaError("--mask/--region: only for paired scoring (unpaired sets are compared as distributions)")
    if run:
        mask_metrics = ("psnr_mask", "psnr_outside") + (("delta_e",) if data is not None else ())
    else:
        mask_metrics = (("psnr_mask", "psnr_outside") if mask else ()) + (("delta_e",) if region else ())
    default = (
        (PAIRED_METRICS + tuple(m for m in MASK_METRICS if m in mask_metrics)) if score_paired else UNPAIRED_METRICS
    )
    chosen = check_metrics(
        [m.strip().lower() for m in metrics.split(",") if m.strip()] if metrics else default, score_paired
    )
    device = device or best_device()
    settings = {}
    if run and model is not None:
        _run_out_dir(out_dir, model, split, paired)  # before the metric weights and any sampling
    if output is not None:
        ensure_writable_destination(output, "file", "-o")
    elif not run:
        ensure_writable_destination(_default_output(pred, "paired" if paired else "unpaired"), "file", "-o")
    if run:
        from leffa.shard import Shard
        from leffa_cli.options import sampler_options

        shard = Shard.current()  # under torchrun / accelerate launch: this process's share of the split
        # Metric weights first: a missing file should fail before minutes of sampling (only the main one scores).
        if shard.is_main:
            networks = load_metric_networks(chosen, inception, lpips, offline, device)
        sampler = sampler_options(steps, guidance, "upstream", scheduler, 1.0, False)
        pred, gt, settings = _run(
            model,
            base,
            offline,
            data,
            split,
            layout,
            paired,
            size,
            sampler,
            42 if seed is None else seed,
            dtype,
            device,
            batch_size,
            limit,
            out_dir,
            shard,
        )
        if not shard.is_main:
            return None
        output = output or pred.parent / "eval.json"
        name = name or pred.parent.name
    if run:
        mask = pred.parent / "mask"
        region = pred.parent / "region" if (pred.parent / "region").is_dir() else None
        if region is None:
            chosen = tuple(m for m in chosen if m != "delta_e" or metrics)  # not synthetic: no garment regions
    # Check the folders before fetching any weights, so a typo fails at once.
    masks = None
    if score_paired:
        pairs = match_pairs(pred, gt, allow_extra_gt=ignore_extra_gt)
        if mask is not None or region is not None:
            masks = [
                (
                    mask / f"{p.stem}.png" if mask is not None else None,
                    region / f"{p.stem}.png" if region is not None else None,
                )
                for p, _ in pairs
            ]
    else:
        preds = list(list_images(pred, "prediction folder").values())
        reals = list(list_images(gt, "ground-truth folder").values())
    if not run:
        networks = load_metric_networks(chosen, inception, lpips, offline, device)
    bar, progress = _progress("scoring")
    with bar:
        if score_paired:
            result = evaluate_paired(pairs, networks, chosen, batch_size, progress, device, masks)
            if truth:
                result.mode = "unpaired-gt"
        else:
            result = evaluate_unpaired(preds, reals, networks, chosen, batch_size, progress)
    result.name = name or pred.name
    result.settings.update(settings)
    console.print(_results_table([result], f"{result.mode} evaluation of {pred}"))
    output = output or _default_output(pred, result.mode)
    write_result(result, output)
    console.print(f"results: {output}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
