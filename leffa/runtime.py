"""Where a model runs: the device and dtype a user asks for (``auto`` included), and placing a model there once.

Every command and the Python API go through ``resolve_device``/``resolve_dtype``/``place_model``, so ``auto`` means
the same everywhere: cuda, then mps, then cpu; fp16 on a GPU (as upstream), fp32 on the CPU.
"""

from __future__ import annotations

import torch

from leffa.errors import LeffaError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def best_device() -> str:
    """The fastest device present: ``cuda``, then ``mps``, then ``cpu``."""
    if torch.cuda.is_available():
        return "cuda"
    if _mps_available():
        return "mps"
    return "cpu"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> the best device; an unavailable or unknown device is a user error."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device(best_device())
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LeffaError(f"--device {device}: CUDA is not available on this machine")
    if device == "mps" and not _mps_available():
        raise LeffaError("--device mps: MPS is not available on this machine")
    if not (device == "cpu" or device == "mps" or device.startswith("cuda")):
        raise LeffaError(f"--device: unknown device {device!r}; choose auto, cpu, cuda, cuda:N or mps")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``auto`` -> fp16 on CUDA and MPS (as upstream), fp32 on the CPU; a ``torch.dtype`` passes through."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise LeffaError(f"--dtype: {dtype} is not supported; choose fp32, fp16 or bf16")
        return dtype
    if dtype == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if dtype not in DTYPES:
        raise LeffaError(f"--dtype: unknown dtype {dtype!r}; choose auto, fp32, fp16 or bf16")
    return DTYPES[dtype]


def place_model(
    model,
    device: torch.device,
    dtype: torch.dtype,
    channels_last: bool = False,
    compile: bool = False,
    offload: str = "none",
):
    """Move a ``LeffaModel`` to ``device``/``dtype`` (an fp16-unsafe VAE stays fp32), optionally channels-last and
    ``torch.compile``\\ d UNets; returns it in eval mode. With ``offload`` (``model`` or ``sequential``, see
    ``leffa.offload``) the weights stay on the CPU and ``device`` becomes the execution device."""
    from leffa.offload import apply_offload, check_offload

    offloaded = check_offload(offload) != "none"
    if offloaded and compile:
        raise LeffaError(
            "compile cannot be combined with offload (its hooks move the weights at every call)",
            option=("compile", "offload"),
        )
    model.to("cpu" if offloaded else device)
    model.to_dtype(dtype)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if offloaded:
        apply_offload(model, offload, device)
    if compile:
        model.reference_unet.compile()
        model.generative_unet.compile()
    return model.eval()


def place(
    model,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    channels_last: bool = False,
    compile: bool = False,
    offload: str = "none",
):
    """``place_model`` from user-level names (``"auto"``, ``"cuda:1"``, ``"fp16"``, ``offload="model"``...)."""
    torch_device = resolve_device(device)
    return place_model(model, torch_device, resolve_dtype(dtype, torch_device), channels_last, compile, offload)
