"""Image metrics as the try-on and pose-transfer papers report them: FID, KID, SSIM, LPIPS, PSNR.

Formulas come from torchmetrics (FID, KID, SSIM, PSNR; imported only when a metric runs, as the import takes
seconds); FID and KID run on the pytorch-fid Inception pool features (``leffa.metrics.inception``); LPIPS is v0.1
with the SqueezeNet backbone on [-1, 1] inputs (``leffa.metrics.lpips``). Settings follow the authors' evaluation:
SSIM and PSNR with data range 1 (Gaussian 11x11 window, sigma 1.5), KID with clean-fid's 100 subsets of at most 1000
images, reported x 1000. Paired mode matches predictions to ground truth by file stem and resizes the ground truth
(Lanczos) to the prediction's size when they differ; unpaired mode compares the two sets as distributions (FID, KID
only). Images stream in batches, so memory does not grow with the set.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from leffa import images
from leffa.atomic import atomic_path
from leffa.errors import LeffaError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
PAIRED_METRICS = ("fid", "kid", "ssim", "lpips", "psnr")
UNPAIRED_METRICS = ("fid", "kid")
PER_IMAGE_METRICS = ("ssim", "lpips", "psnr")
FEATURE_METRICS = ("fid", "kid")
LOWER_IS_BETTER = {"fid": True, "kid": True, "lpips": True, "ssim": False, "psnr": False}


def lower_is_better(metric: str, mode: str) -> bool | None:
    """Which direction is better for a metric (flow results: every layer's end-point error is lower-better)."""
    return True if mode == "flow" else LOWER_IS_BETTER.get(metric)
KID_SUBSETS = 100
KID_MAX_SUBSET_SIZE = 1000
KID_SCALE = 1000.0


# -- files ------------------------------------------------------------------------------------------------------


def list_images(folder: str | Path, what: str = "image folder") -> dict[str, Path]:
    """``{stem: path}`` of the images directly in ``folder``; a stem used twice (a.png, a.jpg) is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LeffaError(f"{folder}: {what} not found")
    images: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in images:
            raise LeffaError(f"{path}: two images named {path.stem!r} in {folder} ({images[path.stem].name} too)")
        images[path.stem] = path
    if not images:
        raise LeffaError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in the {what}")
    return images


def match_pairs(pred_dir: str | Path, gt_dir: str | Path, allow_extra_gt: bool = False) -> list[tuple[Path, Path]]:
    """(prediction, ground truth) pairs matched by stem; any prediction without ground truth is an error.

    Ground-truth images without a prediction are an error too, unless ``allow_extra_gt`` (scoring a subset).
    """
    preds = list_images(pred_dir, "prediction folder")
    gts = list_images(gt_dir, "ground-truth folder")
    missing = [stem for stem in preds if stem not in gts]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise LeffaError(f"{preds[missing[0]]}: no ground truth named {missing[0]!r} in {gt_dir}{more}")
    extra = [stem for stem in gts if stem not in preds]
    if extra and not allow_extra_gt:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        raise LeffaError(
            f"{gts[extra[0]]}: no prediction named {extra[0]!r} in {pred_dir}{more} (allow_extra_gt to score a subset)",
            option="allow_extra_gt",
        )
    return [(preds[stem], gts[stem]) for stem in preds]


def load_image(path: str | Path, size: tuple[int, int] | None = None, role: str = "image") -> torch.Tensor:
    """RGB image as ``(3, H, W)`` float in [0, 1]; resized (``leffa.images.IMAGE_FILTER``, Lanczos) to
    ``size`` = (H, W) when it differs."""
    return images.unit_tensor(images.open_image(path, role), size)


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image without decoding its pixels."""
    return images.image_size(path)


def batches(items: Sequence, batch_size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def _stack_by_size(tensors: list[torch.Tensor]) -> Iterator[torch.Tensor]:
    """Stack consecutive same-sized images; a size change starts a new stack (images of mixed sizes stay valid)."""
    group: list[torch.Tensor] = []
    for tensor in tensors:
        if group and tensor.shape != group[0].shape:
            yield torch.stack(group)
            group = []
        group.append(tensor)
    if group:
        yield torch.stack(group)


# -- per-pair metrics -------------------------------------------------------------------------------------------


SSIM_SIGMA = 1.5
SSIM_BORDER = int(3.5 * SSIM_SIGMA + 0.5)  # Gaussian window radius: 11x11 window


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM per pair ``(B,)`` of images in [0, 1] (data range 1, Gaussian 11x11, sigma 1.5, mean over RGB).

    torchmetrics' SSIM map, averaged over the pixels whose window lies inside the image, as scikit-image and the
    reference MATLAB code do (torchmetrics' own mean also counts the reflection-padded border).
    """
    from torchmetrics.functional.image import structural_similarity_index_measure  # slow import: only when used

    border = SSIM_BORDER
    if min(pred.shape[-2:]) <= 2 * border:
        raise LeffaError(f"SSIM needs images larger than {2 * border}x{2 * border}, got {pred.shape[-1]}x{pred.shape[-2]}")
    _, ssim_map = structural_similarity_index_measure(
        pred, target, sigma=SSIM_SIGMA, data_range=1.0, reduction="none", return_full_image=True
    )
    return ssim_map[..., border:-border, border:-border].mean(dim=(1, 2, 3))


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per pair ``(B,)`` of images in [0, 1] (data range 1)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3)).reshape(-1)


def lpips_distance(network: nn.Module, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """LPIPS per pair ``(B,)``: images in [0, 1] are mapped to the [-1, 1] the network was trained on."""
    return network(pred * 2 - 1, target * 2 - 1).reshape(-1)


# -- set metrics ------------------------------------------------------------------------------------------------


class FeatureSetMetrics:
    """FID and KID of a predicted set against a real set, accumulated batch by batch on one feature network.

    ``feature_network`` maps images ``(B, 3, H, W)`` in [0, 1] to ``(B, d)``; features are computed once and
    shared by both metrics. KID keeps every feature (n x d floats); FID keeps running sums only.
    """

    def __init__(self, feature_network: nn.Module, metrics: Iterable[str] = FEATURE_METRICS):
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        self.network = feature_network
        self.metrics = tuple(m for m in metrics if m in FEATURE_METRICS)
        identity = _PrecomputedFeatures(_feature_dim(feature_network))
        self.fid = FrechetInceptionDistance(feature=identity, normalize=True) if "fid" in self.metrics else None
        self.kid = None
        if "kid" in self.metrics:
            with warnings.catch_warnings():  # "KID keeps all features": known and intended (n x d floats)
                warnings.simplefilter("ignore", UserWarning)
                self.kid = KernelInceptionDistance(feature=_PrecomputedFeatures(identity.num_features), normalize=True)
        self.counts = {True: 0, False: 0}

    @torch.no_grad()
    def update(self, images: torch.Tensor, real: bool) -> None:
        device = module_device(self.network)
        features = self.network(images.to(device)).double().cpu()  # KID's cubic kernel wants the precision
        for metric in (self.fid, self.kid):
            if metric is not None:
                metric.update(features, real=real)
        self.counts[real] += images.shape[0]

    def compute(self, seed: int = 0) -> dict[str, float]:
        """``{"fid", "kid", "kid_std"}`` (KID x 1000, clean-fid's subsets); KID subsets are drawn with ``seed``."""
        smallest = min(self.counts.values())
        if smallest < 2:
            raise LeffaError(f"FID/KID need at least 2 images in each set, got {self.counts[False]} and {self.counts[True]}")
        scores: dict[str, float] = {}
        if self.fid is not None:
            scores["fid"] = float(self.fid.compute())
        if self.kid is not None:
            self.kid.subsets, self.kid.subset_size = KID_SUBSETS, min(KID_MAX_SUBSET_SIZE, smallest)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                mean, std = self.kid.compute()
            scores["kid"], scores["kid_std"] = float(mean) * KID_SCALE, float(std) * KID_SCALE
        return scores


class _PrecomputedFeatures(nn.Module):
    """Identity 'feature network' so torchmetrics takes features we computed once for both FID and KID."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def module_device(module: nn.Module) -> torch.device:
    """Where a network's weights live (CPU for a network without parameters)."""
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _feature_dim(network: nn.Module) -> int:
    dim = getattr(network, "num_features", None)
    if isinstance(dim, int):
        return dim
    with torch.no_grad():
        return int(network(torch.rand(1, 3, 64, 64, device=module_device(network))).shape[-1])


# -- whole folders ----------------------------------------------------------------------------------------------


@dataclass
class MetricNetworks:
    """The networks the chosen metrics need: ``inception`` for FID/KID, ``lpips`` for LPIPS (tests inject stand-ins)."""

    inception: nn.Module | None = None
    lpips: nn.Module | None = None


def load_metric_networks(
    metrics: Iterable[str],
    inception: str | Path | None = None,
    lpips: str | Path | None = None,
    offline: bool = False,
    device: str | torch.device = "cpu",
) -> MetricNetworks:
    """The networks ``metrics`` need, from local paths or their published sources (``leffa.metrics.weights``)."""
    from leffa.metrics.inception import load_fid_inception
    from leffa.metrics.lpips import load_lpips
    from leffa.metrics.weights import inception_weights, lpips_weights

    metrics = tuple(metrics)
    networks = MetricNetworks()
    if any(metric in FEATURE_METRICS for metric in metrics):
        networks.inception = load_fid_inception(inception_weights(inception, offline)).to(device)
    if "lpips" in metrics:
        networks.lpips = load_lpips(*lpips_weights(lpips, offline)).to(device)
    return networks


@dataclass
class EvalResult:
    """Scores of one evaluation, with what was compared and how; ``per_image`` holds the paired per-pair scores."""

    mode: str
    count: int
    metrics: dict[str, float]
    pred: str
    gt: str
    settings: dict = field(default_factory=dict)
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    name: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def check_metrics(metrics: Iterable[str], paired: bool) -> tuple[str, ...]:
    """Validate a metric selection for the mode, in the canonical order."""
    allowed = PAIRED_METRICS if paired else UNPAIRED_METRICS
    chosen = set(metrics)
    unknown = sorted(chosen - set(allowed))
    if unknown:
        mode = "paired" if paired else "unpaired"
        raise LeffaError(
            f"metrics: {unknown[0]!r} is not one of the {mode} scores ({', '.join(allowed)})", option="metrics"
        )
    if not chosen:
        raise LeffaError("metrics: choose at least one metric", option="metrics")
    return tuple(m for m in allowed if m in chosen)


def _needs(metrics: Sequence[str], networks: MetricNetworks, name: str) -> nn.Module:
    """``networks.<name>`` (``inception`` or ``lpips``), which ``metrics`` need; absent is a one-line error."""
    network = getattr(networks, name)
    if network is None:
        what = "FID/KID need the Inception network" if name == "inception" else "LPIPS needs its network"
        source = "the downloaded pytorch-fid weights" if name == "inception" else "the downloaded SqueezeNet weights"
        raise LeffaError(f"{what} ({name} FILE, or {source})", option=name)
    return network


Progress = Callable[[int, int], None]


@torch.no_grad()
def evaluate_paired(
    pairs: Sequence[tuple[Path, Path]],
    networks: MetricNetworks,
    metrics: Sequence[str] = PAIRED_METRICS,
    batch_size: int = 16,
    progress: Progress | None = None,
    device: str | torch.device = "cpu",
) -> EvalResult:
    """Score predictions against their own ground truth (SSIM, PSNR, LPIPS per pair; FID, KID over the sets).

    Every metric runs on ``device`` (the networks must already be there)."""
    metrics = check_metrics(metrics, paired=True)
    features = any(m in FEATURE_METRICS for m in metrics)
    inception = _needs(metrics, networks, "inception") if features else None
    lpips = _needs(metrics, networks, "lpips") if "lpips" in metrics else None
    if not pairs:
        raise LeffaError("no image pairs to evaluate")
    sets = FeatureSetMetrics(inception, metrics) if inception is not None else None
    per_image: dict[str, dict[str, float]] = {}
    done = 0
    for chunk in batches(pairs, batch_size):
        preds = [load_image(pred, role="prediction") for pred, _ in chunk]
        gts = [load_image(gt, (p.shape[1], p.shape[2]), "ground truth") for (_, gt), p in zip(chunk, preds)]
        stems = [pred.stem for pred, _ in chunk]
        offset = 0
        for pred_stack, gt_stack in zip(_stack_by_size(preds), _stack_by_size(gts)):
            pred_stack, gt_stack = pred_stack.to(device), gt_stack.to(device)
            scores: dict[str, torch.Tensor] = {}
            if "ssim" in metrics:
                scores["ssim"] = ssim(pred_stack, gt_stack).cpu()
            if "psnr" in metrics:
                scores["psnr"] = psnr(pred_stack, gt_stack).cpu()
            if lpips is not None:
                scores["lpips"] = lpips_distance(lpips, pred_stack, gt_stack).cpu()
            if sets is not None:
                sets.update(gt_stack, real=True)
                sets.update(pred_stack, real=False)
            for index in range(pred_stack.shape[0]):
                per_image[stems[offset + index]] = {name: float(value[index]) for name, value in scores.items()}
            offset += pred_stack.shape[0]
        done += len(chunk)
        if progress is not None:
            progress(done, len(pairs))
    summary = {name: _mean(per_image, name) for name in PER_IMAGE_METRICS if name in metrics}
    if sets is not None:
        summary.update(sets.compute())
    ordered = {name: summary[name] for name in (*PAIRED_METRICS, "kid_std") if name in summary}
    return EvalResult(
        mode="paired",
        count=len(pairs),
        metrics=ordered,
        pred=str(pairs[0][0].parent),
        gt=str(pairs[0][1].parent),
        settings=evaluation_settings(metrics, len(pairs), len(pairs)),
        per_image=per_image,
    )


@torch.no_grad()
def evaluate_unpaired(
    pred_paths: Sequence[Path],
    gt_paths: Sequence[Path],
    networks: MetricNetworks,
    metrics: Sequence[str] = UNPAIRED_METRICS,
    batch_size: int = 16,
    progress: Progress | None = None,
) -> EvalResult:
    """Compare two image sets as distributions (FID, KID). Ground truth is resized to the predictions' size when
    all predictions share one size (as in paired mode); otherwise each set keeps its own sizes."""
    metrics = check_metrics(metrics, paired=False)
    inception = _needs(metrics, networks, "inception")  # unpaired metrics are FID and KID only
    if not pred_paths or not gt_paths:
        raise LeffaError("no images to evaluate")
    sizes = {image_size(path) for path in pred_paths}
    target_size = sizes.pop() if len(sizes) == 1 else None
    sets = FeatureSetMetrics(inception, metrics)
    total, done = len(pred_paths) + len(gt_paths), 0
    for paths, real, size in ((pred_paths, False, None), (gt_paths, True, target_size)):
        for chunk in batches(list(paths), batch_size):
            for stack in _stack_by_size([load_image(path, size=size) for path in chunk]):
                sets.update(stack, real=real)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return EvalResult(
        mode="unpaired",
        count=len(pred_paths),
        metrics=sets.compute(),
        pred=str(pred_paths[0].parent),
        gt=str(gt_paths[0].parent),
        settings=evaluation_settings(metrics, len(pred_paths), len(gt_paths)),
    )


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    networks: MetricNetworks,
    paired: bool = True,
    metrics: Sequence[str] | None = None,
    batch_size: int = 16,
    allow_extra_gt: bool = False,
    progress: Progress | None = None,
    device: str | torch.device = "cpu",
) -> EvalResult:
    """``evaluate_paired`` on stem-matched pairs, or ``evaluate_unpaired`` on all images of both folders."""
    if batch_size < 1:
        raise LeffaError(f"batch_size: must be at least 1, got {batch_size}", option="batch_size")
    if paired:
        pairs = match_pairs(pred_dir, gt_dir, allow_extra_gt=allow_extra_gt)
        return evaluate_paired(pairs, networks, metrics or PAIRED_METRICS, batch_size, progress, device)
    preds = list(list_images(pred_dir, "prediction folder").values())
    gts = list(list_images(gt_dir, "ground-truth folder").values())
    return evaluate_unpaired(preds, gts, networks, metrics or UNPAIRED_METRICS, batch_size, progress)


def evaluation_settings(metrics: Sequence[str], pred_count: int, gt_count: int) -> dict:
    """How the numbers were computed, stored beside them so runs stay comparable."""
    settings: dict = {"metrics": list(metrics), "gt_resize": "lanczos to prediction size"}
    if "ssim" in metrics:
        settings["ssim"] = "torchmetrics, data range 1, gaussian 11x11 sigma 1.5"
    if "psnr" in metrics:
        settings["psnr"] = "torchmetrics, data range 1, per image then mean"
    if "lpips" in metrics:
        settings["lpips"] = "v0.1 squeezenet, inputs in [-1, 1]"
    if "fid" in metrics or "kid" in metrics:
        settings["features"] = "pytorch-fid inception-v3 2048-d pool, bilinear resize to 299"
    if "kid" in metrics:
        settings["kid"] = f"x{KID_SCALE:g}, {KID_SUBSETS} subsets of {min(KID_MAX_SUBSET_SIZE, pred_count, gt_count)}"
    return settings


def _mean(per_image: dict[str, dict[str, float]], name: str) -> float:
    values = [scores[name] for scores in per_image.values() if not math.isnan(scores[name])]
    return float(np.mean(values)) if values else float("nan")


# -- results files ----------------------------------------------------------------------------------------------


def write_result(result: EvalResult, path: str | Path) -> None:
    """Write an evaluation result as JSON, atomically."""
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(result.to_dict(), indent=2, allow_nan=True) + "\n")


def read_result(path: str | Path) -> EvalResult:
    """Read a result written by ``write_result``; its name defaults to the file's stem."""
    path = Path(path)
    if not path.is_file():
        raise LeffaError(f"{path}: evaluation result not found")
    try:
        data = json.loads(path.read_text())
        result = EvalResult(**data)
    except (json.JSONDecodeError, TypeError) as error:
        raise LeffaError(f"{path}: not an evaluation result written by leffa eval ({type(error).__name__})") from None
    if not isinstance(result.metrics, dict) or not result.metrics:
        raise LeffaError(f"{path}: evaluation result has no metrics")
    result.name = result.name or path.stem
    return result
