"""A diffusers base-model folder (``unet/``, ``vae/``, ``scheduler/``): which files it holds, and reading a part's weights.

One home for the layout, so training (``--base`` weights for ``--init base``), ``prep synth-base --vae-from`` and
model resolution agree on what a base folder is.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from leffa.errors import LeffaError

BASE_FILES = ("unet/config.json", "vae/config.json", "scheduler/scheduler_config.json")
# a part's weights: full precision first, else diffusers' fp16 variant
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")


def part_weights_file(folder: Path, part: str) -> Path | None:
    """``folder/part/`` 's weights file (``WEIGHT_FILES`` in order), or None when it has none."""
    for name in WEIGHT_FILES:
        path = Path(folder) / part / name
        if path.is_file():
            return path
    return None


def read_part_weights(
    folder: Path, part: str, hint: str = "give a base folder with weights", option: str | None = None
) -> dict[str, torch.Tensor]:
    """``folder/part/``'s weights as a state dict; a missing file is a ``LeffaError`` naming it, then ``hint``
    (``option``: the setting the error is about)."""
    path = part_weights_file(folder, part)
    if path is None:
        raise LeffaError(f"{Path(folder) / part}: no {WEIGHT_FILES[0]}; {hint}", option=option)
    return load_file(str(path))
