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
    down = model.latent_downscale
    latent_shape = (args.batch, 4, height // down, width // down)
    generator = torch.Generator(args.device).manual_seed(0)
    model_input = torch.randn(args.batch, 12, *latent_shape[2:], generator=generator, device=args.device)
    reference = torch.randn(latent_shape, generator=generator, device=args.device)
    timesteps = torch.full((args.batch,), 500, device=args.device)

    with torch.inference_mode():
        features = model.reference_features(reference, timesteps)
        results = {}
        for mode in ("ours", "upstream", "ours", "upstream"):  # warm-up pass, then the measured pass
            model.set_upstream_equivalent_attention(mode == "upstream")
            results[mode] = time_forward(model, model_input, timesteps, features, args.device, args.repeats)
        model.set_upstream_equivalent_attention(False)

    ours_time = statistics.median(results["ours"][0])
    upstream_time = statistics.median(results["upstream"][0])
    difference = (results["ours"][1].float() - results["upstream"][1].float()).abs().max().item()
    tokens = (height // down) * (width // down)
    print(f"config={args.config} size={height}x{width} tokens@1/8={tokens} batch={args.batch} "
          f"dtype={args.dtype} device={args.device} repeats={args.repeats}")
    print(f"upstream-equivalent (2n queries): {upstream_time * 1e3:9.1f} ms / forward")
    print(f"ours (n queries):                 {ours_time * 1e3:9.1f} ms / forward")
    print(f"speed-up: {upstream_time / ours_time:.2f}x   max abs difference: {difference:.2e}")


if __name__ == "__main__":
    main()
