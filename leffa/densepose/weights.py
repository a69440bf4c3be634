"""Load detectron2's DensePose weight pickle without detectron2 and without running code from the file.

A detectron2 model-zoo ``.pkl`` is ``{"model": {name: numpy.ndarray}, "__author__": ..., ...}``. Plain ``pickle.load``
would import and call whatever the file names, so :class:`SafeUnpickler` admits only what numpy arrays and plain
containers need. Names then map onto :class:`~leffa.densepose.network.DensePoseRCNN` one to one (our modules carry
detectron2's names); a weight missing from the file, a shape that differs, or a name we cannot place is an error.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from leffa.errors import LeffaError

# Buffers detectron2 may save that are not weights: the input normalisation and the cached anchors.
IGNORED_PREFIXES = ("pixel_mean", "pixel_std", "proposal_generator.anchor_generator.cell_anchors.")


def _numpy_core():
    """numpy's private core package: ``numpy._core`` since numpy 2, ``numpy.core`` before."""
    try:
        from numpy import _core

        return _core
    except ImportError:  # pragma: no cover - numpy < 2
        from numpy import core

        return core


def _allowed_globals() -> dict[tuple[str, str], object]:
    core = _numpy_core()
    multiarray = core.multiarray
    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): __import__("collections").OrderedDict,
        # Protocol-2 pickles written by Python 3 store bytes as _codecs.encode(text, "latin1").
        ("_codecs", "encode"): __import__("_codecs").encode,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        # Protocol 5 pickles of arrays (numpy >= 1.16 writing them) rebuild through numeric._frombuffer.
        allowed[(f"{package}.numeric", "_frombuffer")] = core.numeric._frombuffer
    # numpy>=1.25 pickles dtypes of arrays as numpy.dtypes.Float32DType etc. in some protocols.
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in dir(dtypes):
            if name.endswith("DType"):
                allowed[("numpy.dtypes", name)] = getattr(dtypes, name)
    return allowed


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a callable outside the allowed set (it could run code)."""


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy array reconstruction and plain containers; anything else is refused."""

    _allowed: dict[tuple[str, str], object] | None = None

    def find_class(self, module: str, name: str):
        if SafeUnpickler._allowed is None:
            SafeUnpickler._allowed = _allowed_globals()
        try:
            return SafeUnpickler._allowed[(module, name)]
        except KeyError:
            raise RefusedGlobal(f"global '{module}.{name}' is not allowed in a weight file") from None


def read_detectron2_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """The ``{name: array}`` weights of a detectron2 ``.pkl`` (model-zoo format), read without executing code."""
    path = Path(path)
    if not path.is_file():
        raise LeffaError(f"{path}: DensePose weight file not found")
    if zipfile.is_zipfile(path):  # saved with torch.save despite the name: torch's own safe loader reads it
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any failure here is a bad file
            raise LeffaError(f"{path}: refused to load the DensePose weights ({str(error).splitlines()[0]})") from None
        return _model_dict(data, path)
    try:
        with path.open("rb") as handle:
            data = SafeUnpickler(io.BufferedReader(handle), encoding="latin1").load()
    except RefusedGlobal as error:
        raise LeffaError(f"{path}: refused to load the DensePose weights ({error})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise LeffaError(f"{path}: not a readable detectron2 weight pickle ({type(error).__name__}: {error})") from None
    return _model_dict(data, path)


def _model_dict(data, path: Path) -> dict:
    if isinstance(data, dict) and "blobs" in data:
        raise LeffaError(f"{path}: Caffe2/Detectron1-format weights are not supported; use a detectron2 model-zoo .pkl")
    weights = data.get("model") if isinstance(data, dict) else None
    if not isinstance(weights, dict):
        raise LeffaError(f"{path}: not a detectron2 weight pickle (no 'model' dictionary)")
    if any(not isinstance(k, str) for k in weights):
        raise LeffaError(f"{path}: the 'model' dictionary of the weight file has non-text names")
    return weights


def _tensor(name: str, value, path: Path) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
        return torch.from_numpy(np.ascontiguousarray(value))
    raise LeffaError(f"{path}: weight {name} is not a numeric array (got {type(value).__name__})")


def map_weights(
    weights: Mapping[str, object], model: nn.Module, path: str | Path = "<weights>"
) -> dict[str, torch.Tensor]:
    """A ``state_dict`` for ``model`` from detectron2-named weights; any unplaced, missing or misshapen weight fails."""
    path = Path(path)
    expected = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    unmapped = []
    for name, value in weights.items():
        if name.startswith(IGNORED_PREFIXES):
            continue
        if name not in expected:
            unmapped.append(name)
            continue
        tensor = _tensor(name, value, path)
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise LeffaError(
                f"{path}: weight {name} has shape {tuple(tensor.shape)}, expected {tuple(expected[name].shape)}"
            )
        state[name] = tensor.to(expected[name].dtype)
    if unmapped:
        listed = ", ".join(sorted(unmapped)[:5]) + (f" and {len(unmapped) - 5} more" if len(unmapped) > 5 else "")
        raise LeffaError(f"{path}: {len(unmapped)} weight(s) match no layer of the R50-FPN s1x model: {listed}")
    missing = [name for name in expected if name not in state]
    if missing:
        listed = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise LeffaError(f"{path}: {len(missing)} weight(s) of the R50-FPN s1x model are missing: {listed}")
    return state


_Model = TypeVar("_Model", bound=nn.Module)


def load_detectron2_weights(model: _Model, path: str | Path) -> _Model:
    """Fill ``model`` with the weights of a detectron2 DensePose pickle (or a ``.pth``/``.safetensors`` state dict)."""
    path = Path(path)
    if not path.is_file():
        raise LeffaError(f"{path}: DensePose weight file not found")
    weights: Mapping[str, object]
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        weights = load_file(str(path))
    elif path.suffix in (".pth", ".pt"):
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        loaded = loaded.get("model", loaded) if isinstance(loaded, dict) else loaded
        if not isinstance(loaded, dict):
            raise LeffaError(f"{path}: not a state dict (found {type(loaded).__name__})")
        weights = loaded
    else:
        weights = read_detectron2_pickle(path)
    model.load_state_dict(map_weights(weights, model, path), strict=True)
    return model
