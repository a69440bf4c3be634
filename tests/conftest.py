"""Shared test fixtures: the tiny base-model folders and upstream parity data shipped in tests/fixtures."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution
from importlib.util import find_spec
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
PARITY = FIXTURES / "upstream_parity"
TINY_SD15 = PARITY / "stable-diffusion-inpainting"
TINY_SDXL = PARITY / "stable-diffusion-xl-1.0-inpainting-0.1"


def pytest_configure(config):
    """Without the package installed, every test module fails to import `leffa` and the CLI has no subcommands (they
    are entry points): say so in one line instead of dozens of collection errors. Checked before torch is imported,
    so a Python without the project's dependencies gets the same line, not an import traceback."""
    try:
        distribution("leffa")
        # Metadata alone is not enough: a stale editable install, or a leffa.egg-info in the working folder, leaves
        # it without the module or its dependencies.
        installed = all(find_spec(name) is not None for name in ("leffa", "torch", "typer"))
    except PackageNotFoundError:
        installed = False
    if not installed:
        pytest.exit(
            'leffa is not installed in this Python: run `pip install -e ".[test]"` first (README)', returncode=4
        )
    import torch

    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_base() -> Path:
    """A tiny SD1.5-inpainting-style base-model folder (configs only)."""
    return TINY_SD15


@pytest.fixture
def tiny_model():
    """A randomly initialised tiny Leffa model (seeded), float32, eval mode."""
    import torch

    from leffa.model import LeffaModel

    torch.manual_seed(0)
    return LeffaModel.from_base_folder(TINY_SD15).eval()
