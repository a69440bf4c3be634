"""Generative-UNet cost: our query-from-own-tokens attention vs upstream's 2n-query attention, in one run.

Upstream concatenates the reference tokens to the generative ones and runs self-attention over all 2n tokens,
keeping the first half. Only the first n queries matter, so we take queries from the own tokens alone. This script
times both on the same weights and inputs, interleaved, and prints the time ratio and the max abs difference.

    python benchmarks/attention_cost.py                       # tiny config, CPU
    python benchmarks/attention_cost.py --config full --size 1024x768 --dtype fp16   # SD1.5 size, GPU
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from leffa.model import LeffaModel

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "tiny": ROOT / "tests/fixtures/upstream_parity/stable-diffusion-inpainting",
    "full": ROOT / "tests/fixtures/full_size_configs/stable-diffusion-inpainting",
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_forward(model, model_input, timesteps, features, device, repeats: int) -> tuple[list[float], torch.Tensor]:
    times, output = [], None
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        output = model.predict_noise(model_input, timesteps, features)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times, output


def compare(model, size: tuple[int, int], batch: int, device: str, repeats: int) -> dict:
    """Generative-UNet forward with n vs 2n queries on the same inputs, interleaved: median seconds, max abs diff."""
    height, width = size
    down = model.latent_downscale
    latent_shape = (batch, 4, height // down, width // down)
    generator = torch.Generator(device).manual_seed(0)
    model_input = torch.randn(batch, 12, *latent_shape[2:], generator=generator, device=device)
    reference = torch.randn(latent_shape, generator=generator, device=device)
    timesteps = torch.full((batch,), 500, device=device)
    with torch.inference_mode():
        features = model.reference_features(reference, timesteps)
        results = {}
        for mode in ("ours", "upstream", "ours", "upstream"):  # warm-up pass, then the measured pass
            model.set_upstream_equivalent_attention(mode == "upstream")
            results[mode] = time_forward(model, model_input, timesteps, features, device, repeats)
        model.set_upstream_equivalent_attention(False)
    return {
        "ours_s": statistics.median(results["ours"][0]),
        "upstream_s": statistics.median(results["upstream"][0]),
        "max_abs_diff": (results["ours"][1].float() - results["upstream"][1].float()).abs().max().item(),
        "tokens": (height // down) * (width // down),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=CONFIGS, default="tiny")
    parser.add_argument("--size", default="512x384", help="image size HxW (latents are 1/8)")
    parser.add_argument("--batch", type=int, default=2, help="2 = one image with classifier-free guidance")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    height, width = (int(v) for v in args.size.lower().split("x"))
    torch.manual_seed(0)
    model = LeffaModel.from_base_folder(CONFIGS[args.config]).eval().to(args.device).to_dtype(DTYPES[args.dtype])
    result = compare(model, (height, width), args.batch, args.device, args.repeats)
    print(
        f"config={args.config} size={height}x{width} tokens@1/8={result['tokens']} batch={args.batch} "
        f"dtype={args.dtype} device={args.device} repeats={args.repeats}"
    )
    print(f"upstream-equivalent (2n queries): {result['upstream_s'] * 1e3:9.1f} ms / forward")
    print(f"ours (n queries):                 {result['ours_s'] * 1e3:9.1f} ms / forward")
    print(
        f"speed-up: {result['upstream_s'] / result['ours_s']:.2f}x   max abs difference: {result['max_abs_diff']:.2e}"
    )


if __name__ == "__main__":
    main()
