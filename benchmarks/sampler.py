"""Sampler throughput and peak memory: our sampler against an upstream-equivalent configuration, in one run.

Upstream-equivalent: 2n x 2n attention (``set_upstream_equivalent_attention(True)``), the reference UNet run every
step on ``[zeros; reference]`` (batch 2B), one image at a time, no cache. Ours adds, one at a time so each gain is
visible: n-query attention and the zero-reference features at batch 1 (default, exact), the zero-reference
features cached across images (exact), batching, channels-last, and upstream's reference acceleration
(approximate: it changes the image). Timings are interleaved over rounds and the median is reported. Peak memory is
measured in a fresh process per configuration, above the memory of the loaded model: ``torch.cuda.max_memory_allocated``
on CUDA, the peak RSS on the CPU.

    OMP_NUM_THREADS=1 python benchmarks/sampler.py                    # tiny config, CPU
    python benchmarks/sampler.py --full-size --device cuda --dtype fp16  # SD1.5 size at 1024x768, 30 steps
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from leffa.model import LeffaModel
from leffa.runtime import place_model, resolve_device, resolve_dtype
from leffa.sampler import SamplerOptions, UncondFeatureCache, sample

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
TINY = FIXTURES / "upstream_parity" / "stable-diffusion-inpainting"
FULL = FIXTURES / "full_size_configs" / "stable-diffusion-inpainting"


@dataclass(frozen=True)
class Config:
    name: str
    upstream_attention: bool = False
    share_uncond: bool = True
    cache: bool = False
    batch: int = 1
    channels_last: bool = False
    reference_once: bool = False
    exact: bool = True


CONFIGS = [
    Config("upstream-equivalent", upstream_attention=True, share_uncond=False),
    Config("ours default (n-query attention, shared zero features)"),
    Config("ours + zero-feature cache across images", cache=True),
    Config("ours + cache, batch 4", cache=True, batch=4),
    Config("ours + cache, batch 4, channels-last", cache=True, batch=4, channels_last=True),
    Config("ours + cache, batch 4, reference once (approx.)", cache=True, batch=4, reference_once=True, exact=False),
]


def build(base: Path, device: torch.device, dtype: torch.dtype, config: Config, seed: int = 0) -> LeffaModel:
    """A seeded random model with ``base``'s architecture, initialised on ``device`` and placed for ``config``."""
    torch.manual_seed(seed)
    with torch.device(device):  # random init on the device itself: seconds instead of minutes at full size
        model = LeffaModel.from_base_folder(base).eval()
    model = place_model(model, device, dtype, channels_last=config.channels_last)
    model.set_upstream_equivalent_attention(config.upstream_attention)
    return model


def inputs(size: tuple[int, int], count: int):
    """Seeded person/garment/mask/DensePose tensors, (count, C, H, W), the mask a centred box."""
    height, width = size
    generator = torch.Generator().manual_seed(0)
    person = torch.rand(count, 3, height, width, generator=generator) * 2 - 1
    garment = torch.rand(count, 3, height, width, generator=generator) * 2 - 1
    densepose = torch.rand(count, 3, height, width, generator=generator) * 2 - 1
    mask = torch.zeros(count, 1, height, width)
    mask[:, :, height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 1
    return person, garment, mask, densepose


def run_images(model, config: Config, count: int, size: tuple[int, int], steps: int):
    """Sample ``count`` images at ``size`` in batches of ``config.batch`` (CFG 2.5, DDPM); returns the images."""
    options = SamplerOptions(
        steps=steps, share_uncond_features=config.share_uncond, reference_once=config.reference_once
    )
    cache = UncondFeatureCache() if config.cache else None
    person, garment, mask, densepose = inputs(size, count)
    images = []
    for start in range(0, count, config.batch):
        part = slice(start, start + config.batch)
        images.append(
            sample(model, person[part], garment[part], mask[part], densepose[part], options, seed=0, cache=cache)
        )
    return torch.cat(images)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def current_rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def build_for(args, config: Config):
    device = resolve_device(args.device)
    return build(FULL if args.full_size else TINY, device, resolve_dtype(args.dtype, device), config), device


def peak_memory_child(args, index: int) -> float:
    """Run one configuration in this (fresh) process; its peak memory above the loaded model, in MiB."""
    config = CONFIGS[index]
    model, device = build_for(args, config)
    if device.type == "cuda":
        run_images(model, config, min(args.images, config.batch), args.size, args.steps)  # warm-up
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run_images(model, config, args.images, args.size, args.steps)
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    before = current_rss_mib()
    run_images(model, config, args.images, args.size, args.steps)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before


def time_breakdown(model, args, device) -> dict[str, float]:
    """Share of the wall time spent in each model call, for the default configuration."""
    totals: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            synchronize(device)
            start = time.perf_counter()
            out = fn(*a, **k)
            synchronize(device)
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - start
            return out

        return wrapper

    for name in ("encode", "decode", "reference_features", "predict_noise"):
        setattr(model, name, timed(name, getattr(model, name)))
    start = time.perf_counter()
    run_images(model, Config("default"), 1, args.size, args.steps)
    total = time.perf_counter() - start
    for name in ("encode", "decode", "reference_features", "predict_noise"):
        delattr(model, name)
    totals["scheduler and the rest"] = total - sum(totals.values())
    return {name: value / total for name, value in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-size", action="store_true", help="SD1.5-inpainting size (859.5M UNets) at 1024x768")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--steps", type=int, default=None, help="default: 30 full size, 10 tiny")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", default=None, help="HxW; default 1024x768 full size, 128x96 tiny")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.steps = args.steps or (30 if args.full_size else 10)
    args.size = tuple(int(v) for v in (args.size or ("1024x768" if args.full_size else "128x96")).split("x"))

    if args.memory_child is not None:
        print(json.dumps(peak_memory_child(args, args.memory_child)))
        return

    torch.set_grad_enabled(False)
    models = {config.name: build_for(args, config) for config in CONFIGS}
    device = next(iter(models.values()))[1]
    reference = None
    for config in CONFIGS:  # warm-up, and check the exact configurations really are exact
        model = models[config.name][0]
        images = run_images(model, config, min(args.images, 4), args.size, args.steps)
        if reference is None:
            reference = images
        elif config.exact:
            difference = (images - reference).abs().max().item()
            assert difference < 2e-3, f"{config.name} differs from upstream-equivalent by {difference}"
    times: dict[str, list[float]] = {config.name: [] for config in CONFIGS}
    for _ in range(args.rounds):
        for config in CONFIGS:
            model = models[config.name][0]
            synchronize(device)
            start = time.perf_counter()
            run_images(model, config, args.images, args.size, args.steps)
            synchronize(device)
            times[config.name].append(time.perf_counter() - start)

    memory = {}
    for index, config in enumerate(CONFIGS):
        command = [
            sys.executable,
            __file__,
            "--memory-child",
            str(index),
            "--device",
            args.device,
            "--dtype",
            args.dtype,
            "--steps",
            str(args.steps),
            "--images",
            str(args.images),
            "--size",
            "x".join(map(str, args.size)),
        ] + (["--full-size"] if args.full_size else [])
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        memory[config.name] = json.loads(result.stdout.strip().splitlines()[-1])

    breakdown = time_breakdown(models[CONFIGS[1].name][0], args, device)
    base = statistics.median(times[CONFIGS[0].name])
    what = "SD1.5 full size" if args.full_size else "tiny SD1.5-style"
    print(
        f"{what}, {args.size[0]}x{args.size[1]}, {args.steps} DDPM steps, guidance 2.5, {args.images} images, "
        f"device {device}, {args.dtype}, torch threads {torch.get_num_threads()}, median of {args.rounds} rounds"
    )
    print("| configuration | exact | images/s | speed-up | peak memory above the model (MiB) |")
    print("| --- | --- | --- | --- | --- |")
    for config in CONFIGS:
        median = statistics.median(times[config.name])
        print(
            f"| {config.name} | {'yes' if config.exact else 'no'} | {args.images / median:.3f} | "
            f"{base / median:.2f}x | {memory[config.name]:.0f} |"
        )
    print(
        "time shares, ours default, one image: " + ", ".join(f"{name} {share:.0%}" for name, share in breakdown.items())
    )


if __name__ == "__main__":
    main()
