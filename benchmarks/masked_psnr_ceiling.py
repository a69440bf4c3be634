"""What does masked PSNR >= 20 dB (issue 15) demand of a try-on at the synthetic data's size?

Scores images that are *nearly* right on a held-out synthetic split, with the same ``masked_psnr`` as ``leffa eval``
(inside the agnostic mask, data range 1), so the goal can be read as a precision:

- the truth shifted by 1 or 2 pixels (everything placed right, one pixel off);
- the truth blurred (Gaussian, sigma 1 or 2 pixels);
- the truth with the garment in its own mean colour (colours right, no pattern);
- the truth with the garment copied from the reference along the ground-truth flow (the copy a perfect attention
  makes), exactly and displaced by 1 or 2 pixels;
- with ``--attention-model``, per attention layer of that model (best layer and mean of layers):
  - the garment copied along the layer's flow (``leffa.probe``, as ``leffa eval --flow``, tau 2): what a generating
    UNet would score if it copied exactly the pixel its attention's *mean* coordinate points at (the quantity the
    Leffa loss trains and the EPE scores);
  - the garment copied *through* the layer's attention maps as the forward pass uses them (tau 1, reference keys,
    each head on its own, the best head per sample): each garment token gets the attention-weighted mean of the
    reference's token colours, upsampled. A map can have the right mean coordinate while its mass is spread (or
    partly on the white background), so this is the copy the attention really makes;
  - the maps' spread: RMS distance (pixels) of each head's mass from its own mean, on garment tokens;
- with ``--pred``: a model's own images (``leffa eval --run``'s ``pred`` folder), the same images with the garment
  pixels taken from the truth (the error left outside the garment), each part of the mask scored alone, and the
  share of the squared error that is on the garment.

The garment is the pixels with a ground-truth correspondence (``gt-flow``). ``--draw 1 2 4`` also draws held-out
splits at those pattern scales (``leffa prep synth --seed 1``, ``--shading`` as given) and scores the oracles there.

    OMP_NUM_THREADS=1 python benchmarks/masked_psnr_ceiling.py --heldout runs/shaded2/heldout \
        --pred runs/bench-final/paired/pred --attention-model runs/shaded2/final-leffa/model.safetensors \
        --draw 1 2 4 --out runs/ceiling
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from leffa.flow import attention_map, coordinate_grid, token_grid, upsample_flow, warp
from leffa.images import read_rgb, unit_tensor
from leffa.metrics.flow import FlowDataset
from leffa.metrics.masked import masked_psnr

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts, imported as modules
from synth_tiny import ensure_data  # noqa: E402  (draws a held-out split as the recipe draws its data)


def shifted(image: torch.Tensor, pixels: int) -> torch.Tensor:
    """``image`` (1, 3, H, W) moved ``pixels`` to the right, the left edge repeated."""
    return torch.cat([image[..., :1].expand(*image.shape[:-1], pixels), image[..., :-pixels]], dim=-1)


def blurred(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``image`` (1, 3, H, W), edges replicated."""
    radius = int(3 * sigma + 0.5)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=image.dtype) / sigma) ** 2)
    taps = taps / taps.sum()
    padded = F.pad(image, (radius, radius, radius, radius), mode="replicate")
    rows = F.conv2d(padded, taps.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    return F.conv2d(rows, taps.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)


def with_garment(truth: torch.Tensor, garment: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """The truth with the garment pixels (``garment`` (1, 1, H, W) bool) taken from ``fill``."""
    return torch.where(garment, fill, truth)


def displaced(flow: torch.Tensor, pixels: float) -> torch.Tensor:
    """A flow (1, H, W, 2) in normalised units pointing ``pixels`` further right in the reference."""
    return flow + torch.tensor([2 * pixels / flow.shape[2], 0.0])


def oracle_images(
    truth: torch.Tensor, reference: torch.Tensor, flow: torch.Tensor, garment: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The nearly-right images of one sample, images (1, 3, H, W) in [0, 1], ``flow`` (1, H, W, 2) with NaN off
    the garment, ``garment`` (1, 1, H, W) bool where it is not."""
    clean = torch.nan_to_num(flow)
    mean_colour = (truth * garment).sum(dim=(2, 3), keepdim=True) / garment.sum().clamp(min=1)
    images = {
        "truth shifted 1 px": shifted(truth, 1),
        "truth shifted 2 px": shifted(truth, 2),
        "truth blurred, sigma 1 px": blurred(truth, 1.0),
        "truth blurred, sigma 2 px": blurred(truth, 2.0),
        "garment in its mean colour": with_garment(truth, garment, mean_colour.expand_as(truth)),
    }
    for pixels in (0, 1, 2):
        label = "garment copied along the true flow" + (f", {pixels} px off" if pixels else "")
        images[label] = with_garment(truth, garment, warp(reference, displaced(clean, pixels)))
    return images


def attention_copy(
    queries: torch.Tensor, keys: torch.Tensor, reference: torch.Tensor, garment: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """What one layer's real attention (tau 1, reference keys) fetches, head by head: the reference's token colours
    averaged through each head's map, upsampled to the image, (heads, 3, H, W); and the heads' RMS spread in image
    pixels around their own mean coordinates, averaged over the query tokens mostly on the ``garment``
    ((1, 1, H, W) bool)."""
    height, width = token_grid(keys.shape[2], *reference.shape[-2:])
    on_garment = F.adaptive_avg_pool2d(garment.float(), (height, width)).flatten() > 0.5
    colours = F.adaptive_avg_pool2d(reference, (height, width)).flatten(2).transpose(1, 2)  # (1, n, 3)
    pixels = coordinate_grid(height, width) * torch.tensor([reference.shape[-1] / 2, reference.shape[-2] / 2])
    copies, spreads = [], []
    for head in range(queries.shape[1]):
        weights = attention_map(queries[:, head : head + 1].float(), keys[:, head : head + 1].float(), 1.0)[0]
        tokens = (weights @ colours[0]).T.reshape(1, 3, height, width)
        copies.append(F.interpolate(tokens, size=tuple(reference.shape[-2:]), mode="bilinear", align_corners=False))
        centre = weights @ pixels
        spreads.append(((weights @ pixels.square()).sum(-1) - centre.square().sum(-1)).clamp(min=0).sqrt())
    return torch.cat(copies), float(torch.stack(spreads)[:, on_garment].mean())


def split_scores(
    heldout: Path, n: int, attention_model: str | None, pred: Path | None, timestep: int, temperature: float
) -> dict[str, float]:
    """Mean masked PSNR (dB) of every oracle (and of ``pred``) over the first ``n`` held-out samples."""
    dataset = FlowDataset(heldout, "test", limit=n)
    model = None
    if attention_model:
        from leffa.checkpoint import load_model
        from leffa.probe import capture_attention, layer_flows, short_layer_name

        model = load_model(attention_model).float().eval()
    scores: dict[str, list[float]] = {}
    spreads: dict[str, list[float]] = {}

    def add(label: str, image: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> None:
        scores.setdefault(label, []).append(float(masked_psnr(image.clamp(0, 1), truth, mask)[0]))

    for position in range(len(dataset)):
        name, sample = dataset[position]
        truth, reference = sample.target / 2 + 0.5, sample.reference / 2 + 0.5
        mask, flow = sample.mask, sample.gt_flow
        garment = ~torch.isnan(flow[..., 0])[:, None]
        for label, image in oracle_images(truth, reference, flow, garment).items():
            add(label, image, truth, mask)
        if model is not None:
            size = tuple(truth.shape[-2:])
            captured = capture_attention(
                model, sample.target, sample.reference, sample.mask, sample.densepose, timestep
            )  # fmt: skip
            flows, _ = layer_flows(captured, size, temperature=temperature)
            for layer, (queries, keys) in captured.items():
                short = short_layer_name(layer)
                copied = warp(reference, upsample_flow(flows[layer].float(), size))
                add(f"flow copy: {short}", with_garment(truth, garment, copied), truth, mask)
                through, spread = attention_copy(queries, keys, reference, garment)
                heads = [
                    float(masked_psnr(with_garment(truth, garment, copy[None]), truth, mask)[0]) for copy in through
                ]
                scores.setdefault(f"attention copy: {short}", []).append(max(heads))
                spreads.setdefault(short, []).append(spread)
        if pred is not None:
            image = unit_tensor(read_rgb(pred / f"{name}.png"), tuple(truth.shape[-2:]))[None]
            add("the model's image", image, truth, mask)
            add("the model's image, garment pixels from the truth", with_garment(image, garment, truth), truth, mask)
            inside = mask > 0.5
            add("the model's image: the garment's pixels alone", image, truth, (inside & garment).float())
            add("the model's image: the rest of the mask alone", image, truth, (inside & ~garment).float())
            error = (image - truth).square().sum(dim=1, keepdim=True)
            share = float(error[inside & garment].sum() / error[inside].sum())
            scores.setdefault("share of the model's squared error (in the mask) on the garment; not dB", []).append(
                share
            )
    means = {label: float(np.mean(values)) for label, values in scores.items()}
    for kind, title in (("flow copy", "along its flow"), ("attention copy", "through its attention map")):
        layers = {label: value for label, value in means.items() if label.startswith(kind)}
        if layers:
            best = max(layers, key=layers.__getitem__)
            means = {label: value for label, value in means.items() if label not in layers}
            means[f"garment copied {title}: best layer ({best.split(': ')[1]})"] = layers[best]
            means[f"garment copied {title}: mean of layers"] = float(np.mean(list(layers.values())))
    if spreads:
        means["attention spread on the garment, px (mean of layers; not dB)"] = float(
            np.mean([np.mean(values) for values in spreads.values()])
        )
    return means


def draw(out: Path, pattern_scale: float, shading: float, n: int, size: str) -> Path:
    folder = out / f"pattern-scale-{pattern_scale:g}"
    ensure_data(folder, n, size, pattern_scale, shading)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heldout", type=Path, required=True, help="held-out synthetic split (with gt-flow/)")
    parser.add_argument("--n", type=int, default=64, help="held-out samples")
    parser.add_argument("--pred", type=Path, help="a model's paired images of --heldout (leffa eval --run's pred)")
    parser.add_argument("--attention-model", help="a model whose attention flows are copied along")
    parser.add_argument("--timestep", type=int, default=250)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--draw", type=float, nargs="*", default=[], help="also draw and score these pattern scales")
    parser.add_argument("--shading", type=float, default=0.6, help="--shading of the drawn splits")
    parser.add_argument("--size", default="64x48")
    parser.add_argument("--out", type=Path, default=Path("runs/masked-psnr-ceiling"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    columns = {str(args.heldout): split_scores(args.heldout, args.n, args.attention_model, args.pred, args.timestep,
                                               args.temperature)}  # fmt: skip
    for scale in args.draw:
        folder = draw(args.out, scale, args.shading, args.n, args.size)
        columns[f"pattern scale {scale:g}"] = split_scores(folder, args.n, None, None, args.timestep, args.temperature)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(columns, indent=2) + "\n")
    names = list(columns)
    print("| image (masked PSNR, dB, mean of " + str(args.n) + " held-out samples) | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for label in columns[names[0]]:
        cells = [f"{columns[name][label]:.2f}" if label in columns[name] else "-" for name in names]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
