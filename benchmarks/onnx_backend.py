"""ONNX Runtime (CPU) vs torch (CPU): time per tiny try-on image, measured side by side in one run.

Both backends run the same sampler (``leffa.sampler.sample``) on the same seeded tiny model with the same thread
count; the table prints seconds per image, the ratio, and the PSNR between the two backends' images.

    OMP_NUM_THREADS=1 python benchmarks/onnx_backend.py --threads 1 --images 3 --steps 10
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from leffa.export.backend import OnnxLeffaModel
from leffa.export.graphs import ExportOptions, export_onnx
from leffa.model import LeffaModel
from leffa.sampler import SamplerOptions, sample

TINY_SD15 = (
    Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "upstream_parity" / "stable-diffusion-inpainting"
)


def inputs(height: int, width: int, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    person = torch.rand(1, 3, height, width, generator=generator) * 2 - 1
    garment = torch.rand(1, 3, height, width, generator=generator) * 2 - 1
    mask = (torch.rand(1, 1, height, width, generator=generator) > 0.5).float()
    densepose = torch.rand(1, 3, height, width, generator=generator) * 2 - 1
    return person, garment, mask, densepose


def time_per_image(model, images: int, options: SamplerOptions, size) -> tuple[float, torch.Tensor]:
    person, garment, mask, densepose = inputs(*size)
    with torch.no_grad():
        result = sample(model, person, garment, mask, densepose, options, seed=42)  # warm-up
        start = time.perf_counter()
        for _ in range(images):
            result = sample(model, person, garment, mask, densepose, options, seed=42)
    return (time.perf_counter() - start) / images, result


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a - b).pow(2).mean())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1 / mse)).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=96)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = LeffaModel.from_base_folder(TINY_SD15).eval()
    options = SamplerOptions(steps=args.steps)
    size = (args.height, args.width)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label, export_options in (
            ("fixed size", ExportOptions(height=args.height, width=args.width)),
            ("dynamic size", ExportOptions(max_height=max(args.height, 128), max_width=max(args.width, 128))),
        ):
            if label == "dynamic size" and (args.height % 64 or args.width % 64):
                continue  # dynamic graphs serve multiples of 64 only
            directory = Path(folder) / label.replace(" ", "_")
            export_onnx(model, directory, export_options)
            onnx_model = OnnxLeffaModel(directory, providers=["CPUExecutionProvider"], threads=args.threads)
            rows.append((label, onnx_model))
        torch_seconds, torch_image = time_per_image(model, args.images, options, size)
        print(
            f"tiny model, {args.height}x{args.width}, {args.steps} DDPM steps with CFG, "
            f"{args.threads} thread(s), mean of {args.images} images after one warm-up"
        )
        print(f"{'backend':<28}{'s/image':>10}{'vs torch':>10}{'PSNR vs torch':>16}")
        print(f"{'torch (CPU)':<28}{torch_seconds:>10.3f}{1.0:>10.2f}{'-':>16}")
        for label, onnx_model in rows:
            seconds, image = time_per_image(onnx_model, args.images, options, size)
            print(
                f"{'onnxruntime CPU, ' + label:<28}{seconds:>10.3f}{seconds / torch_seconds:>10.2f}"
                f"{psnr(image, torch_image):>13.1f} dB"
            )


if __name__ == "__main__":
    main()
