"""Where is the unpaired try-on error? The new garment's pixels against the rest of the agnostic mask.

In unpaired try-on the mask is cut around the person's *old* garment, so part of it must become arms and background
where the new garment does not reach. This splits the masked squared error of ``benchmarks/synth_tiny.py``'s unpaired
images (``OUT/unpaired/pred/PERSON__CLOTH.png``) between the new garment's pixels (``cloth-mask-unpaired/``, drawn by
``leffa prep synth --unpaired``) and the rest of the mask, and scores the images again with the rest taken from the
truth (what a perfect inpainting of arms and background would give).

    python benchmarks/unpaired_error_split.py --data runs/shaded2/heldout --pred runs/bench-synth-tiny/unpaired/pred
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from leffa.data import load_rgb, open_dataset
from leffa.images import image_size
from leffa.metrics.masked import masked_psnr
from leffa.metrics.run import synthetic_truth
from leffa.pipeline import output_stem


def psnr(mse: float) -> float:
    return 10 * math.log10(1 / mse)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="held-out dataset folder (test split, --unpaired)")
    parser.add_argument("--pred", type=Path, required=True, help="folder of unpaired results PERSON__CLOTH.png")
    args = parser.parse_args()
    predictions = sorted(args.pred.glob("*.png"))
    size = image_size(predictions[0])  # the model's size, which the data was drawn at
    dataset = open_dataset(args.data, "vitonhd", "test", size, mode="unpaired")
    squared = {"garment": 0.0, "rest": 0.0}
    pixels = {"garment": 0, "rest": 0}
    scores, with_rest_true = [], []
    for index in range(len(dataset)):
        pred_path = args.pred / f"{output_stem(*dataset.entries[index])}.png"
        if not pred_path.is_file():
            continue
        truth, garment = synthetic_truth(dataset, index, size)  # (3, H, W) in [-1, 1], (1, H, W) in {0, 1}
        mask = dataset[index]["mask"].bool()  # (1, H, W): the person's own agnostic mask
        pred, truth = load_rgb(pred_path, size)[None] / 2 + 0.5, truth[None] / 2 + 0.5
        garment = garment.bool() & mask
        rest = mask & ~garment
        error = ((pred - truth) ** 2).sum(1)  # (1, H, W), summed over RGB
        for name, region in (("garment", garment), ("rest", rest)):
            squared[name] += float(error[region].sum())
            pixels[name] += int(region.sum())
        scores.append(float(masked_psnr(pred, truth, mask[None])))
        rest_from_truth = torch.where(rest, truth, pred)
        with_rest_true.append(float(masked_psnr(rest_from_truth, truth, mask[None])))
    total = squared["garment"] + squared["rest"]
    print(f"{len(scores)} unpaired images")
    for name in ("garment", "rest"):
        share = squared[name] / total
        print(
            f"{name:8s} pixels {pixels[name]:6d}  share of squared error {share:.0%}  "
            f"PSNR {psnr(squared[name] / (pixels[name] * 3)):.2f} dB"
        )
    print(
        f"masked PSNR (mean over images) {sum(scores) / len(scores):.2f} dB; with the rest of the mask from the "
        f"truth {sum(with_rest_true) / len(with_rest_true):.2f} dB"
    )


if __name__ == "__main__":
    main()
