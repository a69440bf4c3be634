"""Cost of the Leffa loss in a training step: diffusion loss alone vs + fused Leffa loss vs + explicit n x n Leffa loss.

One training step = VAE encoding (frozen), reference + generative UNet forward, losses, backward, AdamW step.
Each variant runs in its own child process (so peak memory is that variant's alone), one after another in one
invocation, and the script prints the ratios side by side.

    python benchmarks/leffa_loss.py                 # CPU: tiny model; GPU (if CUDA): also SD1.5 size at 1024x768
    python benchmarks/leffa_loss.py --device cpu --size 256x192 --steps 5

Time: median wall time per step on GPU; on CPU the process's CPU time per step (robust on a shared machine).
Peak memory: ``torch.cuda.max_memory_allocated`` on GPU; on CPU the growth of the process's peak RSS during the
steps (``ru_maxrss`` minus the RSS before the first step).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from leffa.images import parse_size

ROOT = Path(__file__).resolve().parents[1]
TINY_BASE = ROOT / "tests" / "fixtures" / "upstream_parity" / "stable-diffusion-inpainting"
FULL_BASE = Path(os.environ.get("LEFFA_FULL_SIZE_CONFIGS", "/work/shared/fixtures/full_size_configs")) / (
    "stable-diffusion-inpainting"
)
VARIANTS = ("diffusion", "fused", "explicit")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_variant(
    variant: str,
    base: Path,
    size: tuple[int, int],
    batch: int,
    steps: int,
    device: str,
    precision: str,
    checkpointing: bool,
) -> dict:
    """Time ``steps`` training steps (after one warm-up) of one variant; returns seconds/step and peak bytes."""
    import torch

    sys.path.insert(0, str(ROOT))
    from diffusers import DDPMScheduler

    from leffa.loss import LeffaLossSettings, select_layers
    from leffa.model import LeffaModel
    from leffa.train.loop import (
        TrainingForward,
        compute_losses,
        freeze_unreachable_reference_parameters,
        prepare_inputs,
        release_features,
    )

    torch.manual_seed(0)
    with torch.device(device):  # random init on the device itself: seconds instead of minutes at full size
        model = LeffaModel.from_base_folder(base)
    freeze_unreachable_reference_parameters(model)
    model.vae.requires_grad_(False)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": torch.float32}[precision]
    model.vae.to(dtype)
    if checkpointing:
        model.generative_unet.enable_gradient_checkpointing()
        model.reference_unet.enable_gradient_checkpointing()
    model.train()
    settings = None if variant == "diffusion" else LeffaLossSettings(timestep_threshold=1000)  # every sample counts
    layers = select_layers(model.layer_downscale()) if settings else None
    forward = TrainingForward(model, layers)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    scheduler = DDPMScheduler.from_config(model.config.scheduler)
    generator = torch.Generator(device=device).manual_seed(0)
    height, width = size
    images = {
        "image": torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(1)) * 2 - 1,
        "reference": torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(2)) * 2 - 1,
        "densepose": torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(3)) * 2 - 1,
        "mask": torch.ones(batch, 1, height, width),
    }
    images = {key: value.to(device) for key, value in images.items()}
    cuda = device.startswith("cuda")

    def step():
        inputs = prepare_inputs(model, scheduler, images, generator, dropout=0.0)
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=precision != "no"):
            total, *_ = compute_losses(forward, inputs, images, settings, fused=variant != "explicit")
        total.backward()
        release_features(model)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()

    rss_before = _rss_bytes()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    try:
        step()  # warm-up (also allocates the optimizer state, the same for all variants)
        times, cpu_times = [], []
        for _ in range(steps):
            start, cpu_start = time.perf_counter(), time.process_time()
            step()
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    except torch.OutOfMemoryError:
        return {"variant": variant, "seconds": None, "peak_bytes": None, "error": "out of memory"}
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        memory = {"peak_bytes": peak, "step_bytes": peak - baseline}
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        memory = {"peak_bytes": peak, "step_bytes": max(0, peak - rss_before)}
    # On a shared CPU machine wall time measures the neighbours; CPU time of this process is the fair figure there.
    seconds = statistics.median(times) if cuda else statistics.median(cpu_times)
    return {"variant": variant, "seconds": seconds, "wall_seconds": statistics.median(times), **memory}


def compare(base: Path, size, batch, steps, device, precision, checkpointing, variants=VARIANTS) -> list[dict]:
    """Run ``variants`` (diffusion first), each in a fresh child process, and return their measurements."""
    results = []
    for variant in variants:
        command = [
            sys.executable,
            __file__,
            "--child",
            variant,
            "--base",
            str(base),
            "--size",
            f"{size[0]}x{size[1]}",
            "--batch",
            str(batch),
            "--steps",
            str(steps),
            "--device",
            device,
            "--precision",
            precision,
        ] + (["--checkpointing"] if checkpointing else [])
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0:
            results.append(
                {
                    "variant": variant,
                    "seconds": None,
                    "peak_bytes": None,
                    "error": run.stderr.strip().splitlines()[-1] if run.stderr.strip() else "failed",
                }
            )
        else:
            results.append(json.loads(run.stdout.strip().splitlines()[-1]))
    return results


def report(title: str, results: list[dict]) -> str:
    reference = results[0]
    lines = [
        f"### {title}",
        "",
        "| variant | s/step | time vs diffusion | step memory (MiB) | memory vs diffusion |",
        "| --- | --- | --- | --- | --- |",
    ]
    for result in results:
        if result.get("seconds") is None:
            lines.append(f"| {result['variant']} | {result.get('error')} | | | |")
            continue
        time_ratio = result["seconds"] / reference["seconds"] if reference.get("seconds") else float("nan")
        mem, ref_mem = result["step_bytes"], reference.get("step_bytes") or 0
        mem_ratio = mem / ref_mem if ref_mem else float("nan")
        lines.append(
            f"| {result['variant']} | {result['seconds']:.3f} | {time_ratio:.3f} | {mem / 2**20:.0f} | "
            f"{mem_ratio:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--base", type=Path, default=None)
    parser.add_argument("--size", type=parse_size, default=None)  # HxW
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cpu always, cuda too when present)")
    parser.add_argument("--precision", default=None, choices=("no", "bf16", "fp16"))
    parser.add_argument("--checkpointing", action="store_true")
    args = parser.parse_args()
    if args.child:
        result = run_variant(
            args.child, args.base, args.size, args.batch, args.steps, args.device, args.precision, args.checkpointing
        )
        print(json.dumps(result))
        return

    import torch

    runs = []
    if args.device in (None, "cpu"):
        runs.append(
            (
                "CPU, tiny SD1.5-style model (tests/fixtures), fp32",
                "cpu",
                args.base or TINY_BASE,
                args.size or (256, 192),
                args.batch or 2,
                args.steps or 3,
                args.precision or "no",
                args.checkpointing,
            )
        )
    if args.device in (None, "cuda") and torch.cuda.is_available():
        runs.append(
            (
                f"{torch.cuda.get_device_name()}, SD1.5 full size (random weights), bf16, gradient checkpointing",
                "cuda",
                args.base or FULL_BASE,
                args.size or (1024, 768),
                args.batch or 1,
                args.steps or 5,
                args.precision or "bf16",
                True,
            )
        )
    print(f"command: python {' '.join(sys.argv)}")
    for title, device, base, size, batch, steps, precision, checkpointing in runs:
        results = compare(base, size, batch, steps, device, precision, checkpointing)
        print(report(f"{title}, {size[0]}x{size[1]}, batch {batch}, median of {steps} steps", results))
        print()


if __name__ == "__main__":
    main()
