"""Time SSIM + PSNR over N image pairs on CPU: ``leffa eval``'s path against a scikit-image loop, side by side.

Writes N synthetic pairs (smooth content + noise) as PNG to a temporary folder, then measures
  1. end to end: ``leffa.metrics.scores.evaluate_folders(..., metrics=["ssim", "psnr"])`` (decode, resize check, batch, score)
  2. compute only: the same batched torchmetrics calls on tensors already in memory
  3. scikit-image: ``structural_similarity`` + ``peak_signal_noise_ratio`` per pair on arrays in memory
and checks that the means agree.

    OMP_NUM_THREADS=1 python benchmarks/eval_metrics.py --n 1000 --size 256x192
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def make_pairs(folder: Path, n: int, height: int, width: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    (folder / "pred").mkdir(parents=True)
    (folder / "gt").mkdir(parents=True)
    for index in range(n):
        small = (rng.random((height // 16, width // 16, 3)) * 255).astype(np.uint8)
        gt = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))
        pred = np.clip(gt.astype(np.int16) + rng.integers(-12, 13, gt.shape), 0, 255).astype(np.uint8)
        Image.fromarray(gt).save(folder / "gt" / f"{index:05d}.png", compress_level=1)
        Image.fromarray(pred).save(folder / "pred" / f"{index:05d}.png", compress_level=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", default="256x192", help="HEIGHTxWIDTH")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared: 1 is fastest)")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(args.threads)

    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from leffa.metrics.scores import MetricNetworks, evaluate_folders, load_image, match_pairs, psnr, ssim

    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        make_pairs(root, args.n, height, width)
        ssim(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))  # import torchmetrics outside the timings
        psnr(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))

        start = time.perf_counter()
        result = evaluate_folders(
            root / "pred", root / "gt", MetricNetworks(), metrics=["ssim", "psnr"], batch_size=args.batch_size
        )
        end_to_end = time.perf_counter() - start

        pairs = match_pairs(root / "pred", root / "gt")
        preds = torch.stack([load_image(p) for p, _ in pairs])
        gts = torch.stack([load_image(g) for _, g in pairs])
        start = time.perf_counter()
        ours_ssim, ours_psnr = [], []
        for first in range(0, args.n, args.batch_size):
            batch = slice(first, first + args.batch_size)
            ours_ssim.append(ssim(preds[batch], gts[batch]))
            ours_psnr.append(psnr(preds[batch], gts[batch]))
        compute_only = time.perf_counter() - start

        pred_arrays = [p.permute(1, 2, 0).double().numpy() for p in preds]
        gt_arrays = [g.permute(1, 2, 0).double().numpy() for g in gts]
        start = time.perf_counter()
        sk_ssim = [
            structural_similarity(
                p, g, channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
            )
            for p, g in zip(pred_arrays, gt_arrays)
        ]
        sk_psnr = [peak_signal_noise_ratio(g, p, data_range=1.0) for p, g in zip(pred_arrays, gt_arrays)]
        scikit = time.perf_counter() - start

    ssim_gap = abs(result.metrics["ssim"] - float(np.mean(sk_ssim)))
    psnr_gap = abs(result.metrics["psnr"] - float(np.mean(sk_psnr)))
    print(
        f"{args.n} pairs at {height}x{width}, CPU, torch threads {args.threads}, batch {args.batch_size}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"mean SSIM {result.metrics['ssim']:.5f} (scikit-image {np.mean(sk_ssim):.5f}, |diff| {ssim_gap:.1e}); "
        f"mean PSNR {result.metrics['psnr']:.3f} dB (|diff| {psnr_gap:.1e})"
    )
    print(
        f"{'leffa eval end to end (decode + SSIM + PSNR)':48s} {end_to_end:7.2f} s  {1000 * end_to_end / args.n:6.2f} ms/pair"
    )
    print(
        f"{'leffa SSIM + PSNR compute only (batched)':48s} {compute_only:7.2f} s  {1000 * compute_only / args.n:6.2f} ms/pair"
    )
    print(f"{'scikit-image SSIM + PSNR loop':48s} {scikit:7.2f} s  {1000 * scikit / args.n:6.2f} ms/pair")
    print(
        f"ratio scikit-image / leffa compute: {scikit / compute_only:.2f}x; "
        f"end to end / compute: {end_to_end / compute_only:.2f}x"
    )


if __name__ == "__main__":
    main()
