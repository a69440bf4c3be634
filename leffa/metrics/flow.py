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
from typing import TYPE_CHECKING

import numpy as np
import torch

from leffa.errors import LeffaError
from leffa.flow import check_temperature, flow_epe, upsample_flow
from leffa.probe import probe_flows, short_layer_name
from leffa.sampler import check_seed

if TYPE_CHECKING:
    from leffa.data import Split


@dataclass
class FlowSample:
    """One synthetic example as model inputs: images in [-1, 1] ``(B, 3, H, W)``, mask ``(B, 1, H, W)`` (1 = regenerate),
    DensePose ``(B, 3, H, W)`` in [-1, 1], and the ground-truth flow ``(B, H, W, 2)``."""

    target: torch.Tensor
    reference: torch.Tensor
    mask: torch.Tensor
    densepose: torch.Tensor
    gt_flow: torch.Tensor


def layer_flow_epe(
    model,
    sample: FlowSample,
    timestep: int,
    temperature: float = 2.0,
    seed: int = 0,
    layers=None,
) -> dict[str, list[float]]:
    """End-point error (pixels) of each layer's attention flow, one value per sample: ``{layer: [epe, ...]}``.

    The flows are ``leffa.probe``'s (the same forward pass as ``viz-flow`` and training validation), upsampled to the
    image size (bilinear, as the Leffa loss)."""
    height, width = sample.gt_flow.shape[1:3]
    if tuple(sample.target.shape[-2:]) != (height, width):
        raise LeffaError(
            f"ground-truth flow is {width}x{height} but the image is {sample.target.shape[-1]}x{sample.target.shape[-2]}"
        )
    probe = probe_flows(
        model,
        sample.target,
        sample.reference,
        sample.mask,
        sample.densepose,
        timestep,
        layers,
        seed=seed,
        temperature=temperature,
    )
    return {
        layer: [
            flow_epe(upsample_flow(flow[index : index + 1], (height, width))[0], sample.gt_flow[index])
            for index in range(flow.shape[0])
        ]
        for layer, flow in probe.flows.items()
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

    def __init__(self, root: str | Path, split: Split = "test", layout: str = "auto", limit: int | None = None):
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
            raise LeffaError(
                f"{path}: flow is {gt_flow.shape[1]}x{gt_flow.shape[0]}, the others {self.size[1]}x{self.size[0]}"
            )
        return path.stem, FlowSample(
            sample["image"][None],
            sample["reference"][None],
            sample["mask"][None],
            sample["densepose"][None],
            gt_flow[None],
        )


def evaluate_flow(
    model,
    data: str | Path,
    timestep: int = 250,
    temperature: float = 2.0,
    seed: int = 0,
    layers=None,
    limit: int | None = None,
    progress=None,
    split: Split = "test",
    layout: str = "auto",
):
    """Per-layer attention-flow end-point error (pixels) of ``model`` over a synthetic dataset folder.

    Returns a ``leffa.metrics.EvalResult`` in mode ``"flow"``: metrics ``{short layer name: mean EPE}`` plus
    ``"mean"`` over layers; ``per_image`` holds every example's per-layer EPE. The noise of each example is seeded
    with ``seed`` so runs of different models see the same noisy inputs.
    """
    from leffa.metrics.scores import EvalResult

    check_temperature(temperature)
    check_seed(seed)
    dataset = FlowDataset(data, split, layout, limit)
    per_layer: dict[str, list[float]] = {}
    per_image: dict[str, dict[str, float]] = {}
    for done in range(1, len(dataset) + 1):
        name, sample = dataset[done - 1]
        errors = layer_flow_epe(model, sample, timestep, temperature, seed, layers)
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
