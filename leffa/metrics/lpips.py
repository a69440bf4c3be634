"""LPIPS v0.1 with the SqueezeNet backbone, in plain torch, as the try-on papers report it.

The backbone is torchvision's SqueezeNet 1.1 ``features`` (file ``squeezenet1_1-b8a52dc0.pth``; its ``classifier``
is not used and is dropped on load); the seven learned 1x1 weightings are the ``lpips`` package's
``weights/v0.1/squeeze.pth`` (keys ``lin0.model.1.weight`` .. ``lin6.model.1.weight``). Module names mirror both
files so they load as published. Distance for images in [-1, 1]: per tapped layer, unit-normalise features over
channels, square the difference, weight channels with the 1x1 layer, average over space; sum over layers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from leffa.metrics.weights import load_state_dict_file

# Output channels of the seven SqueezeNet 1.1 stages LPIPS taps (after features[1], [4], [7], [9], [10], [11], [12]).
TAP_CHANNELS = (64, 128, 256, 384, 384, 512, 512)
_TAP_AFTER = (1, 4, 7, 9, 10, 11, 12)
# LPIPS' fixed input scaling (ImageNet statistics expressed for [-1, 1] inputs).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class Fire(nn.Module):
    """SqueezeNet's fire module: 1x1 squeeze, then 1x1 and 3x3 expands side by side."""

    def __init__(self, in_channels: int, squeeze: int, expand1x1: int, expand3x3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )


class SqueezeNet11Features(nn.Module):
    """torchvision's ``squeezenet1_1().features`` with the same indices, returning the seven LPIPS taps."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=3, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(64, 16, 64, 64),
            Fire(128, 16, 64, 64),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(128, 32, 128, 128),
            Fire(256, 32, 128, 128),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            Fire(256, 48, 192, 192),
            Fire(384, 48, 192, 192),
            Fire(384, 64, 256, 256),
            Fire(512, 64, 256, 256),
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in _TAP_AFTER:
                taps.append(x)
        return taps


class LinearWeighting(nn.Module):
    """LPIPS' ``NetLinLayer``: (dropout, 1x1 conv to one channel); index 1 holds the weight as in ``squeeze.pth``."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _unit_normalise(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return features / (features.square().sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPSLinearLayers(nn.Module):
    """The seven learned weightings, named ``lin0`` .. ``lin6`` as in ``squeeze.pth``."""

    def __init__(self):
        super().__init__()
        for index, channels in enumerate(TAP_CHANNELS):
            self.add_module(f"lin{index}", LinearWeighting(channels))

    def __getitem__(self, index: int) -> LinearWeighting:
        return getattr(self, f"lin{index}")


class LPIPSSqueeze(nn.Module):
    """``lpips(x, y)`` per pair ``(B,)`` for images ``(B, 3, H, W)`` in [-1, 1] (LPIPS v0.1, SqueezeNet)."""

    # Buffers (registered in __init__), each (1, 3, 1, 1): the input normalisation.
    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self):
        super().__init__()
        self.backbone = SqueezeNet11Features()
        self.linear = LPIPSLinearLayers()
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        taps_x = self.backbone((x.float() - self.shift) / self.scale)
        taps_y = self.backbone((y.float() - self.shift) / self.scale)
        distance = x.new_zeros(x.shape[0], dtype=torch.float32)
        for index, (fx, fy) in enumerate(zip(taps_x, taps_y)):
            difference = (_unit_normalise(fx) - _unit_normalise(fy)).square()
            distance = distance + self.linear[index](difference).mean(dim=(1, 2, 3))
        return distance


def load_lpips(backbone_path: str | Path, linear_path: str | Path) -> LPIPSSqueeze:
    """LPIPS-SqueezeNet from torchvision's SqueezeNet 1.1 file and lpips' v0.1 ``squeeze.pth``, eval, no gradients."""
    network = LPIPSSqueeze()
    load_state_dict_file(
        network.backbone, backbone_path, "SqueezeNet 1.1 (torchvision)", ignore_prefixes=("classifier.",)
    )
    load_state_dict_file(network.linear, linear_path, "LPIPS v0.1 squeeze linear layers")
    return network.eval().requires_grad_(False)
