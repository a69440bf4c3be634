"""``leffa tryon``: dress a person in a garment (one pair, or a VITON-HD-layout folder with ``--batch``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from leffa.errors import LeffaError

console = Console(stderr=True, highlight=False, soft_wrap=True)

# Options shared with ``leffa pose`` (Typer reads them from the function signatures).
MODEL = typer.Option(None, "--model", "-m", help="viton_hd, dress_code, pose_transfer, synth-tiny, a local file or "
                     "folder, or a hub repo id (owner/name or owner/name/file.safetensors). Default: the task's upstream model.")
BASE = typer.Option(None, "--base", help="Base-model folder (configs) for a .pth checkpoint that has none beside it.")
OFFLINE = typer.Option(False, "--offline", help="Use only the local hub cache; never contact the hub.")
STEPS = typer.Option(30, "--steps", help="Denoising steps.")
GUIDANCE = typer.Option(2.5, "--guidance", help="Classifier-free guidance scale (1 disables guidance).")
GUIDANCE_MODE = typer.Option("upstream", "--guidance-mode",
                             help="upstream (CFG then rescale by the same scale, as upstream) or plain CFG.")
SCHEDULER = typer.Option("ddpm", "--scheduler", help="ddpm (upstream), ddim, dpm++, unipc or euler-a.")
ETA = typer.Option(1.0, "--eta", help="Eta for schedulers that take one (DDIM); upstream passes 1.0.")
SEED = typer.Option(42, "--seed", help="Seed of all randomness; the same seed gives the same image.")
DTYPE = typer.Option("auto", "--dtype", help="auto (fp16 on GPU, fp32 on CPU), fp32, fp16 or bf16.")
DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps.")
SIZE = typer.Option(None, "--size", help="Working size HxW (default: the model's, 1024x768 for upstream models).")
CROP = typer.Option(True, "--crop/--no-crop", help="Crop the photo to the working aspect (3:4) and paste the result "
                    "back at the original size; --no-crop resizes the whole photo as upstream does.")
REFERENCE_ONCE = typer.Option(False, "--reference-once",
                              help="Upstream's reference acceleration: reference UNet once, at the middle step.")
COMPILE = typer.Option(False, "--compile", help="torch.compile the UNets (slow first image, faster after).")
CHANNELS_LAST = typer.Option(False, "--channels-last", help="Channels-last memory format.")
INTERMEDIATES = typer.Option(False, "--save-intermediates",
                             help="Also write the mask, DensePose and the predicted image every k steps "
                                  "into OUT_steps/.")
EVERY = typer.Option(5, "--every", help="k for --save-intermediates.")
BACKEND = typer.Option("torch", "--backend", help="torch, or onnx: run a `leffa export --onnx` folder (--model DIR) "
                       "with onnxruntime (TensorRT/CUDA execution provider when present, else CPU).")


def print_notes(notes) -> None:
    for note in notes:
        console.print(f"leffa: note: {note}", markup=False)


def sampler_options(steps, guidance, guidance_mode, scheduler, eta, reference_once):
    from leffa.sampler import SamplerOptions

    return SamplerOptions(steps=steps, guidance=guidance, guidance_mode=guidance_mode, scheduler=scheduler,
                          eta=eta, reference_once=reference_once).check()


def load_model(model, base, offline, task, device, dtype, size, channels_last, compile, backend="torch"):
    """Resolve, load and place the model; return it with the working size."""
    if backend == "onnx":
        return load_onnx_model(model, size)
    if backend != "torch":
        raise LeffaError(f"--backend {backend!r}: choose torch or onnx")
    from leffa.pipeline import check_size, parse_size
    from leffa.sampler import place_model, resolve_device, resolve_dtype
    from leffa.weights import UPSTREAM_SIZE, resolve_model

    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()  # its retry warnings would bury our one-line message
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    working = parse_size(size) if size else None
    with console.status("loading the model"):
        resolved = resolve_model(model, task=task, offline=offline, base=base)
    print_notes(resolved.notes)
    if working is None:
        working = resolved.image_size
        if working is None:
            working = UPSTREAM_SIZE
            print_notes([f"{resolved.source}: no trained size recorded; working at 1024x768 (see --size)"])
    check_size(working, resolved.model.latent_downscale)
    return place_model(resolved.model, torch_device, torch_dtype, channels_last, compile), working


def load_onnx_model(model, size):
    """An ONNX export folder run by onnxruntime; device and dtype were fixed at export time."""
    from leffa.export.backend import OnnxLeffaModel
    from leffa.pipeline import check_size, parse_size
    from leffa.weights import UPSTREAM_SIZE

    if model is None:
        raise LeffaError("--backend onnx needs --model EXPORT_DIR (a folder written by `leffa export --onnx`)")
    with console.status("loading the ONNX graphs"):
        onnx_model = OnnxLeffaModel(model)
    working = parse_size(size) if size else onnx_model.image_size
    if working is None:
        working = UPSTREAM_SIZE
        print_notes([f"{model}: no size recorded in the export; working at 1024x768 (see --size)"])
    check_size(working, onnx_model.latent_downscale)
    return onnx_model, onnx_model.check_size(working)


def tryon(
    person: Optional[Path] = typer.Argument(None, help="Person photo."),
    garment: Optional[Path] = typer.Argument(None, help="Garment image."),
    output: Path = typer.Option(..., "-o", "--output", help="Output PNG (with --batch: the output folder)."),
    mask: Optional[Path] = typer.Option(None, "--mask", help="Garment mask, same size as the photo (white = "
                                        "region to regenerate)."),
    densepose: Optional[Path] = typer.Option(None, "--densepose", help="DensePose rendering, same size as the photo."),
    garment_type: str = typer.Option("upper_body", "--garment-type", help="upper_body, lower_body or dresses."),
    mask_style: str = typer.Option("upstream", "--mask-style", help="Automatic mask (no --mask): upstream (the "
                                   "authors' rules, default) or tight (hugs the garment)."),
    repaint: bool = typer.Option(False, "--repaint", help="Keep the original pixels outside a feathered mask."),
    batch: Optional[Path] = typer.Option(None, "--batch", help="Run a VITON-HD-layout folder (needs --pairs)."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="Pairs file: lines 'person.jpg cloth.jpg'."),
    batch_size: int = typer.Option(1, "--batch-size", help="Images sampled together in --batch mode."),
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
    """Dress PERSON in GARMENT and write the result to OUT (a PNG at the photo's size)."""
    from leffa.pipeline import output_path, tryon_job, viton_hd_items

    options = sampler_options(steps, guidance, guidance_mode, scheduler, eta, reference_once)
    every = every if save_intermediates else 0
    if batch is not None:
        if pairs is None:
            raise LeffaError("--batch needs --pairs FILE (lines 'person.jpg cloth.jpg')")
        if person is not None or garment is not None:
            raise LeffaError("--batch takes no PERSON/GARMENT arguments")
        if batch_size < 1:
            raise LeffaError(f"--batch-size: {batch_size} must be at least 1")
        items, skipped = viton_hd_items(batch, pairs, output)
        run_batch(items, skipped, garment_type, mask_style, repaint, batch_size, options, seed, crop, every,
                  (model, base, offline, "vton", device, dtype, size, channels_last, compile, backend))
        return
    if person is None or garment is None:
        raise LeffaError("give PERSON and GARMENT images (or --batch DIR --pairs FILE)")
    out = output_path(output)
    job = tryon_job(person, garment, out, mask=mask, densepose=densepose, garment_type=garment_type, offline=offline,
                    mask_style=mask_style, style=conditions_style(model))
    run_single(job, options, seed, crop, repaint, every,
               (model, base, offline, "vton", device, dtype, size, channels_last, compile, backend))


def conditions_style(model) -> str:
    """Which released model the automatic conditions are made for: ``dc`` for ``--model dress_code``, else ``hd``."""
    return "dc" if model == "dress_code" else "hd"


def run_single(job, options, seed, crop, use_repaint, every, model_args) -> None:
    from leffa.pipeline import run_jobs

    print_notes(job.notes)
    model, working = load_model(*model_args)
    with console.status(f"sampling {options.steps} steps at {working[0]}x{working[1]}"):
        run_jobs(model, [job], working, options, seed=seed, crop=crop, use_repaint=use_repaint,
                 intermediate_every=every)
    typer.echo(str(job.output))


def run_batch(
    items, skipped, garment_type, mask_style, use_repaint, batch_size, options, seed, crop, every, model_args
) -> None:
    from leffa.pipeline import batches, run_jobs, tryon_job
    from leffa.sampler import UncondFeatureCache

    if skipped:
        print_notes([f"{skipped} outputs already exist; skipped"])
    if not items:
        typer.echo("nothing to do")
        return
    model, working = load_model(*model_args)
    cache = UncondFeatureCache()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("try-on", total=len(items))
        offline = model_args[2]  # model_args = (model, base, offline, task, ...)
        for group in batches(items, batch_size):
            style = conditions_style(model_args[0])
            jobs = [tryon_job(i.person, i.garment, i.output, i.mask, i.densepose, garment_type, offline, mask_style,
                              style) for i in group]  # fmt: skip
            for job in jobs:
                print_notes(job.notes)
            run_jobs(model, jobs, working, options, seed=seed, crop=crop, use_repaint=use_repaint, cache=cache,
                     intermediate_every=every)
            progress.advance(task, len(group))
    typer.echo(f"{len(items)} images written to {items[0].output.parent}")


def register(app: typer.Typer) -> None:
    app.command("tryon")(tryon)
