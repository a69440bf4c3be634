"""ResNet-50 + FPN in plain torch, laid out so that parameter names equal detectron2's.

The released DensePose R-CNN weights were trained with detectron2's ``build_resnet_fpn_backbone``: MSRA-style
bottleneck blocks (stride in the first 1x1 conv), frozen batch norm, a 256-channel FPN whose lateral/output convs are
named by stage (``fpn_lateral2`` .. ``fpn_output5``) and a P6 level made by a stride-2 1x1 max-pool of P5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ResNet-50: blocks per stage res2..res5.
RESNET50_BLOCKS = (3, 4, 6, 3)
FPN_CHANNELS = 256
FROZEN_BN_EPS = 1e-5


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine terms (detectron2 ``FrozenBN``): a per-channel scale and shift."""

    # Buffers (registered in __init__), each of shape (channels,).
    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, channels: int, eps: float = FROZEN_BN_EPS):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None].to(x.dtype) + shift[None, :, None, None].to(x.dtype)


class ConvNorm(nn.Conv2d):
    """A bias-free convolution followed by frozen batch norm kept as ``.norm`` (detectron2's ``Conv2d(norm=...)``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.norm = FrozenBatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class Stem(nn.Module):
    """7x7 stride-2 convolution, ReLU, 3x3 stride-2 max-pool: stride 4 overall."""

    def __init__(self, out_channels: int = 64):
        super().__init__()
        self.conv1 = ConvNorm(3, out_channels, 7, stride=2, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 residual block; the stride sits in the first 1x1 conv (MSRA weights, STRIDE_IN_1X1)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.shortcut = ConvNorm(in_channels, out_channels, 1, stride=stride) if in_channels != out_channels else None
        self.conv1 = ConvNorm(in_channels, mid_channels, 1, stride=stride)
        self.conv2 = ConvNorm(mid_channels, mid_channels, 3, padding=1)
        self.conv3 = ConvNorm(mid_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        return F.relu(out + (self.shortcut(x) if self.shortcut is not None else x))


class ResNet(nn.Module):
    """The bottom-up network: stem then stages res2..res5 (strides 4, 8, 16, 32)."""

    def __init__(self, blocks: tuple[int, ...] = RESNET50_BLOCKS):
        super().__init__()
        self.stem = Stem(64)
        in_channels, mid, out = 64, 64, 256
        for index, count in enumerate(blocks):
            stage = nn.Sequential(
                *[
                    Bottleneck(in_channels if i == 0 else out, mid, out, stride=(2 if index > 0 and i == 0 else 1))
                    for i in range(count)
                ]
            )
            self.add_module(f"res{index + 2}", stage)
            in_channels, mid, out = out, mid * 2, out * 2
        self.out_channels = {f"res{i + 2}": 256 * 2**i for i in range(len(blocks))}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        features = {}
        for name in self.out_channels:
            x = getattr(self, name)(x)
            features[name] = x
        return features


class FPN(nn.Module):
    """Feature pyramid P2..P6 over the ResNet (top-down nearest upsampling, sum fusion, P6 = maxpool(P5, 1, 2))."""

    size_divisibility = 32
    strides = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    # Added by name in __init__ (with levels 2..4, which forward reaches through getattr).
    fpn_lateral5: nn.Conv2d
    fpn_output5: nn.Conv2d

    def __init__(self, bottom_up: ResNet | None = None, channels: int = FPN_CHANNELS):
        super().__init__()
        self.bottom_up = bottom_up if bottom_up is not None else ResNet()
        for stage, in_channels in zip((2, 3, 4, 5), self.bottom_up.out_channels.values()):
            self.add_module(f"fpn_lateral{stage}", nn.Conv2d(in_channels, channels, 1))
            self.add_module(f"fpn_output{stage}", nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        bottom_up = self.bottom_up(images)
        outputs = {}
        previous = self.fpn_lateral5(bottom_up["res5"])
        outputs["p5"] = self.fpn_output5(previous)
        for stage in (4, 3, 2):
            lateral = getattr(self, f"fpn_lateral{stage}")(bottom_up[f"res{stage}"])
            previous = lateral + F.interpolate(previous, scale_factor=2.0, mode="nearest")
            outputs[f"p{stage}"] = getattr(self, f"fpn_output{stage}")(previous)
        outputs["p6"] = F.max_pool2d(outputs["p5"], kernel_size=1, stride=2, padding=0)
        return {name: outputs[name] for name in ("p2", "p3", "p4", "p5", "p6")}
