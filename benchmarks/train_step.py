"""Seconds per training step of the synth-tiny recipe's model on the CPU, for the choices the recipe made: torch
threads, image size, UNet widths, batch. Each configuration runs in its own process (so the thread count really
applies), one after another, on random inputs through the trainer's own step (``prepare_inputs`` /
``compute_losses``, AdamW); the median of the timed steps is printed, with the Leffa loss off and on.

    python benchmarks/train_step.py --threads 1 2                           # 1 vs 2 threads (docs/training.md)
    python benchmarks/train_step.py --size 64x48 128x96 --unet-channels 32,32,64,64
    python benchmarks/train_step.py --unet-channels 16,16,32,32 32,32,64,64 --batch 4 8
    python benchmarks/train_step.py --vae-channels 16,32,64 32,64        # latents at 1/4 vs 1/2 of the image
    python benchmarks/train_step.py --vae-channels 32,64 --unet-attention 1,2,3 2,3   # attention at 32x24 or not
    python benchmarks/train_step.py --vae-channels 32,64 --unet-attention 1,2,3 --unet-heads 4,4,4,4 1,4,4,4
    python benchmarks/train_step.py --vae-channels 32,64 --unet-attention 2,3 --latents encode cached \
        --optimizer foreach fused                # leffa train --cache-latents; its fused AdamW

On a shared machine the load changes from minute to minute: compare configurations of one run only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import time


def measure(
    size: str,
    channels: str,
    batch: int,
    threads: int,
    steps: int,
    vae: str = "16,32,64",
    attention: str = "1,2,3",
    heads: str = "4,4,4,4",
    latents: str = "encode",
    optimizer: str = "fused",
) -> dict:
    """One configuration, in this process: median seconds per optimizer step without and with the Leffa loss."""
    import torch
    from diffusers import DDPMScheduler

    torch.set_num_threads(threads)
    from leffa.loss import LeffaLossSettings, select_layers
    from leffa.model import LeffaConfig, LeffaModel
    from leffa.synth import base
    from leffa.train.latent_cache import LatentCache
    from leffa.train.loop import TrainingForward, adamw, compute_losses, prepare_inputs, release_features

    height, width = (int(v) for v in size.split("x"))
    widths = [int(v) for v in channels.split(",")]
    config = LeffaConfig(
        unet=base.unet_config(widths, [int(v) for v in attention.split(",")], [int(v) for v in heads.split(",")]),
        vae=base.vae_config([int(v) for v in vae.split(",")]),
        scheduler=base.SCHEDULER_CONFIG,
    )
    torch.manual_seed(0)
    model = LeffaModel(config).train()
    model.vae.requires_grad_(False)
    scheduler = DDPMScheduler.from_config(config.scheduler)
    layers = select_layers(model.layer_downscale(), 1 / 32, True)
    batch_data = {
        "image": torch.rand(batch, 3, height, width) * 2 - 1,
        "reference": torch.rand(batch, 3, height, width) * 2 - 1,
        "mask": (torch.rand(batch, 1, height, width) > 0.5).float(),
        "densepose": torch.rand(batch, 3, height, width) * 2 - 1,
        "index": torch.arange(batch),
    }
    cache = LatentCache() if latents == "cached" else None  # filled by the warm-up step: an epoch after the first
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimiser = (
        adamw(parameters, 1e-4, (0.9, 0.999), 1e-2, torch.device("cpu"))
        if optimizer == "fused"
        else torch.optim.AdamW(parameters, lr=1e-4)
    )
    result = {
        "size": size,
        "unet": channels,
        "vae": vae,
        "attention": attention,
        "heads": heads,
        "batch": batch,
        "threads": threads,
        "latents": latents,
        "optimizer": optimizer,
        "parameters_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
    }
    for leffa in (False, True):
        forward = TrainingForward(model, layers if leffa else None)
        settings = LeffaLossSettings(weight=1.0) if leffa else None
        generator = torch.Generator().manual_seed(0)
        times = []
        for _ in range(steps + 1):  # the first step warms up
            started = time.perf_counter()
            inputs = prepare_inputs(model, scheduler, batch_data, generator, 0.1, cache)
            total, _, _, _ = compute_losses(forward, inputs, batch_data, settings)
            optimiser.zero_grad(set_to_none=True)
            total.backward()
            release_features(model)
            optimiser.step()
            times.append(time.perf_counter() - started)
        result["leffa" if leffa else "diffusion"] = round(statistics.median(times[1:]), 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", nargs="+", default=["64x48"])
    parser.add_argument("--unet-channels", nargs="+", default=["32,32,64,64"])
    parser.add_argument(
        "--vae-channels", nargs="+", default=["16,32,64"], help="VAE widths: 3 levels = latents at 1/4, 2 = 1/2"
    )
    parser.add_argument(
        "--unet-attention", nargs="+", default=["1,2,3"], help="UNet levels with self-attention (as prep synth-base)"
    )
    parser.add_argument(
        "--unet-heads", nargs="+", default=["4,4,4,4"], help="attention heads per UNet level (as prep synth-base)"
    )
    parser.add_argument("--batch", type=int, nargs="+", default=[8])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument(
        "--latents",
        nargs="+",
        default=["encode"],
        choices=["encode", "cached"],
        help="encode the VAE's latents every step, or read them from leffa train's --cache-latents cache",
    )
    parser.add_argument(
        "--optimizer",
        nargs="+",
        default=["fused"],
        choices=["fused", "foreach"],
        help="leffa train's AdamW (fused into one kernel) or torch's default multi-tensor loop",
    )
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration (median)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one JSON configuration
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(**json.loads(args.one))))
        return
    rows = []
    grid = itertools.product(
        args.size,
        args.vae_channels,
        args.unet_attention,
        args.unet_heads,
        args.unet_channels,
        args.batch,
        args.threads,
        args.latents,
        args.optimizer,
    )
    for size, vae, attention, heads, channels, batch, threads, latents, optimizer in grid:
        one = json.dumps(
            {
                "size": size,
                "vae": vae,
                "attention": attention,
                "heads": heads,
                "channels": channels,
                "batch": batch,
                "threads": threads,
                "latents": latents,
                "optimizer": optimizer,
                "steps": args.steps,
            }
        )
        env_threads = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        import os

        done = subprocess.run(
            [sys.executable, __file__, "--one", one],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **env_threads},
        )
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    first, first_leffa = rows[0]["diffusion"], rows[0]["leffa"]
    print(
        "| size | VAE | attention levels | heads | UNet | batch | threads | latents | AdamW | parameters (M) | s/step "
        "| s/step with Leffa loss | vs first (without / with the loss) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['size']} | {row['vae']} | {row['attention']} | {row['heads']} | {row['unet']} | {row['batch']} | {row['threads']} | {row['latents']} | {row['optimizer']} | {row['parameters_M']} | "
            f"{row['diffusion']:.2f} | {row['leffa']:.2f} | {row['diffusion'] / first:.2f}x / {row['leffa'] / first_leffa:.2f}x |"
        )


if __name__ == "__main__":
    main()
