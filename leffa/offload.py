"""Low-memory inference: keep the weights on the CPU and move them to the accelerator only while they run.

Built on accelerate's hooks, so nothing in the model or the sampler changes:

- ``model``: each of the three parts (VAE, reference UNet, generative UNet) is moved whole to the execution device
  when its forward starts, and the part that ran before it goes back to the CPU (``accelerate.cpu_offload_with_hook``
  with a "previous" hook that offloads the other two parts). At most one part is on the device at a time, so the
  peak is one UNet plus activations; the cost is two UNet transfers per denoising step.
- ``sequential``: every leaf module's weights are streamed to the device for its own forward and dropped after
  (``accelerate.cpu_offload``): the smallest peak (activations plus one layer), and the slowest.

The model keeps reporting the execution device (``LeffaModel.device``) so the sampler puts its tensors there.
"""

from __future__ import annotations

import torch
from accelerate import cpu_offload, cpu_offload_with_hook
from accelerate.hooks import UserCpuOffloadHook

from leffa.errors import LeffaError

OFFLOAD_MODES = ("none", "model", "sequential")


class _OffloadOthers(UserCpuOffloadHook):
    """The "previous module" hook of one part: offloading it sends every *other* part back to the CPU.

    accelerate's ``CpuOffload.pre_forward`` asks ``prev_module_hook.model`` where its weights are and calls
    ``offload()`` when they are not on the CPU; ``model`` therefore names whichever other part is still on the
    device (there is at most one).
    """

    def __init__(self, others: list[UserCpuOffloadHook]):
        self.others = others  # no super().__init__: ``model`` is computed, not stored

    @property
    def model(self) -> torch.nn.Module:
        for hook in self.others:
            if next(hook.model.parameters()).device.type != "cpu":
                return hook.model
        return self.others[0].model

    def offload(self) -> None:
        for hook in self.others:
            hook.offload()

    def remove(self) -> None:
        for hook in self.others:
            hook.remove()


def _parts(model) -> list[torch.nn.Module]:
    return [model.vae, model.reference_unet, model.generative_unet]


def check_offload(mode: str) -> str:
    """``mode`` if it names an offload mode, else a one-line error (call it before loading anything)."""
    if mode not in OFFLOAD_MODES:
        raise LeffaError(f"offload: unknown mode {mode!r}; choose {', '.join(OFFLOAD_MODES)}", option="offload")
    return mode


def apply_offload(model, mode: str, device: torch.device | str) -> list[UserCpuOffloadHook]:
    """Install ``mode`` offloading (``none``, ``model`` or ``sequential``) with ``device`` as the execution device.

    The model must still be on the CPU, already in its inference dtype; it is changed in place. Returns the
    ``model``-mode hooks (call ``offload()`` on them to free the device after a run), else an empty list.
    """
    device = torch.device(device)
    if check_offload(mode) == "none":
        return []
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise LeffaError("offload: the model must be on the CPU before offloading is installed", option="offload")
    model.execution_device = device
    if mode == "sequential":
        for part in _parts(model):
            cpu_offload(part, execution_device=device)
        return []
    hooks = [cpu_offload_with_hook(part, execution_device=device)[1] for part in _parts(model)]
    for hook in hooks:
        hook.hook.prev_module_hook = _OffloadOthers([other for other in hooks if other is not hook])
    return hooks
