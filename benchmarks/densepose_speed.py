"""CPU time of DensePose per image at the real input size, split by stage (random weights, one forced person).

Usage: OMP_NUM_THREADS=2 python benchmarks/densepose_speed.py [--height 1024 --width 768 --repeats 2 --threads 2]

Random weights run the same layers as the released ones; the box classifier is set so that one RoI is kept, as for
a typical try-on photo with one person; the DensePose branch is timed on a typical person box, decoding the whole
stride-4 map and only the window the box reads, side by side. Prints seconds per stage and each stage's share of the whole, measured in the
same run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from leffa.densepose import DensePoseConfig, DensePoseEstimator
from leffa.densepose.estimator import preprocess
from leffa.densepose.network import DensePoseRCNN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = DensePoseConfig(max_detections=1)
    model = DensePoseRCNN(config).eval()
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.zero_()
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([10.0, 0.0]))
    estimator = DensePoseEstimator(model=model, config=config)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8))

    stages: dict[str, list[float]] = {}

    def timed(name, fn, *a):
        start = time.perf_counter()
        out = fn(*a)
        stages.setdefault(name, []).append(time.perf_counter() - start)
        return out

    with torch.no_grad():
        for _ in range(args.repeats):
            tensor, size = timed("preprocess (resize, normalise)", preprocess, image, config)
            features = timed("backbone (ResNet-50 + FPN)", model.backbone, tensor)
            proposals, _ = timed(
                "RPN (1000 proposals, NMS)",
                model.proposal_generator,
                [features[k] for k in ("p2", "p3", "p4", "p5", "p6")],
                size,
            )
            timed("box head (RoIAlign 7x7, 2 FC, NMS)", model.roi_heads.detect, features, proposals, size)
            # DensePose branch on a typical try-on person box (60% of the width, 90% of the height), decoding the
            # whole stride-4 map vs only the window the box reads (what the pipeline does; same numbers).
            h, w = size
            person = torch.tensor([[0.2 * w, 0.05 * h, 0.8 * w, 0.95 * h]])
            timed("DensePose branch, whole-map decoder", model.roi_heads.densepose, features, person, False)
            timed("DensePose branch, windowed decoder (used)", model.roi_heads.densepose, features, person, True)
            timed(
                "  of which head + predictor (1 person)",
                lambda p: model.roi_heads.densepose_predictor(model.roi_heads.densepose_head(p)),
                torch.randn(1, 256, 28, 28),
            )
            result = estimator.predict(image)
            for kind in ("iuv", "index", "seg"):
                timed(f"render {kind}", result.render, kind)
            timed("whole densepose_image path (predict + seg)", estimator.render, image, "seg")

    whole = float(np.median(stages.pop("whole densepose_image path (predict + seg)")))
    print(
        f"input {args.width}x{args.height} -> network {tensor.shape[3]}x{tensor.shape[2]} (padded), "
        f"{args.threads} threads, median of {args.repeats}"
    )
    print(f"{'stage':45s} {'seconds':>8s} {'share':>7s}")
    for name, values in stages.items():
        median = float(np.median(values))
        print(f"{name:45s} {median:8.3f} {median / whole:7.1%}")
    print(f"{'whole image (predict + seg render)':45s} {whole:8.3f} {1:7.1%}")


if __name__ == "__main__":
    main()
