"""The Leffa ablation in miniature: from one checkpoint, does the Leffa loss make attention follow the true
correspondence (lower flow end-point error) without hurting the images?

Protocol (the paper's: the Leffa loss is a last fine-tuning stage): every arm starts from the same checkpoint
(``--init``, e.g. the recipe's stage-1 model, trained with the diffusion loss only) and continues for the same
number of steps with identical batches, noise, timesteps and reference dropout; arms differ only in the Leffa
loss weight lambda and temperature tau (``--arms 0 1e-3 1 10 1@0.5``: ``WEIGHT[@TAU]``; 0 = diffusion loss only).
Training goes through the trainer's own step code (``leffa.train.loop.prepare_inputs`` / ``compute_losses``) and
the ``leffa.data`` VITON-HD loader. Then, on a held-out synthetic split (a seed not trained on):

- attention-flow EPE per layer and mean, in image pixels, against ``gt-flow`` on the garment pixels
  (``leffa.metrics.flow.evaluate_flow``, the code behind ``leffa eval --flow``; fixed noise; one tau for all arms);
- masked PSNR of images from the inference sampler (``leffa.sampler.sample``: 30 DDPM steps, guidance 2.5, the
  CLI's defaults) against the targets inside the agnostic mask;
- a figure per arm: ``leffa viz-flow --gt-flow`` on the first held-out sample.

Arms run as parallel processes (one thread each). ``--trained NAME=MODEL ...`` skips the training and evaluates
models trained elsewhere instead: the recipe's stage 3 (``leffa train --leffa-loss``) beside its twin run with
``--no-leffa-loss`` (same init, seed and settings, so the trainer draws identical batches, noise, timesteps and
dropout in both: the Leffa loss draws no random numbers). The numbers in docs/benchmarks.md come from

    OMP_NUM_THREADS=1 python benchmarks/leffa_ablation.py --init runs/synth-tiny/stage1/model.safetensors \\
        --data runs/synth-tiny/data --heldout runs/heldout --out runs/ablation --steps 100 \\
        --arms 0 1e-3 10 10@0.5 --n-test 12 --sample-steps 20
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import subprocess
import time
from pathlib import Path

import numpy as np
import torch


def parse_arm(text: str) -> tuple[float, float | None]:
    weight, _, tau = text.partition("@")
    return float(weight), float(tau) if tau else None


def arm_name(weight: float, tau: float | None) -> str:
    if weight == 0:
        return "diffusion-only"
    return f"leffa-{weight:g}" + (f"-tau{tau:g}" if tau is not None else "")


def batches(data: Path, size: tuple[int, int], batch_size: int, seed: int):
    """An endless, seeded stream of training batches (no augmentation: identical in every arm)."""
    from leffa.data import collate, open_dataset

    dataset = open_dataset(data, "vitonhd", "train", size)
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(dataset), generator=generator).tolist()
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield collate([dataset[i] for i in order[start : start + batch_size]])


def train_arm(args: dict) -> dict:
    """Continue ``args["init"]`` for ``steps`` steps with the arm's Leffa weight; save the model and a loss log."""
    from diffusers import DDPMScheduler

    from leffa.checkpoint import load_model, save_model
    from leffa.loss import LeffaLossSettings, select_layers
    from leffa.train.loop import TrainingForward, compute_losses, prepare_inputs, release_features
    from leffa.weights import trained_size

    torch.set_num_threads(1)
    out, weight, tau = Path(args["out"]), args["weight"], args["tau"] or args["temperature"]
    name = arm_name(args["weight"], args["tau"])
    model = load_model(args["init"]).float().train()
    model.vae.requires_grad_(False)
    size = trained_size(model)
    scheduler = DDPMScheduler.from_config(model.config.scheduler)
    layers = select_layers(model.layer_downscale(), 1 / 32, True)
    settings = LeffaLossSettings(weight=weight, temperature=tau) if weight > 0 else None
    forward = TrainingForward(model, layers if settings else None)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(parameters, lr=args["lr"], betas=(0.9, 0.999), weight_decay=1e-2)
    generator = torch.Generator().manual_seed(args["seed"] + 1)
    stream = batches(Path(args["data"]), size, args["batch_size"], args["seed"])
    log, started = [], time.time()
    for step in range(args["steps"]):
        batch = next(stream)
        inputs = prepare_inputs(model, scheduler, batch, generator, dropout=args["dropout"])
        total, diffusion, leffa, _ = compute_losses(forward, inputs, batch, settings)
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        release_features(model)
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimiser.step()
        log.append((step, float(diffusion), float(leffa)))
    model.eval()
    save_model(model, out / name / "model.safetensors", dtype="fp32")
    (out / name / "loss.json").write_text(json.dumps(log))
    return {"arm": name, "seconds": time.time() - started, "model": str(out / name / "model.safetensors")}


@torch.no_grad()
def evaluate(args: dict) -> dict:
    """Held-out EPE per layer (``evaluate_flow``) and masked PSNR of sampled images for one saved model."""
    from leffa.checkpoint import load_model
    from leffa.data import collate, open_dataset
    from leffa.metrics.flow import evaluate_flow
    from leffa.metrics.masked import masked_psnr
    from leffa.sampler import SamplerOptions, sample
    from leffa.weights import trained_size

    torch.set_num_threads(1)
    model = load_model(args["model"]).float().eval()
    size = trained_size(model)
    heldout = Path(args["heldout"])
    epe = {}
    for t in args["eval_timesteps"]:
        result = evaluate_flow(model, heldout, t, args["eval_temperature"], args["seed"], None, args["n_test"])
        for layer, value in result.metrics.items():
            epe.setdefault(layer, []).append(value)
    epe = {layer: float(np.mean(values)) for layer, values in epe.items()}
    dataset = open_dataset(heldout, "vitonhd", "test", size)
    batch = collate([dataset[i] for i in range(min(args["n_test"], len(dataset)))])
    images = sample(
        model,
        batch["image"],
        batch["reference"],
        batch["mask"],
        batch["densepose"],
        SamplerOptions(steps=args["sample_steps"]),
        seed=args["seed"],
    )
    psnr = masked_psnr(images.float(), batch["image"] / 2 + 0.5, batch["mask"])
    return {"arm": args["arm"], "epe": epe, "psnr_mask": float(psnr.nanmean())}


def gradient_share(
    init: str, data: Path, temperatures: list[float], batch_size: int = 16, timestep: int = 250
) -> list[str]:
    """How much of the attention weights' gradient the Leffa loss contributes at lambda = 1: the norm of its
    gradient on the self-attention query/key weights (and on all parameters) over the diffusion loss's, one batch
    at a fixed timestep below theta_t. Lambda x this ratio is the Leffa loss's share."""
    from diffusers import DDPMScheduler

    from leffa.checkpoint import load_model
    from leffa.data import collate, open_dataset
    from leffa.loss import LeffaLossSettings, select_layers
    from leffa.train.loop import TrainingForward, compute_losses, prepare_inputs, release_features
    from leffa.weights import trained_size

    model = load_model(init).float().train()
    model.vae.requires_grad_(False)
    scheduler = DDPMScheduler.from_config(model.config.scheduler)
    layers = select_layers(model.layer_downscale(), 1 / 32, True)
    dataset = open_dataset(data, "vitonhd", "train", trained_size(model))
    batch = collate([dataset[i] for i in range(batch_size)])
    named = dict(model.named_parameters())
    attention = [p for n, p in named.items() if ".attn1.to_q." in n or ".attn1.to_k." in n]
    trainable = [p for p in named.values() if p.requires_grad]

    def gradients(settings):
        inputs = prepare_inputs(model, scheduler, batch, torch.Generator().manual_seed(0), 0.0)
        inputs.timesteps = torch.full_like(inputs.timesteps, timestep)
        total, _, leffa, _ = compute_losses(
            TrainingForward(model, layers if settings else None), inputs, batch, settings
        )
        for parameter in trainable:
            parameter.grad = None
        total.backward()
        release_features(model)
        grab = lambda group: [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in group]
        return grab(attention), grab(trainable), float(leffa)

    def norm(tensors):
        return float(torch.sqrt(sum((t**2).sum() for t in tensors)))

    base_attention, base_all, _ = gradients(None)
    lines = []
    for tau in temperatures:
        with_attention, with_all, leffa = gradients(LeffaLossSettings(weight=1.0, temperature=tau))
        share = norm([a - b for a, b in zip(with_attention, base_attention)]) / norm(base_attention)
        share_all = norm([a - b for a, b in zip(with_all, base_all)]) / norm(base_all)
        lines.append(
            f"tau {tau:g}: Leffa loss {leffa:.4f}; |grad Leffa| / |grad diffusion| at lambda 1: "
            f"attention q/k {share:.3g}, all parameters {share_all:.3g}"
        )
    return lines


def constant_flow_epe(heldout: Path, n_test: int, size: tuple[int, int]) -> float:
    """Context for the table: EPE of the best constant flow (each sample's mean ground-truth coordinate)."""
    from leffa.synth.dataset import load_gt_flow

    errors = []
    half = np.array([size[1] / 2, size[0] / 2])
    for path in sorted((heldout / "test" / "gt-flow").glob("*.npy"))[:n_test]:
        gt = load_gt_flow(path)
        valid = ~np.isnan(gt[..., 0])
        points = gt[valid]
        errors.append(float(np.linalg.norm((points - points.mean(axis=0)) * half, axis=-1).mean()))
    return float(np.mean(errors))


def figure_layers(model: str) -> str:
    """The first attention layer of every block (one per resolution and direction), e.g. ``down1.a0.b0,...``."""
    from leffa.checkpoint import load_model
    from leffa.probe import short_layer_name

    firsts: dict[str, str] = {}
    for name in load_model(model).layer_names:
        short = short_layer_name(name)
        firsts.setdefault(short.split(".")[0], short)
    return ",".join(firsts.values())


def figure(model: str, heldout: Path, out: Path, temperature: float, timestep: int) -> None:
    """``leffa viz-flow --gt-flow`` on the first held-out sample (the figure in docs/benchmarks.md)."""
    split = heldout / "test"
    name = sorted((split / "gt-flow").glob("*.npy"))[0].stem
    subprocess.run(
        [
            "leffa",
            "viz-flow",
            str(split / "image" / f"{name}.jpg"),
            str(split / "cloth" / f"{name}.jpg"),
            "--model",
            model,
            "--mask",
            str(split / "agnostic-mask" / f"{name}_mask.png"),
            "--densepose",
            str(split / "image-densepose" / f"{name}.jpg"),
            "--gt-flow",
            str(split / "gt-flow" / f"{name}.npy"),
            "--target",
            str(split / "image" / f"{name}.jpg"),
            "--t",
            str(timestep),
            "--temperature",
            str(temperature),
            "--layers",
            figure_layers(model),
            "--device",
            "cpu",
            "-o",
            str(out),
        ],
        check=True,
        capture_output=True,
    )


def table(results: dict, constant: float) -> str:
    layers = [name for name in next(iter(results.values()))["epe"] if name != "mean"]
    header = "| arm | " + " | ".join(f"EPE {n}" for n in layers) + " | mean EPE | masked PSNR |"
    lines = [header, "|" + "---|" * (len(layers) + 3)]
    for arm, result in results.items():
        cells = " | ".join(f"{result['epe'][n]:.2f}" for n in layers)
        lines.append(f"| {arm} | {cells} | **{result['epe']['mean']:.2f}** | {result['psnr_mask']:.2f} |")
    lines.append("")
    lines.append(f"Constant-flow EPE (each sample's mean ground-truth coordinate): {constant:.2f} px.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--init", required=True, help="checkpoint every arm starts from (model.safetensors)")
    parser.add_argument("--data", type=Path, required=True, help="synthetic training data (the checkpoint's)")
    parser.add_argument("--heldout", type=Path, required=True, help="held-out synthetic split (another seed)")
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--dropout", type=float, default=0.1, help="reference dropout (as in the recipe)")
    parser.add_argument("--arms", nargs="+", default=["0", "1e-3", "1", "10"], help="WEIGHT[@TAU]; 0 = no Leffa loss")
    parser.add_argument("--temperature", type=float, default=2.0, help="tau of arms that do not give one")
    parser.add_argument("--eval-temperature", type=float, default=2.0, help="tau of the measured flow (all arms)")
    parser.add_argument("--n-test", type=int, default=16)
    parser.add_argument("--eval-timesteps", type=int, nargs="+", default=[250])
    parser.add_argument("--sample-steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figures", type=Path, help="write the viz-flow figure of each arm into this folder")
    parser.add_argument("--processes", type=int, default=0, help="parallel arms (default: all at once)")
    parser.add_argument(
        "--trained", nargs="+", metavar="NAME=MODEL", help="evaluate these trained models instead of training arms"
    )
    parser.add_argument(
        "--gradient-share",
        type=float,
        nargs="+",
        metavar="TAU",
        help="only print the Leffa loss's gradient share at these temperatures, then exit",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.gradient_share:
        for line in gradient_share(args.init, args.data, args.gradient_share):
            print(line)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    common = {
        "out": str(args.out),
        "init": args.init,
        "data": str(args.data),
        "lr": args.lr,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "temperature": args.temperature,
        "steps": args.steps,
        "dropout": args.dropout,
    }
    arms = [dict(common, weight=w, tau=t) for w, t in map(parse_arm, args.arms)]
    processes = args.processes or len(arms) + 1
    models = {"start (the --init checkpoint)": args.init}
    if args.trained:
        for item in args.trained:
            name, _, path = item.partition("=")
            if not path or not Path(path).is_file():
                parser.error(f"--trained {item!r}: expected NAME=MODEL with an existing model file")
            models[name] = path
        processes = args.processes or len(models)
    else:
        with multiprocessing.get_context("spawn").Pool(min(processes, len(arms))) as pool:
            for done in pool.imap_unordered(train_arm, arms):
                models[done["arm"]] = done["model"]
                print(f"{done['arm']}: {args.steps} steps in {done['seconds']:.0f} s", flush=True)
    evaluations = [
        {
            "arm": arm,
            "model": path,
            "heldout": str(args.heldout),
            "eval_timesteps": args.eval_timesteps,
            "eval_temperature": args.eval_temperature,
            "seed": args.seed,
            "n_test": args.n_test,
            "sample_steps": args.sample_steps,
        }
        for arm, path in models.items()
    ]
    results = {}
    with multiprocessing.get_context("spawn").Pool(min(processes, len(evaluations))) as pool:
        for done in pool.imap_unordered(evaluate, evaluations):
            results[done["arm"]] = done
            print(
                f"{done['arm']}: mean EPE {done['epe']['mean']:.2f} px, masked PSNR {done['psnr_mask']:.2f} dB",
                flush=True,
            )
    results = {arm: results[arm] for arm in models}
    from leffa.checkpoint import load_model
    from leffa.weights import trained_size

    size = trained_size(load_model(args.init))
    text = table(results, constant_flow_epe(args.heldout, args.n_test, size))
    (args.out / "results.json").write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=1)
    )
    print(text, flush=True)
    if args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
        for arm, path in models.items():
            slug = arm.split(" ")[0]
            figure(
                path,
                args.heldout,
                args.figures / f"ablation-flow-{slug}.png",
                args.eval_temperature,
                args.eval_timesteps[0],
            )
    print(f"total {time.time() - started:.0f} s")
    if any(math.isnan(r["epe"]["mean"]) for r in results.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
