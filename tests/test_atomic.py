"""Atomic writes keep the user's umask, even when the writer recreates the temporary file."""

from __future__ import annotations

import os
import stat

import torch
from safetensors.torch import save_file

from leffa.atomic import atomic_path


def test_a_saved_safetensors_file_follows_the_umask(tmp_path):
    """safetensors' save_file recreates its file private (0600); the published file must be 0666 & ~umask."""
    previous = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "weights.safetensors") as temp:
            save_file({"a": torch.zeros(2)}, str(temp))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "weights.safetensors").stat().st_mode) == 0o644
    assert list(tmp_path.iterdir()) == [tmp_path / "weights.safetensors"]  # no temporary left behind
