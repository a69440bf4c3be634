"""Where the metric networks' weights come from: the files the field publishes, under their published names.

- FID/KID Inception: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (its GitHub release ``fid_weights``);
- LPIPS backbone: torchvision's ``squeezenet1_1-b8a52dc0.pth`` (download.pytorch.org);
- LPIPS v0.1 linear layers: ``squeeze.pth`` as torchmetrics ships it inside its package (the ``lpips`` package's
  ``weights/v0.1/squeeze.pth``), so it needs no download.

The two downloads live in torch's hub cache (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch``), the
folder pytorch-fid and torchvision use for the same files, so a machine that ran either has them already; copy them
there for offline use, or pass ``--inception FILE`` / ``--lpips FILE``. ``--offline`` (or ``HF_HUB_OFFLINE=1``)
and an unreachable host fail at once with one line naming the URL and the folder (``leffa.hub.download_url``).

Why plain-torch networks and not torchmetrics' ``FrechetInceptionDistance(feature=2048)`` and
``LearnedPerceptualImagePatchSimilarity``: both build their networks through torchvision (FID via torch-fidelity),
and torchvision 0.28.0, the release paired with torch 2.13, does not import beside the torch 2.13.0 CPU build this
project pins (``RuntimeError: operator torchvision::nms does not exist``); once installed it also breaks
``import torchmetrics.functional.image`` (measured, see docs/evaluation.md). The formulas are still torchmetrics'
(FID, KID on our features) and the networks are tested equal to the reference implementations.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import torch
from torch import nn

from leffa.errors import LeffaError
from leffa.hub import MissingWeights, download_url

INCEPTION_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
SQUEEZENET_URL = "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth"
INCEPTION_FILE = INCEPTION_URL.rsplit("/", 1)[-1]
SQUEEZENET_FILE = SQUEEZENET_URL.rsplit("/", 1)[-1]
LPIPS_LINEAR_FILE = "squeeze.pth"


def weights_cache() -> Path:
    """torch's hub cache for downloaded checkpoints (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _sha256_prefix(url: str) -> str:
    """torchvision's file names end in the first hex digits of the file's SHA-256 (``...-b8a52dc0.pth``); torch
    checks them after a download. pytorch-fid loads its file without that check, so it is not asked for there."""
    return Path(url).stem.rsplit("-", 1)[-1]


def inception_weights(path: str | Path | None = None, offline: bool = False) -> Path:
    """The pytorch-fid Inception file: ``path`` when given, else from torch's hub cache (downloaded when needed)."""
    if path is not None:
        return Path(path)
    try:
        return download_url(INCEPTION_URL, weights_cache(), offline, "FID Inception weights")
    except MissingWeights as error:
        raise error.or_else("pass --inception FILE") from None


def packaged_lpips_linear() -> Path:
    """LPIPS v0.1 ``squeeze.pth`` from inside the installed torchmetrics package."""
    resource = importlib.resources.files("torchmetrics.functional.image").joinpath("lpips_models", LPIPS_LINEAR_FILE)
    if not resource.is_file():
        raise LeffaError(
            f"torchmetrics {_torchmetrics_version()} ships no lpips_models/{LPIPS_LINEAR_FILE}; "
            "pass --lpips FOLDER holding squeezenet1_1-b8a52dc0.pth and squeeze.pth"
        )
    return Path(str(resource))


def _torchmetrics_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("torchmetrics")


def lpips_weights(path: str | Path | None = None, offline: bool = False) -> tuple[Path, Path]:
    """(SqueezeNet 1.1 file, LPIPS ``squeeze.pth``).

    ``path`` is the SqueezeNet file, or a folder holding it (and optionally its own ``squeeze.pth``); without
    ``path`` the backbone comes from torch's hub cache (downloaded when needed). The linear layers are torchmetrics'
    packaged file unless the folder has one.
    """
    if path is not None:
        path = Path(path)
        if path.is_dir():
            linear = path / LPIPS_LINEAR_FILE
            return path / SQUEEZENET_FILE, linear if linear.is_file() else packaged_lpips_linear()
        return path, packaged_lpips_linear()
    try:
        backbone = download_url(
            SQUEEZENET_URL, weights_cache(), offline, "LPIPS backbone", _sha256_prefix(SQUEEZENET_URL)
        )
    except MissingWeights as error:
        raise error.or_else("pass --lpips FILE") from None
    return backbone, packaged_lpips_linear()


def load_state_dict_file(module: nn.Module, path: str | Path, what: str, ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Load a published ``.pth`` state dict into ``module`` (weights only), naming the file in every error.

    ``num_batches_tracked`` buffers may be present or absent (older files lack them); keys under
    ``ignore_prefixes`` (a classifier we do not use) are dropped; any other mismatch is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise LeffaError(f"{path}: {what} weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling problem is a bad file for the user
        raise LeffaError(f"{path}: not a loadable {what} weights file ({type(error).__name__})") from None
    if not isinstance(state, dict):
        raise LeffaError(f"{path}: not a state dict of {what} weights")
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        detail = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise LeffaError(
            f"{path}: not the {what} weights ({len(missing)} keys missing, {len(unexpected)} unexpected; {detail})"
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise LeffaError(
                f"{path}: {key} has shape {tuple(tensor.shape)}, {what} expects {tuple(expected[key].shape)}"
            )
    module.load_state_dict(state, strict=False)
