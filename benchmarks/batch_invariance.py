"""How much an image changes with the batch it is sampled in: the same pairs at ``--batch-size N`` and 1, side by side.

Every image is seeded on its own (docs/inference.md), so the only difference left is float rounding: CPU and GPU
kernels pick their summation order by batch size (oneDNN convolutions, matrix-vector vs matrix-matrix products,
vectorised GroupNorm). This script measures how far that reaches the 8-bit output, and which ops are batch-variant.

    OMP_NUM_THREADS=1 python benchmarks/batch_invariance.py                      # synth-tiny, CPU, 6 pairs
    python benchmarks/batch_invariance.py --model viton_hd --device cuda --count 6 --steps 30   # needs weights + GPU
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import leffa


def inputs(count: int, size: tuple[int, int], seed: int = 0):
    """Random person photos (W, H) = ``size``, garments, masks (a central box) and DensePose images."""
    rng = np.random.default_rng(seed)
    width, height = size
    image = lambda: Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))  # noqa: E731
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4 : 3 * height // 4, width // 5 : 4 * width // 5] = 255
    return (
        [image() for _ in range(count)],
        [image() for _ in range(count)],
        Image.fromarray(mask),
        [image() for _ in range(count)],
    )


def batch_variant_ops(device: torch.device) -> dict[str, float]:
    """Max |batch of 3 - three batches of 1| per op on random data, on ``device``."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 64, 16, 12, generator=g).to(device)
    w = (torch.randn(64, 64, 3, 3, generator=g) * 0.05).to(device)
    t = torch.randn(3, 64, generator=g).to(device)
    lin = torch.randn(128, 64, generator=g).to(device)
    each = lambda fn, v: torch.cat([fn(v[i : i + 1]) for i in range(3)])  # noqa: E731
    ops = {
        "conv2d 3x3": lambda v: F.conv2d(v, w, padding=1),
        "linear (rows = batch)": lambda v: F.linear(v, lin),
        "group_norm": lambda v: F.group_norm(v, 32),
    }
    inputs_for = {"conv2d 3x3": x, "linear (rows = batch)": t, "group_norm": x}
    return {name: (fn(inputs_for[name]) - each(fn, inputs_for[name])).abs().max().item() for name, fn in ops.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="synth-tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--photo", default="96x128", help="person photo WxH")
    args = parser.parse_args()

    pipe = leffa.TryOnPipeline.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    people, garments, mask, denseposes = inputs(args.count, tuple(int(v) for v in args.photo.split("x")))
    run = lambda batch: pipe(
        people,
        garments,
        mask=mask,
        densepose=denseposes,
        steps=args.steps,  # noqa: E731
        batch_size=batch,
    )
    batched, single = run(args.batch_size), run(1)
    differences = [np.abs(np.asarray(a, int) - np.asarray(b, int)) for a, b in zip(batched.images, single.images)]
    pixels = sum(d.shape[0] * d.shape[1] for d in differences)
    changed = sum(int((d.max(axis=-1) > 0).sum()) for d in differences)
    print(
        f"model {args.model}, {pipe.size[0]}x{pipe.size[1]}, {args.steps} steps, {args.count} pairs, "
        f"device {args.device}, {args.dtype}"
    )
    print(
        f"--batch-size {args.batch_size} vs 1: max |difference| {max(int(d.max()) for d in differences)} "
        f"(8-bit levels), pixels that differ {changed} of {pixels} ({100 * changed / pixels:.3f} %), "
        f"mean |difference| {np.mean([d.mean() for d in differences]):.5f}"
    )
    for name, value in batch_variant_ops(torch.device(args.device)).items():
        print(f"  {name:24s} batch 3 vs 3 x batch 1: max |difference| {value:.2e}")


if __name__ == "__main__":
    main()
