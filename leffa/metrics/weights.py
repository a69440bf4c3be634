"""Where the metric networks' weights come from: a local path, or the hub cache like model weights.

The Inception (FID/KID) and LPIPS files are the published ones, unchanged, under their published names. By default
they are fetched with ``leffa.hub.fetch`` from the repository ``LEFFA_EVAL_WEIGHTS_REPO`` (default
``DEFAULT_EVAL_WEIGHTS_REPO``), so ``--offline``, ``HF_HOME`` and hub mirrors work as for model weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from leffa.errors import LeffaError
from leffa.hub import fetch

DEFAULT_EVAL_WEIGHTS_REPO = "leffa-project/eval-weights"
INCEPTION_HUB_FILE = "pt_inception-2015-12-05-6726825d.pth"
SQUEEZENET_HUB_FILE = "squeezenet1_1-b8a52dc0.pth"
LPIPS_LINEAR_HUB_FILE = "lpips/v0.1/squeeze.pth"


def eval_weights_repo(repo_id: str | None = None) -> str:
    """The hub repository holding the metric weights: the argument, ``LEFFA_EVAL_WEIGHTS_REPO``, or the default."""
    return repo_id or os.environ.get("LEFFA_EVAL_WEIGHTS_REPO") or DEFAULT_EVAL_WEIGHTS_REPO


def inception_weights(path: str | Path | None = None, repo_id: str | None = None, offline: bool = False) -> Path:
    """The pytorch-fid Inception file: ``path`` when given, else fetched from the hub (or its cache)."""
    if path is not None:
        return Path(path)
    return fetch(INCEPTION_HUB_FILE, eval_weights_repo(repo_id), offline=offline)


def lpips_weights(
    path: str | Path | None = None, repo_id: str | None = None, offline: bool = False
) -> tuple[Path, Path]:
    """(SqueezeNet 1.1 file, LPIPS ``squeeze.pth``): from folder ``path`` (both files in it), else from the hub."""
    if path is not None:
        folder = Path(path)
        if not folder.is_dir():
            raise LeffaError(f"lpips {folder}: expected a folder holding {SQUEEZENET_HUB_FILE} and squeeze.pth", option="lpips")
        return folder / SQUEEZENET_HUB_FILE, folder / "squeeze.pth"
    repo = eval_weights_repo(repo_id)
    return fetch(SQUEEZENET_HUB_FILE, repo, offline=offline), fetch(LPIPS_LINEAR_HUB_FILE, repo, offline=offline)


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
            raise LeffaError(f"{path}: {key} has shape {tuple(tensor.shape)}, {what} expects {tuple(expected[key].shape)}")
    module.load_state_dict(state, strict=False)

