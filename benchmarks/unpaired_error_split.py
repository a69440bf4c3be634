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

import numpy as np
from PIL import Image


def read(path: Path, mode: str = "RGB") -> np.ndarray:
    return np.asarray(Image.open(path).convert(mode), dtype=np.float64) / 255.0


def psnr(mse: float) -> float:
    return 10 * math.log10(1 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="held-out dataset folder (test split, --unpaired)")
    parser.add_argument("--pred", type=Path, required=True, help="folder of unpaired results PERSON__CLOTH.png")
    args = parser.parse_args()
    split = args.data / "test"
    squared = {"garment": 0.0, "rest": 0.0}
    pixels = {"garment": 0, "rest": 0}
    scores, with_rest_true = [], []
    for path in sorted(args.pred.glob("*.png")):
        person = path.stem.split("__")[0]
        pred, truth = read(path), read(split / "image-unpaired" / path.name)
        mask = read(split / "agnostic-mask" / f"{person}_mask.png", "L") > 0.5
        garment = (read(split / "cloth-mask-unpaired" / path.name, "L") > 0.5) & mask
        error = ((pred - truth) ** 2).sum(-1)  # H x W, summed over RGB
        for name, region in (("garment", garment), ("rest", mask & ~garment)):
            squared[name] += error[region].sum()
            pixels[name] += int(region.sum())
        scores.append(psnr(error[mask].sum() / (mask.sum() * 3)))
        rest_true = mask & ~garment
        with_rest_true.append(psnr(error[mask & ~rest_true].sum() / (mask.sum() * 3)))
    total = squared["garment"] + squared["rest"]
    print(f"{len(scores)} unpaired images")
    for name in ("garment", "rest"):
        share = squared[name] / total
        print(
            f"{name:8s} pixels {pixels[name]:6d}  share of squared error {share:.0%}  "
            f"PSNR {psnr(squared[name] / (pixels[name] * 3)):.2f} dB"
        )
    print(
        f"masked PSNR (mean over images) {np.mean(scores):.2f} dB; with the rest of the mask from the truth "
        f"{np.mean(with_rest_true):.2f} dB"
    )


if __name__ == "__main__":
    main()
