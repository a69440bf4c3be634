"""Where attention slicing pays: one generative-UNet forward with and without query slices, per attention kernel.

``model.set_attention_slice(N)`` (``--attention-slice N``) runs every UNet self-attention in slices of N queries.
It changes no number; it only shrinks the score tensor of a kernel that materialises one. Each (kernel, slice)
pair runs in a fresh child process so that its peak memory is its own: ``torch.cuda.max_memory_allocated`` on CUDA,
the growth of the peak RSS on the CPU. ``math`` forces PyTorch's materialising kernel (what MPS and unsupported
dtypes get); ``default`` lets PyTorch pick its fused kernels.

    OMP_NUM_THREADS=1 python benchmarks/attention_slicing.py                  # tiny config, 512x384, CPU
    python benchmarks/attention_slicing.py --config full --size 1024x768 --dtype fp16 --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from attention_cost import CONFIGS, DTYPES

from leffa.model import LeffaModel


def child(config: str, size: str, dtype: str, device: str, kernel: str, queries: int) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    height, width = (int(v) for v in size.split("x"))
    torch.manual_seed(0)
    with torch.device(device):
        model = LeffaModel.from_base_folder(CONFIGS[config]).eval()
    model.to_dtype(DTYPES[dtype])
    model.set_attention_slice(queries or None)
    down = model.latent_downscale
    generator = torch.Generator(device).manual_seed(0)
    model_input = torch.randn(2, 12, height // down, width // down, generator=generator, device=device)
    reference = torch.randn(2, 4, height // down, width // down, generator=generator, device=device)
    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    backends = [SDPBackend.MATH] if kernel == "math" else [*fused, SDPBackend.MATH]
    with torch.inference_mode(), sdpa_kernel(backends):
        features = model.reference_features(reference, 500)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/statm") as handle:
                before = int(handle.read().split()[1]) * resource.getpagesize()
        start = time.perf_counter()
        model.predict_noise(model_input, 500, features)
        if device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - before
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {"kernel": kernel, "queries": queries, "seconds": time.perf_counter() - start, "peak_bytes": max(0, peak)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=CONFIGS, default="tiny")
    parser.add_argument("--size", default="512x384")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--slice", type=int, default=1024, help="queries per slice")
    parser.add_argument("--child", nargs=2, metavar=("KERNEL", "QUERIES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.config, args.size, args.dtype, args.device, args.child[0], int(args.child[1]))))
        return
    rows = []
    for kernel in ("default", "math"):
        for queries in (0, args.slice):
            command = [
                sys.executable,
                __file__,
                "--config",
                args.config,
                "--size",
                args.size,
                "--dtype",
                args.dtype,
                "--device",
                args.device,
                "--child",
                kernel,
                str(queries),
            ]
            run = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
    print(
        f"config={args.config} size={args.size} dtype={args.dtype} device={args.device}, one generative-UNet "
        "forward (batch 2 = one image with CFG), peak memory above the model and the reference features"
    )
    print("| attention kernel | slice (queries) | peak memory (MiB) | s/forward | memory vs unsliced |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        base = next(r for r in rows if r["kernel"] == row["kernel"] and r["queries"] == 0)
        ratio = row["peak_bytes"] / base["peak_bytes"] if base["peak_bytes"] else float("nan")
        print(
            f"| {row['kernel']} | {row['queries'] or 'off'} | {row['peak_bytes'] / 2**20:.0f} | "
            f"{row['seconds']:.2f} | {ratio:.2f} |"
        )


if __name__ == "__main__":
    main()
