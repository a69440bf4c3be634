"""leffa: controllable person image generation (virtual try-on, pose transfer) with Leffa attention flow.

The stable Python API, importable from ``leffa`` directly (loaded on first use, so ``import leffa`` stays light):

- ``TryOnPipeline``, ``PosePipeline``, ``PipelineOutput``: load a model once, call it with images (docs/python.md).
- ``LeffaModel``, ``LeffaConfig``: the two-UNet model and its config; ``leffa_loss``: the attention-flow loss.
- ``SamplerOptions``: how to sample (steps, guidance, scheduler); ``LeffaError``: the error for bad input.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from leffa.errors import LeffaError

__version__ = "0.1.0"

_LAZY = {
    "TryOnPipeline": "leffa.pipelines",
    "PosePipeline": "leffa.pipelines",
    "PipelineOutput": "leffa.pipelines",
    "LeffaModel": "leffa.model",
    "LeffaConfig": "leffa.model",
    "leffa_loss": "leffa.loss",
    "SamplerOptions": "leffa.sampler",
}

__all__ = ["LeffaError", "__version__", *_LAZY]

if TYPE_CHECKING:
    from leffa.loss import leffa_loss
    from leffa.model import LeffaConfig, LeffaModel
    from leffa.pipelines import PipelineOutput, PosePipeline, TryOnPipeline
    from leffa.sampler import SamplerOptions


def __getattr__(name: str):
    """Import the module behind a public name on first use (torch and diffusers take seconds to import)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'leffa' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
