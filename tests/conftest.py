"""Shared test fixtures: the tiny base-model folders and upstream parity data shipped in tests/fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
PARITY = FIXTURES / "upstream_parity"
TINY_SD15 = PARITY / "stable-diffusion-inpainting"
TINY_SDXL = PARITY / "stable-diffusion-xl-1.0-inpainting-0.1"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_base() -> Path:
    """A tiny SD1.5-inpainting-style base-model folder (configs only)."""
    return TINY_SD15


@pytest.fixture
def tiny_model():
    """A randomly initialised tiny Leffa model (seeded), float32, eval mode."""
    from leffa.model import LeffaModel

    torch.manual_seed(0)
    return LeffaModel.from_base_folder(TINY_SD15).eval()
