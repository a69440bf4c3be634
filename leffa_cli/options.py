"""Options and helpers shared by the generating commands (``tryon``, ``pose``, ``eval --run``): defined once here.

Typer reads options from function signatures, so each command lists them as defaults; the definitions (names, help,
defaults) live here so the commands cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console(stderr=True, highlight=False, soft_wrap=True)

MODEL = typer.Option(
    None,
    "--model",
    "-m",
    help="viton_hd, dress_code, pose_transfer, synth-tiny, a local file or "
    "folder, or a hub repo id (owner/name or owner/name/file.safetensors). Default: the task's "
    "upstream model.",
)
BASE = typer.Option(None, "--base", help="Base-model folder (configs) for a .pth checkpoint that has none beside it.")
OFFLINE = typer.Option(False, "--offline", help="Use only the local hub cache; never contact the hub.")
STEPS = typer.Option(30, "--steps", help="Denoising steps.")
GUIDANCE = typer.Option(2.5, "--guidance", help="Classifier-free guidance scale (1 disables guidance).")
GUIDANCE_MODE = typer.Option(
    "upstream", "--guidance-mode", help="upstream (CFG then rescale by the same scale, as upstream) or plain CFG."
)
SCHEDULER = typer.Option("ddpm", "--scheduler", help="ddpm (upstream), ddim, dpm++, unipc or euler-a.")
ETA = typer.Option(1.0, "--eta", help="Eta for schedulers that take one (DDIM); upstream passes 1.0.")
SEED = typer.Option(42, "--seed", help="Seed of all randomness; the same seed gives the same image.")
DTYPE = typer.Option("auto", "--dtype", help="auto (fp16 on GPU, fp32 on CPU), fp32, fp16 or bf16.")
DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps.")
SIZE = typer.Option(None, "--size", help="Working size HxW (default: the model's, 1024x768 for upstream models).")
CROP = typer.Option(
    True,
    "--crop/--no-crop",
    help="Crop the photo to the working aspect (3:4) and paste the result "
    "back at the original size; --no-crop resizes the whole photo as upstream does.",
)
REFERENCE_ONCE = typer.Option(
    False, "--reference-once", help="Upstream's reference acceleration: reference UNet once, at the middle step."
)
COMPILE = typer.Option(False, "--compile", help="torch.compile the UNets (slow first image, faster after).")
CHANNELS_LAST = typer.Option(False, "--channels-last", help="Channels-last memory format.")
INTERMEDIATES = typer.Option(
    False,
    "--save-intermediates",
    help="Also write the mask, DensePose and the predicted image every k steps into OUT_steps/.",
)
EVERY = typer.Option(5, "--every", help="k for --save-intermediates.")
OFFLOAD = typer.Option(
    "none",
    "--offload",
    help="Low GPU memory: model (one of VAE / reference UNet / generative "
    "UNet on the GPU at a time) or sequential (layer by layer; least memory, slowest).",
)
ATTENTION_SLICE = typer.Option(
    0,
    "--attention-slice",
    help="Attention in slices of N queries (0: off); saves "
    "memory only where PyTorch has no fused attention kernel (e.g. MPS).",
)
MASK_GROW = typer.Option(
    0,
    "--mask-grow",
    metavar="PX",
    help="Grow the mask (given or automatic) by PX pixels "
    "(a disk): when it misses the garment's edges or long sleeves.",
)
MASK_SHRINK = typer.Option(
    0,
    "--mask-shrink",
    metavar="PX",
    help="Shrink the mask by PX pixels (after --mask-grow): when it eats into the background or arms.",
)
GARMENT_LENGTH = typer.Option(
    None,
    "--garment-length",
    metavar="FRACTION",
    help="lower_body and dresses: keep "
    "this fraction (0-1] of the mask's height from its top (0.5: a knee-length skirt "
    "instead of trousers).",
)
SAVE_CONDITIONS = typer.Option(
    None,
    "--save-conditions",
    metavar="DIR",
    help="Also write the mask (after the "
    "corrections) and DensePose used, as DIR/NAME_mask.png and DIR/NAME_densepose.png.",
)
HOST = typer.Option(
    "127.0.0.1", "--host", help="Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface)."
)
BACKEND = typer.Option(
    "torch",
    "--backend",
    help="torch, or onnx: run a `leffa export --onnx` folder (--model DIR) "
    "with onnxruntime (TensorRT/CUDA execution provider when present, else CPU).",
)


def print_notes(notes) -> None:
    for note in notes:
        console.print(f"leffa: note: {note}", markup=False)


def sampler_options(steps, guidance, guidance_mode="upstream", scheduler="ddpm", eta=1.0, reference_once=False):
    """The checked ``SamplerOptions`` (bad values fail here, before any model is loaded)."""
    from leffa.sampler import SamplerOptions

    return SamplerOptions(
        steps=steps,
        guidance=guidance,
        guidance_mode=guidance_mode,
        scheduler=scheduler,
        eta=eta,
        reference_once=reference_once,
    ).check()


def load_pipeline(
    pipeline_class,
    model,
    base,
    offline,
    device,
    dtype,
    size,
    channels_last=False,
    compile=False,
    backend="torch",
    offload="none",
    attention_slice=0,
):
    """``pipeline_class.from_pretrained`` with a spinner, quiet hub retries, and the model's notes printed."""
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()  # its retry warnings would bury our one-line message
    with console.status("loading the ONNX graphs" if backend == "onnx" else "loading the model"):
        pipe = pipeline_class.from_pretrained(
            model,
            device=device,
            dtype=dtype,
            size=size,
            base=base,
            offline=offline,
            backend=backend,
            channels_last=channels_last,
            compile=compile,
            offload=offload,
            attention_slice=attention_slice or None,
        )
    print_notes(pipe.notes)
    return pipe


def pipeline_loader(
    pipeline_class, model, base, offline, device, dtype, size, channels_last, compile, backend, offload, attention_slice
):
    """``load(device_for=None)`` for ``run_single`` / ``run_batch``: loads the pipeline when first needed; a sharded
    run passes ``device_for`` to pick its own GPU."""

    def load(device_for=None):
        chosen = device_for(device) if device_for else device
        return load_pipeline(
            pipeline_class,
            model,
            base,
            offline,
            chosen,
            dtype,
            size,
            channels_last,
            compile,
            backend,
            offload,
            attention_slice,
        )

    return load


def save_conditions(jobs, folder) -> None:
    """Write each job's mask and DensePose into ``folder`` as ``STEM_mask.png`` / ``STEM_densepose.png`` (the
    output's stem), atomically."""
    from leffa.atomic import save_image

    if folder is None:
        return
    for job in jobs:
        stem = job.output.stem
        save_image(job.mask, Path(folder) / f"{stem}_mask.png")
        save_image(job.densepose, Path(folder) / f"{stem}_densepose.png")


def run_single(load, jobs, options, seed, crop, use_repaint, every, conditions_dir=None) -> None:
    """Sample checked ``jobs`` with the pipeline ``load()`` returns, as ``pipe(...)`` would, and print the outputs;
    with ``conditions_dir`` the jobs' masks and DensePose images are written there first."""
    for job in jobs:
        print_notes(job.notes)
    save_conditions(jobs, conditions_dir)
    pipe = load()
    with console.status(f"sampling {options.steps} steps at {pipe.size[0]}x{pipe.size[1]}"):
        pipe.generate(jobs, options, seed=seed, repaint=use_repaint, crop=crop, intermediate_every=every)
    for job in jobs:
        typer.echo(str(job.output))


def run_batch(
    load,
    items,
    label: str,
    make_jobs,
    batch_size: int,
    options,
    seed,
    crop,
    use_repaint,
    every,
    output: Path,
    conditions_dir=None,
) -> None:
    """Generate a batch folder's ``items`` (``DatasetItem``/``PoseItem``), sharded over the processes of ``torchrun``
    / ``accelerate launch`` when launched so (``leffa.shard``).

    Before any model loads: the output folder must be writable and every input is checked from its header; a bad
    pair is reported and skipped, every good one is made, and the command then fails (exit 2) naming the count.
    Outputs already on disk are kept. ``load(device)`` returns the pipeline; ``make_jobs(items)`` reads a group.
    With ``conditions_dir`` each job's mask and DensePose are written there before it is sampled.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from leffa.atomic import ensure_writable_destination
    from leffa.errors import LeffaError
    from leffa.pipeline import batches, input_problem
    from leffa.sampler import UncondFeatureCache
    from leffa.shard import Shard, count_done

    if batch_size < 1:
        raise LeffaError(f"--batch-size: {batch_size} must be at least 1")
    ensure_writable_destination(output, "folder", "-o")
    shard = Shard.current()
    good, problems = [], []
    for item in items:
        problem = input_problem(item)
        (good if problem is None else problems).append(problem or item)
    outputs = [item.output for item in good]
    if shard.is_main:
        print_notes(f"skipped: {problem}" for problem in problems)
        done = count_done(outputs)
        if done:
            print_notes([f"{done} outputs already exist; skipped"])
    # Batches are cut from the whole list, then dealt out: an image is sampled in the same batch whatever the number
    # of processes, so a sharded run gives the same pixels as a single one.
    groups = shard.take(list(batches(good, batch_size)))
    mine = [[item for item in group if not item.output.exists()] for group in groups]
    mine = [group for group in mine if group]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not shard.is_main) as progress:
        task = progress.add_task(
            label if shard.world == 1 else f"{label} ({shard.world} processes)",
            total=len(outputs),
            completed=count_done(outputs),
        )
        if mine:
            pipe = load(shard.device_for)
            cache = UncondFeatureCache()  # as one pipe(..., batch_size=N) call shares it across its batches
            for group in mine:
                jobs = make_jobs(group)
                for job in jobs:
                    print_notes(job.notes)
                save_conditions(jobs, conditions_dir)
                pipe.generate(
                    jobs, options, seed=seed, repaint=use_repaint, crop=crop, cache=cache, intermediate_every=every
                )
                if shard.is_main:
                    progress.update(task, completed=count_done(outputs))
        shard.wait_for(outputs, (lambda count: progress.update(task, completed=count)) if shard.is_main else None)
    if not shard.is_main:
        return
    typer.echo(f"{len(outputs)} images in {output}" if outputs else "nothing to do")
    if problems:
        raise LeffaError(
            f"{len(problems)} of {len(items)} pairs skipped for bad inputs (listed above); "
            "every other output was written"
        )
