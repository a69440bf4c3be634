"""The Leffa ablation in miniature: does the Leffa loss make attention follow the true correspondence?

Trains the same tiny model from the same seed several times on synthetic try-on data (``leffa prep synth``), with
the diffusion loss only and with the Leffa loss on (given weights), for equal steps, with identical batches, noise
and timesteps in every arm. Training goes through the trainer's own step code (``leffa.train.loop.prepare_inputs`` /
``compute_losses``) and dataset loader (``leffa.data``). Then, on the synthetic test split:

- attention-flow end-point error (EPE) against the ground-truth correspondence, per Leffa layer and mean, in pixels
  of the image: each layer's head-averaged attention flow (as the loss computes it) upsampled to image size,
  compared with ``gt-flow`` on the garment pixels, at fixed timesteps below ``theta_t`` with fixed noise;
- masked-region PSNR / SSIM of generated images (the trainer's ancestral DDPM sampler, fixed seeds) against the
  targets, inside the region to regenerate.

Arms run as parallel processes (one thread each). Example (the numbers in docs/benchmarks.md):

    OMP_NUM_THREADS=1 python benchmarks/leffa_ablation.py --out runs/ablation --steps 80 --lr 5e-4 --weights 1e-3 0.1 1
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import time
from pathlib import Path

import numpy as np
import torch

from leffa.flow import flow_epe
from leffa.probe import capture_attention, short_layer_name

SIZE = (64, 48)


# -- data and base ---------------------------------------------------------------------------------------------


def prepare(out: Path, n_train: int, n_test: int, vae_steps: int, seed: int, data: Path | None = None,
            base: Path | None = None) -> tuple[Path, Path, dict]:
    """Synthetic data and the tiny base folder (reused when given or already there)."""
    from leffa.synth.dataset import generate_dataset
    from leffa.synth.base import make_base_folder

    data, base = data or out / "data", base or out / "base"
    if not (data / "train_pairs.txt").is_file():
        generate_dataset("vton", data, n_train, SIZE, seed=seed, split="train")
    if not (data / "test_pairs.txt").is_file():
        generate_dataset("vton", data, n_test, SIZE, seed=seed, split="test")
    stats_path = out / "base.json"
    if not (base / "vae" / "diffusion_pytorch_model.safetensors").is_file():
        stats = make_base_folder(base, data, SIZE, steps=vae_steps, seed=seed)
        stats_path.write_text(json.dumps(stats))
    return data, base, json.loads(stats_path.read_text()) if stats_path.is_file() else {}


def build_model(base: Path, seed: int):
    """Both UNets from the base's random weights, its trained VAE: the trainer's own ``--init base`` path."""
    from leffa.train.loop import initialise_model
    from leffa.train.config import TrainConfig

    config = TrainConfig(task="vton", base=str(base), init="base", size=SIZE, seed=seed, mixed_precision="no")
    return initialise_model(config)


def batches(data: Path, batch_size: int, seed: int):
    """An endless, seeded stream of training batches (no augmentation: identical in every arm)."""
    from leffa.data import collate, open_dataset

    dataset = open_dataset(data, "vitonhd", "train", SIZE)
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(dataset), generator=generator).tolist()
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield collate([dataset[i] for i in order[start:start + batch_size]])


# -- training --------------------------------------------------------------------------------------------------


def train_arm(args: dict) -> dict:
    """Train one arm; ``weight`` 0 = diffusion loss only. Saves ``model.safetensors`` and a loss log."""
    from diffusers import DDPMScheduler

    from leffa.checkpoint import save_model
    from leffa.loss import LeffaLossSettings, select_layers
    from leffa.train.loop import TrainingForward, compute_losses, prepare_inputs, release_features

    torch.set_num_threads(1)
    out, weight = Path(args["out"]), args["weight"]
    torch.manual_seed(args["seed"])
    model = build_model(Path(args["base"]), args["seed"]).train()
    model.vae.requires_grad_(False)
    scheduler = DDPMScheduler.from_config(model.config.scheduler)
    layers = select_layers(model.layer_downscale(), 1 / 32, True)
    settings = LeffaLossSettings(weight=weight, temperature=args["temperature"]) if weight > 0 else None
    forward = TrainingForward(model, layers if settings else None)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(parameters, lr=args["lr"], betas=(0.9, 0.999), weight_decay=1e-2)
    generator = torch.Generator().manual_seed(args["seed"] + 1)
    stream = batches(Path(args["data"]), args["batch_size"], args["seed"])
    log, started = [], time.time()
    for step in range(args["steps"]):
        batch = next(stream)
        inputs = prepare_inputs(model, scheduler, batch, generator, dropout=0.0)
        total, diffusion, leffa, _ = compute_losses(forward, inputs, batch, settings)
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        release_features(model)
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()
        log.append((step, float(diffusion), float(leffa)))
    model.eval()
    name = arm_name(weight, args["steps"])
    save_model(model, out / name / "model.safetensors", dtype="fp32")
    (out / name / "loss.json").write_text(json.dumps(log))
    seconds = time.time() - started
    result = evaluate(model, Path(args["data"]), args["eval_timesteps"], args["sample_steps"], args["seed"],
                      args["temperature"], args["n_test"])
    return {"arm": name, "seconds": seconds, "result": result}


def arm_name(weight: float, steps: int) -> str:
    if steps == 0:
        return "untrained (step 0)"
    return "diffusion-only" if weight == 0 else f"leffa-{weight:g}"


# -- evaluation ------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model, data: Path, timesteps: list[int], sample_steps: int, seed: int, temperature: float,
             n_test: int) -> dict:
    from torchmetrics.functional.image import structural_similarity_index_measure

    from leffa.data import collate, open_dataset
    from leffa.flow import upsample_flow
    from leffa.loss import layer_flow, select_layers
    from leffa.synth.dataset import load_gt_flow
    from leffa.train.loop import sample_preview

    dataset = open_dataset(data, "vitonhd", "test", SIZE)
    batch = collate([dataset[i] for i in range(min(n_test, len(dataset)))])
    gt = torch.from_numpy(np.stack([load_gt_flow(data / "test" / "gt-flow" / f"{n}.npy") for n in batch["name"]]))
    layers = select_layers(model.layer_downscale(), 1 / 32, True)
    per_layer = {name: [] for name in layers}
    for t in timesteps:
        captured = capture_attention(model, batch["image"], batch["reference"], batch["mask"], batch["densepose"], t,
                                     layers, seed=seed + t)
        for name, (queries, keys) in captured.items():
            flow = upsample_flow(layer_flow(queries.float(), keys.float(), SIZE, temperature), SIZE)
            per_layer[name].append(float(flow_epe(flow, gt)))
    epe = {name: float(np.mean(values)) for name, values in per_layer.items()}
    generated = sample_preview(model, batch, sample_steps, torch.Generator().manual_seed(seed))
    target, mask = (batch["image"] + 1) / 2, batch["mask"]
    output = (generated.float() + 1) / 2
    mse = (((output - target) ** 2) * mask).sum() / (mask.sum() * 3)
    _, ssim_map = structural_similarity_index_measure(output, target, data_range=1.0, return_full_image=True)
    ssim = float((ssim_map * mask).sum() / (mask.sum() * 3))
    reconstruction = (model.decode(model.encode(batch["image"], sample=False)).float().clamp(-1, 1) + 1) / 2
    vae_mse = (((reconstruction - target) ** 2) * mask).sum() / (mask.sum() * 3)
    return {
        "epe": epe,
        "epe_mean": float(np.mean(list(epe.values()))),
        "psnr": float(10 * math.log10(1 / float(mse))),
        "ssim": ssim,
        "vae_psnr": float(10 * math.log10(1 / float(vae_mse))),
        "downscale": {name: model.layer_downscale()[name] for name in layers},
    }


@torch.no_grad()
def diagnose(model, data: Path, timestep: int, temperature: float, n_test: int, seed: int) -> list[str]:
    """Why a flow stays put: per layer, how far from uniform the attention is and how much the flow spreads."""
    from leffa.data import collate, open_dataset
    from leffa.flow import attention_map, upsample_flow
    from leffa.loss import layer_flow, select_layers
    from leffa.synth.dataset import load_gt_flow

    dataset = open_dataset(data, "vitonhd", "test", SIZE)
    batch = collate([dataset[i] for i in range(min(n_test, len(dataset)))])
    gt = torch.from_numpy(np.stack([load_gt_flow(data / "test" / "gt-flow" / f"{n}.npy") for n in batch["name"]]))
    valid = ~torch.isnan(gt[..., 0])
    half = torch.tensor([SIZE[1] / 2, SIZE[0] / 2])
    spread = (gt[valid] * half).std(dim=0)
    lines = [f"ground-truth flow spread x {spread[0]:.2f} px, y {spread[1]:.2f} px"]
    layers = select_layers(model.layer_downscale(), 1 / 32, True)
    captured = capture_attention(model, batch["image"], batch["reference"], batch["mask"], batch["densepose"],
                                 timestep, layers, seed=seed + timestep)
    for name, (queries, keys) in captured.items():
        queries, keys = queries.float(), keys.float()
        peak = attention_map(queries, keys, temperature).max(dim=-1).values.mean()
        logits = (queries @ keys.transpose(-1, -2)).std() / (temperature * queries.shape[-1] ** 0.5)
        flow = upsample_flow(layer_flow(queries, keys, SIZE, temperature), SIZE)[valid] * half
        lines.append(f"{short_layer_name(name)}: tokens {keys.shape[2]}, max attention {peak:.4f} (uniform "
                     f"{1 / keys.shape[2]:.4f}), logit std {logits:.3f}, flow spread x {flow[:, 0].std():.2f} "
                     f"y {flow[:, 1].std():.2f} px")
    return lines


def constant_flow_epe(data: Path, n_test: int) -> float:
    """Context for the table: EPE of the best constant flow (each sample's mean ground-truth coordinate)."""
    from leffa.synth.dataset import load_gt_flow

    errors = []
    for path in sorted((data / "test" / "gt-flow").glob("*.npy"))[:n_test]:
        gt = torch.from_numpy(load_gt_flow(path))[None]
        mean = torch.nanmean(gt.reshape(-1, 2), dim=0)
        errors.append(float(flow_epe(mean.expand_as(gt).clone(), gt)))
    return float(np.mean(errors))


def table(results: dict, constant: float) -> str:
    names = list(next(iter(results.values()))["epe"])
    downscale = next(iter(results.values()))["downscale"]
    header = "| arm | " + " | ".join(f"EPE {short_layer_name(n)} (1/{downscale[n]})" for n in names) + " | mean EPE | masked PSNR | masked SSIM |"
    lines = [header, "|" + "---|" * (len(names) + 4)]
    for arm, result in results.items():
        cells = " | ".join(f"{result['epe'][n]:.2f}" for n in names)
        lines.append(f"| {arm} | {cells} | **{result['epe_mean']:.2f}** | {result['psnr']:.2f} | {result['ssim']:.3f} |")
    lines.append("")
    lines.append(f"Constant-flow EPE (each sample's mean ground-truth coordinate): {constant:.2f} px. "
                 f"VAE reconstruction PSNR in the mask (ceiling): {next(iter(results.values()))['vae_psnr']:.2f} dB.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--weights", type=float, nargs="+", default=[1e-3], help="Leffa loss weights (lambda) to try")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--n-train", type=int, default=256)
    parser.add_argument("--n-test", type=int, default=8, help="test samples evaluated (of those in the data)")
    parser.add_argument("--vae-steps", type=int, default=400)
    parser.add_argument("--eval-timesteps", type=int, nargs="+", default=[200])
    parser.add_argument("--sample-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, help="reuse a synthetic vton dataset (64x48) instead of drawing one")
    parser.add_argument("--base", type=Path, help="reuse a base folder from `leffa prep synth-base`")
    parser.add_argument("--diagnose", nargs="+", metavar="ARM",
                        help="only print attention sharpness and flow spread of trained arms (e.g. leffa-1)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.diagnose:
        from leffa.checkpoint import load_model

        for arm in args.diagnose:
            model = load_model(args.out / arm / "model.safetensors")
            data = args.data or args.out / "data"
            for line in diagnose(model, data, args.eval_timesteps[0], args.temperature, args.n_test, args.seed):
                print(f"{arm}: {line}")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    data, base, base_stats = prepare(args.out, args.n_train, args.n_test, args.vae_steps, args.seed,
                                      args.data, args.base)
    print(f"data + base ready in {time.time() - started:.0f} s; autoencoder {base_stats}", flush=True)
    common = {"out": str(args.out), "base": str(base), "data": str(data), "lr": args.lr, "seed": args.seed,
              "batch_size": args.batch_size, "temperature": args.temperature, "n_test": args.n_test,
              "eval_timesteps": args.eval_timesteps, "sample_steps": args.sample_steps}
    arms = [dict(common, weight=0.0, steps=0)] + [dict(common, weight=w, steps=args.steps) for w in [0.0, *args.weights]]
    results = {}
    with multiprocessing.get_context("spawn").Pool(len(arms)) as pool:
        for done in pool.imap_unordered(train_arm, arms):
            results[done["arm"]] = done["result"]
            print(f"{done['arm']}: trained in {done['seconds']:.0f} s, {json.dumps(done['result'])}", flush=True)
    order = [arm_name(arm["weight"], arm["steps"]) for arm in arms]
    results = {name: results[name] for name in order}
    text = table(results, constant_flow_epe(data, args.n_test))
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                       "results": results}, indent=1))
    print(text)
    print(f"total {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
