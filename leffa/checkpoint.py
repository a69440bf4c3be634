"""Loading and saving weights: upstream ``.pth`` pickles (read safely) and our self-describing safetensors.

Our format is one ``.safetensors`` file whose metadata holds the model config as JSON (``leffa_config``), so it
loads with no base-model folder. Upstream checkpoints hold one state dict with prefixes ``vae.``,
``unet_encoder.`` (reference UNet) and ``unet.`` (generative UNet) and need the base folder for the architecture.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from leffa.atomic import atomic_path
from leffa.errors import LeffaError
from leffa.model import LeffaConfig, LeffaModel
from leffa.runtime import DTYPES

FORMAT = "leffa/1"
UPSTREAM_PREFIXES = {"unet_encoder.": "reference_unet.", "unet.": "generative_unet.", "vae.": "vae."}
# Upstream weights that our model does not have on purpose: cross-attention (never used) and SDXL's added embedding.
IGNORED_UPSTREAM = (".attn2.", "generative_unet.add_embedding.", "reference_unet.add_embedding.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or upstream ``.pth``/``.bin`` file; user mistakes become one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise LeffaError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:
                return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (a safetensors handle, not a dict)
        except (SafetensorError, OSError, ValueError) as error:
            raise LeffaError(f"{path}: not a readable safetensors file ({error})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as error:  # noqa: BLE001 - any failure to unpickle a user's file is that file's problem
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise LeffaError(f"{path}: not a readable checkpoint, truncated or not a state dict ({reason})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LeffaError(f"{path}: not a state dict of tensors")
    return state


def read_config(path: str | Path) -> LeffaConfig | None:
    """The model config stored in one of our safetensors files, or ``None`` for any other file."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise LeffaError(f"{path}: not a readable safetensors file ({error})") from None
    if metadata.get("format") != FORMAT or "leffa_config" not in metadata:
        return None
    return LeffaConfig.from_json(metadata["leffa_config"], path)


def from_upstream(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename upstream keys to ours and drop the weights upstream carries but never uses."""
    renamed = {}
    for key, value in state.items():
        for old, new in UPSTREAM_PREFIXES.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        if not any(part in key if part.startswith(".") else key.startswith(part) for part in IGNORED_UPSTREAM):
            renamed[key] = value
    return renamed


def to_our_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with upstream prefixes renamed (and unused upstream weights dropped); ours pass unchanged."""
    if any(key.startswith(tuple(UPSTREAM_PREFIXES)) for key in state) and not any(
        key.startswith(("generative_unet.", "reference_unet.")) for key in state
    ):
        return from_upstream(state)
    return state


def check_matches(state: dict[str, torch.Tensor], expected: dict[str, tuple], source: str | Path) -> None:
    """Refuse any missing, unexpected or wrongly shaped weight against ``expected`` shapes, naming the first ones."""
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [key for key in expected if key in state and tuple(state[key].shape) != tuple(expected[key])]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing weights (first: {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected weights (first: {', '.join(unexpected[:3])})")
    if mismatched:
        key = mismatched[0]
        problems.append(
            f"{len(mismatched)} shape mismatches (first: {key} is {tuple(state[key].shape)}, "
            f"the model needs {tuple(expected[key])})"
        )
    if problems:
        raise LeffaError(f"{source}: checkpoint does not match the model config: {'; '.join(problems)}")


def check_finite_weights(state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Refuse weights holding NaN/Inf: they would sample an all-black or all-white image without any error."""
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise LeffaError(
                f"{source}: weight {key} holds NaN/Inf values; the checkpoint is broken "
                "(a diverged training run, or a damaged file)"
            )


def load_weights(model: LeffaModel, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Copy ``state`` into ``model`` (any float dtype), refusing any key or shape mismatch with a named example."""
    state = to_our_names(state)
    check_matches(state, {key: tuple(value.shape) for key, value in model.state_dict().items()}, source)
    check_finite_weights(state, source)
    model.load_state_dict(state, strict=True, assign=False)


class SavableModel(Protocol):
    """What ``save_model`` reads: a ``LeffaModel``, or weights gathered outside one (the trainer's)."""

    @property
    def config(self) -> LeffaConfig: ...

    def state_dict(self) -> Mapping[str, torch.Tensor]: ...


def save_model(model: SavableModel, path: str | Path, dtype: str = "fp16") -> Path:
    """Write the model as one self-describing safetensors file, atomically."""
    if dtype not in DTYPES:
        raise LeffaError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    path = Path(path)
    tensors = {key: value.detach().to("cpu", DTYPES[dtype]).contiguous() for key, value in model.state_dict().items()}
    metadata = {"format": FORMAT, "leffa_config": model.config.to_json(), "dtype": dtype}
    with atomic_path(path) as temp:
        save_file(tensors, str(temp), metadata=metadata)
    return path


def _expected_shapes(config: LeffaConfig) -> dict[str, tuple]:
    """Every weight's shape for ``config``, from a skeleton on the meta device (no memory, no random init)."""
    with torch.device("meta"):
        skeleton = LeffaModel(config)
    return {key: tuple(value.shape) for key, value in skeleton.state_dict().items()}


def _config_of(checkpoint: Path, base: str | Path | None, task: str) -> LeffaConfig:
    config = read_config(checkpoint)
    if config is None:
        if base is None:
            if not checkpoint.is_file():
                raise LeffaError(f"{checkpoint}: checkpoint not found")
            raise LeffaError(f"{checkpoint}: holds no model config; give the base-model folder it was trained from")
        config = LeffaConfig.from_base_folder(base, task=task)
    return config


def load_model(
    checkpoint: str | Path,
    base: str | Path | None = None,
    task: str = "vton",
    dtype: torch.dtype | None = None,
) -> LeffaModel:
    """Build a model from our safetensors file, or from an upstream/foreign state dict plus its base folder.

    The weights are read straight into a model built on the meta device, in ``dtype`` (default float32): no random
    initialisation and no second copy, so an fp16 file loads as an fp16 model in the memory of one fp16 copy.
    """
    checkpoint = Path(checkpoint)
    config = _config_of(checkpoint, base, task)
    with torch.device("meta"):
        model = LeffaModel(config)
    state = to_our_names(read_state_dict(checkpoint))
    check_matches(state, {key: tuple(value.shape) for key, value in model.state_dict().items()}, checkpoint)
    check_finite_weights(state, checkpoint)
    target = dtype or torch.float32
    # Fresh tensors, one at a time: the allocator's aligned memory (a file's tensors may sit at any offset, and CPU
    # kernels can round differently on unaligned data), without ever holding two copies of the weights.
    for key in list(state):
        state[key] = state.pop(key).to(target, copy=True)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def convert_to_safetensors(
    checkpoint: str | Path,
    base: str | Path,
    output: str | Path,
    dtype: str = "fp16",
    task: str = "vton",
) -> Path:
    """Convert an upstream ``.pth`` (plus its base folder) into our self-describing safetensors file.

    Memory stays near one copy of the weights in the target dtype: the pickle is memory-mapped, and the tensors are
    converted one at a time against the shapes of a meta-device skeleton, so a 7.2 GB fp32 pickle becomes a 3.6 GB
    fp16 file without holding an fp32 model.
    """
    if dtype not in DTYPES:
        raise LeffaError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}", option="dtype")
    output = Path(output)
    if output.suffix != ".safetensors":
        raise LeffaError(f"{output}: the output must end in .safetensors")
    config = LeffaConfig.from_base_folder(base, task=task)
    expected = _expected_shapes(config)
    state = to_our_names(read_state_dict(checkpoint))
    check_matches(state, expected, checkpoint)
    target = DTYPES[dtype]
    # One converted tensor at a time: the mmapped fp32 source pages are read once and can be dropped by the OS.
    tensors = {}
    for key in expected:
        tensors[key] = state.pop(key).to(target).contiguous()
    del state
    metadata = {"format": FORMAT, "leffa_config": config.to_json(), "dtype": dtype}
    with atomic_path(output) as temp:
        save_file(tensors, str(temp), metadata=metadata)
    return output
