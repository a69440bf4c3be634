"""What this machine offers: library versions, devices, dtype support, weight cache location."""

from __future__ import annotations

import importlib.metadata
import platform

import torch

from leffa.runtime import best_device


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def dtype_support(device: str) -> list[str]:
    supported = ["fp32"]
    if device == "cuda":
        supported.append("fp16")
        if torch.cuda.is_bf16_supported():
            supported.append("bf16")
    elif device == "mps":
        supported.append("fp16")
    else:
        supported += ["bf16", "fp16 (slow on CPU)"]
    return supported


def describe() -> dict[str, str]:
    from huggingface_hub.constants import HF_HUB_CACHE

    from leffa import __version__
    from leffa.hub import weights_folder

    device = best_device()
    info = {
        "leffa": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": _version("diffusers"),
        "accelerate": _version("accelerate"),
        "onnxruntime": _version("onnxruntime")
        if _version("onnxruntime") != "not installed"
        else _version("onnxruntime-gpu"),
        "device": device,
        "dtypes": ", ".join(dtype_support(device)),
        "weights cache": HF_HUB_CACHE,
        "weights folder": str(weights_folder()),
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} device(s)"
    return info
