"""Flow metrics on synthetic data: how far each layer's attention flow lands from the true correspondence.

Ground truth (synthetic data): ``gt-flow/NAME.npy``, float32 ``(H, W, 2)``, for every target pixel the (x, y)
reference coordinate in ``grid_sample`` units (align_corners=False), NaN where the pixel has no correspondence.
The attention flow of a layer is Leffa's ``softmax(Q K^T / (tau sqrt d))`` times the reference coordinate grid,
head-averaged, upsampled to image size (``leffa.flow``). End-point error is measured in image pixels:
``dx_px = dx * W / 2``, ``dy_px = dy * H / 2``, averaged over the pixels that have a correspondence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from leffa.errors import LeffaError
from leffa.flow import attention_flow, check_temperature, token_grid, upsample_flow
from leffa.sampler import check_seed


def _as_tensor(flow) -> torch.Tensor:
    return flow if isinstance(flow, torch.Tensor) else torch.from_numpy(np.asarray(flow))


def end_point_errors(pred_flow, gt_flow) -> torch.Tensor:
    """Per-pixel end-point error in pixels, ``(..., H, W)``, NaN where the ground truth has no correspondence.

    Both flows are ``(..., H, W, 2)`` in normalised (x, y) units; the image size is read from their shape.
    """
    pred, gt = _as_tensor(pred_flow).double(), _as_tensor(gt_flow).double()
    if pred.shape != gt.shape or pred.shape[-1] != 2:
        raise ValueError(f"flow shapes differ or are not (..., H, W, 2): {tuple(pred.shape)} vs {tuple(gt.shape)}")
    height, width = gt.shape[-3], gt.shape[-2]
    dx = (pred[..., 0] - gt[..., 0]) * width / 2
    dy = (pred[..., 1] - gt[..., 1]) * height / 2
    return torch.sqrt(dx.square() + dy.square())  # NaN propagates from the ground truth


def flow_epe(pred_flow, gt_flow) -> float:
    """Mean end-point error in pixels over the pixels with a correspondence (NaN when there are none)."""
    errors = end_point_errors(pred_flow, gt_flow)
    valid = ~torch.isnan(errors)
    return float(errors[valid].mean()) if bool(valid.any()) else float("nan")


def layer_flows(
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]],
    image_size: tuple[int, int],
    temperature: float = 2.0,
) -> dict[str, torch.Tensor]:
    """Attention flow of every captured layer, upsampled to ``image_size`` = (H, W): ``{layer: (B, H, W, 2)}``.

    ``captured`` is what ``LeffaModel.predict_noise(..., capture={})`` fills: ``{layer: (queries, reference keys)}``.
    """
    height, width = image_size
    flows = {}
    for layer, (queries, keys) in captured.items():
        grid = token_grid(keys.shape[2], height, width)
        flow = attention_flow(queries.float(), keys.float(), *grid, temperature=temperature)
        flows[layer] = upsample_flow(flow, (height, width))
    return flows


@dataclass
class FlowSample:
    """One synthetic example as model inputs: images in [-1, 1] ``(B, 3, H, W)``, mask ``(B, 1, H, W)`` (1 = regenerate),
    DensePose ``(B, 3, H, W)`` in [-1, 1], and the ground-truth flow ``(B, H, W, 2)``."""

    target: torch.Tensor
    reference: torch.Tensor
    mask: torch.Tensor
    densepose: torch.Tensor
    gt_flow: torch.Tensor


@torch.no_grad()
def capture_attention(
    model,
    sample: FlowSample,
    timestep: int,
    scheduler,
    generator: torch.Generator | None = None,
    layers=None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """One denoising step on the noised target at ``timestep``, recording each layer's queries and reference keys.

    Inputs are built as in training: the target latent noised by ``scheduler`` at ``timestep``, the masked target
    ``target * (1 - mask)`` as the inpainting condition, the clean reference latent at the same timestep.
    """
    device, dtype = model.device, model.dtype
    target = sample.target.to(device, dtype)
    mask = sample.mask.to(device, dtype)
    latents = model.encode(target, sample=False)
    masked_latents = model.encode(target * (1 - mask), sample=False)
    reference_latents = model.encode(sample.reference.to(device, dtype), sample=False)
    noise = torch.randn(latents.shape, generator=generator, device="cpu").to(device, latents.dtype)
    timesteps = torch.full((latents.shape[0],), int(timestep), device=device, dtype=torch.long)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    features = model.reference_features(reference_latents, timesteps)
    model_input = model.generative_input(noisy, mask, masked_latents, sample.densepose.to(device, dtype))
    captured: dict = {}
    model.predict_noise(model_input, timesteps, features, capture=captured, capture_layers=layers)
    return captured


def layer_flow_epe(
    model,
    sample: FlowSample,
    timestep: int,
    scheduler,
    temperature: float = 2.0,
    generator: torch.Generator | None = None,
    layers=None,
) -> dict[str, list[float]]:
    """End-point error (pixels) of each layer's attention flow, one value per sample: ``{layer: [epe, ...]}``."""
    if not 0 <= int(timestep) < scheduler.config.num_train_timesteps:
        raise LeffaError(f"--t: timestep {timestep} outside [0, {scheduler.config.num_train_timesteps})")
    height, width = sample.gt_flow.shape[1:3]
    if tuple(sample.target.shape[-2:]) != (height, width):
        raise LeffaError(
            f"ground-truth flow is {width}x{height} but the image is {sample.target.shape[-1]}x{sample.target.shape[-2]}"
        )
    captured = capture_attention(model, sample, timestep, scheduler, generator, layers)
    flows = layer_flows(captured, (height, width), temperature)
    return {
        layer: [flow_epe(flow[index].cpu(), sample.gt_flow[index]) for index in range(flow.shape[0])]
        for layer, flow in flows.items()
    }


def summarise_layer_epe(per_sample: dict[str, list[float]], downscale: dict[str, int] | None = None) -> dict[str, dict]:
    """``{layer: {"epe": mean over samples with a correspondence, "samples": n, "downscale": 1/k}}``."""
    summary = {}
    for layer, values in per_sample.items():
        finite = [v for v in values if not np.isnan(v)]
        summary[layer] = {"epe": float(np.mean(finite)) if finite else float("nan"), "samples": len(finite)}
        if downscale is not None and layer in downscale:
            summary[layer]["downscale"] = downscale[layer]
    return summary


# -- synthetic dataset folders ----------------------------------------------------------------------------------

GT_FLOW_FOLDER = "gt-flow"


def read_gt_flow(path: str | Path) -> torch.Tensor:
    """A ground-truth flow file: float32 ``(H, W, 2)``, NaN where there is no correspondence."""
    from leffa.synth.dataset import load_gt_flow

    return torch.from_numpy(load_gt_flow(path))


def _stem(name: str) -> str:
    return Path(name).stem


def gt_flow_candidates(entry) -> list[str]:
    """File names a dataset entry's flow may have: ``NAME.npy`` (try-on: the person) or ``TARGET__SOURCE.npy``
    (pose pairs, as ``leffa prep synth`` writes them)."""
    if isinstance(entry, (list, tuple)) and len(entry) == 2:
        first, second = _stem(entry[0]), _stem(entry[1])
        return [f"{first}.npy", f"{second}__{first}.npy"]
    return [f"{_stem(str(entry))}.npy"]


class FlowDataset:
    """A dataset folder in a training layout (``leffa.data``) whose split also holds ``gt-flow/``.

    Inputs come from ``leffa.data.open_dataset`` (the same preprocessing the trainer sees) at the ground truth's
    size; only entries with a flow file are kept.
    """

    def __init__(self, root: str | Path, split: str = "test", layout: str = "auto", limit: int | None = None):
        from leffa.data import open_dataset

        folder = Path(root) / split / GT_FLOW_FOLDER
        if not folder.is_dir():
            raise LeffaError(f"{Path(root) / split}: no {GT_FLOW_FOLDER}/ folder of ground-truth flows")
        first = next(iter(sorted(folder.glob("*.npy"))), None)
        if first is None:
            raise LeffaError(f"{folder}: no .npy ground-truth flows")
        self.size = tuple(read_gt_flow(first).shape[:2])
        self.dataset = open_dataset(root, layout=layout, split=split, size=self.size, mode="paired")
        self.items: list[tuple[int, Path]] = []
        for index, entry in enumerate(self.dataset.entries):
            for candidate in gt_flow_candidates(entry):
                if (folder / candidate).is_file():
                    self.items.append((index, folder / candidate))
                    break
        if not self.items:
            raise LeffaError(f"{folder}: no flow file matches an entry of the {split} pairs list")
        self.items = self.items[:limit] if limit else self.items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> tuple[str, FlowSample]:
        index, path = self.items[position]
        sample = self.dataset[index]
        gt_flow = read_gt_flow(path)
        if tuple(gt_flow.shape[:2]) != self.size:
            raise LeffaError(f"{path}: flow is {gt_flow.shape[1]}x{gt_flow.shape[0]}, the others {self.size[1]}x{self.size[0]}")
        return path.stem, FlowSample(
            sample["image"][None], sample["reference"][None], sample["mask"][None], sample["densepose"][None],
            gt_flow[None],
        )


def short_layer_name(layer: str) -> str:
    """``down_blocks.1.attentions.0.transformer_blocks.0.attn1`` -> ``down1.a0.b0`` (for tables and charts)."""
    parts = layer.split(".")
    head = {"down_blocks": "down", "up_blocks": "up", "mid_block": "mid"}.get(parts[0], parts[0])
    numbers = [p for p in parts[1:] if p.isdigit()]
    if parts[0] == "mid_block":
        return ".".join([head] + [f"{tag}{n}" for tag, n in zip("ab", numbers)])
    return ".".join([head + numbers[0]] + [f"{tag}{n}" for tag, n in zip("ab", numbers[1:])])


def evaluate_flow(
    model,
    data: str | Path,
    timestep: int = 250,
    temperature: float = 2.0,
    seed: int = 0,
    layers=None,
    limit: int | None = None,
    progress=None,
    split: str = "test",
    layout: str = "auto",
):
    """Per-layer attention-flow end-point error (pixels) of ``model`` over a synthetic dataset folder.

    Returns a ``leffa.metrics.EvalResult`` in mode ``"flow"``: metrics ``{short layer name: mean EPE}`` plus
    ``"mean"`` over layers; ``per_image`` holds every example's per-layer EPE. The noise of each example is seeded
    with ``seed`` so runs of different models see the same noisy inputs.
    """
    from diffusers import DDPMScheduler

    from leffa.metrics.scores import EvalResult

    check_temperature(temperature)
    check_seed(seed)
    scheduler = DDPMScheduler.from_config(model.config.scheduler)
    dataset = FlowDataset(data, split, layout, limit)
    per_layer: dict[str, list[float]] = {}
    per_image: dict[str, dict[str, float]] = {}
    for done in range(1, len(dataset) + 1):
        name, sample = dataset[done - 1]
        generator = torch.Generator().manual_seed(seed)
        errors = layer_flow_epe(model, sample, timestep, scheduler, temperature, generator, layers)
        per_image[name] = {short_layer_name(layer): values[0] for layer, values in errors.items()}
        for layer, values in errors.items():
            per_layer.setdefault(layer, []).extend(values)
        if progress is not None:
            progress(done, len(dataset))
    summary = summarise_layer_epe(per_layer, model.layer_downscale())
    metrics = {short_layer_name(layer): entry["epe"] for layer, entry in summary.items()}
    finite = [value for value in metrics.values() if not np.isnan(value)]
    metrics["mean"] = float(np.mean(finite)) if finite else float("nan")
    return EvalResult(
        mode="flow",
        count=len(dataset),
        metrics=metrics,
        pred="attention flow",
        gt=str(Path(data) / split / GT_FLOW_FOLDER),
        settings={
            "timestep": int(timestep),
            "temperature": temperature,
            "seed": seed,
            "unit": "pixels (dx * W / 2, dy * H / 2), mean over pixels with a correspondence, then over examples",
            "layers": {short_layer_name(layer): {"name": layer, **entry} for layer, entry in summary.items()},
        },
        per_image=per_image,
    )


def resolve_layers(selection: str | None, layer_names: list[str]) -> list[str] | None:
    """``"all"``/None -> None (every layer); else comma-separated full or short names -> full names, in model order."""
    if selection is None or selection.strip().lower() == "all":
        return None
    by_name = {name: name for name in layer_names} | {short_layer_name(name): name for name in layer_names}
    chosen = set()
    for item in (part.strip() for part in selection.split(",")):
        if item and item not in by_name:
            known = ", ".join(short_layer_name(name) for name in layer_names)
            raise LeffaError(f"--layers {item!r}: no such self-attention layer; this model has: {known}")
        if item:
            chosen.add(by_name[item])
    if not chosen:
        raise LeffaError("--layers: give 'all' or at least one layer name")
    return [name for name in layer_names if name in chosen]
