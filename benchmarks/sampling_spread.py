"""How much of a try-on model's masked error is sampling spread, and how much is bias?

Masked PSNR scores one sample of the model's distribution. A sample's squared error is the spread of the samples
around their mean plus the mean's own error (its bias), so the average of many samples (an estimate of the mean)
shows how far a lower-variance sampler could go: if the samples scatter widely around a good mean, averaging k of
them gains up to 10 log10(k) dB for the spread's share; if they agree with each other and are wrong together, it
gains nothing, and only a better model closes the gap. This reads ``leffa eval --run`` folders sampled with
different ``--seed`` values (same model, data and sampler) and prints each seed's masked PSNR, the masked PSNR of
the mean of the first k seeds' images, and how close two seeds' images are to each other:

    leffa eval --run --unpaired --model synth-tiny --data runs/shaded2/heldout --out-dir runs/seed-42 \\
      --metrics psnr_mask --steps 30 --device cpu --seed 42
    # ... the same with --seed 43 to 49 into runs/seed-43 to runs/seed-49
    python benchmarks/sampling_spread.py runs/seed-4?
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from leffa.data import load_mask, load_rgb
from leffa.images import image_size
from leffa.metrics.masked import masked_psnr, region_mse


def load_run(folder: Path, names: list[str], subfolder: str, size) -> torch.Tensor:
    """``folder/subfolder/NAME.png`` for every name, as ``(N, 3, H, W)`` in [0, 1]."""
    return torch.stack([load_rgb(folder / subfolder / name, size, subfolder) / 2 + 0.5 for name in names])


def mean_psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """Masked PSNR averaged over images, as ``leffa eval`` reports it."""
    return float(masked_psnr(pred, target, mask).nanmean())


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="leffa eval --run output folders, one per seed (>= 2)")
    args = parser.parse_args()
    if len(args.runs) < 2:
        parser.error("give at least two runs (one per sampling seed)")
    first = args.runs[0]
    names = sorted(path.name for path in (first / "pred").glob("*.png"))
    if not names:
        parser.error(f"{first}/pred: no PNG images (give leffa eval --run output folders)")
    for run in args.runs[1:]:
        missing = [name for name in names if not (run / "pred" / name).is_file()]
        if missing:
            parser.error(f"{run}/pred: {len(missing)} of {first}'s images are missing (e.g. {missing[0]})")
    size = image_size(first / "pred" / names[0])
    truth = load_run(first, names, "gt", size)
    mask = torch.stack([load_mask(first / "mask" / name, size) for name in names])  # (N, 1, H, W) in {0, 1}
    samples = torch.stack([load_run(run, names, "pred", size) for run in args.runs])  # (S, N, 3, H, W)

    seeds = [mean_psnr(sample, truth, mask) for sample in samples]
    print(f"{len(names)} images, {len(args.runs)} seeds ({', '.join(run.name for run in args.runs)})")
    print("| images | masked PSNR (dB) |")
    print("|---|---|")
    print(
        f"| one sample (mean over seeds; min - max) | {sum(seeds) / len(seeds):.2f} ({min(seeds):.2f} - "
        f"{max(seeds):.2f}) |"
    )
    k = 2
    while k <= len(args.runs):
        print(f"| mean of {k} samples | {mean_psnr(samples[:k].mean(0), truth, mask):.2f} |")
        k *= 2
    pairs = [mean_psnr(samples[i], samples[i + 1], mask) for i in range(len(args.runs) - 1)]
    print(f"| one sample against another seed's (not the truth) | {sum(pairs) / len(pairs):.2f} |")
    # Per image: a sample's squared error = bias^2 + spread (the samples' variance about their mean), so the mean of
    # infinitely many samples would score bias^2 = (a sample's error) - spread; the spread is estimated over the
    # seeds with Bessel's correction.
    sample_mse = torch.stack([region_mse(sample, truth, mask) for sample in samples]).mean(0)  # (N,)
    centre = samples.mean(0)
    spread = (
        torch.stack([region_mse(sample, centre, mask) for sample in samples]).mean(0)
        * len(args.runs)
        / (len(args.runs) - 1)
    )
    bias = (sample_mse - spread).clamp(min=1e-10)
    print(
        f"| the mean of infinitely many samples (estimated: error less spread) | "
        f"{float((-10 * bias.log10()).nanmean()):.2f} |"
    )
    print(f"spread's share of one sample's squared error: {float(1 - bias.sum() / sample_mse.sum()):.0%}")


if __name__ == "__main__":
    main()
