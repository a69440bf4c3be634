"""The DensePose branch: FPN decoder, the 8-conv "V1ConvX" head and the chart predictor (I, U, V per body part).

Layout of the released R50-FPN "s1x" model (``DECODER_ON`` is on, ``NUM_COARSE_SEGM_CHANNELS`` is 2): P2..P5 are merged
at stride 4 by a Panoptic-FPN style decoder, 28x28 RoIAlign features of each person box go through eight 3x3
convs of 512 channels, and four transposed convs (kernel 4, stride 2) followed by a x2 bilinear upsampling give
112x112 maps: coarse segmentation (background / person), fine segmentation (background + 24 parts) and U, V per part.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

NUM_PARTS = 24


class ConvReLU(nn.Conv2d):
    """A convolution with its ReLU (detectron2's ``Conv2d(activation=F.relu)``), so indices match the checkpoint."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(x))


class Decoder(nn.Module):
    """Merge P2..P5 into one stride-4 map: per level ``log2(stride / 4)`` conv+ReLU (+ x2 upsample) steps, summed,
    then a 1x1 conv.

    Each level is an ``nn.Sequential`` of [conv, upsample, conv, upsample, ...], so its convs are named ``0``, ``2``...
    """

    def __init__(
        self,
        channels: int = 256,
        conv_dims: int = 256,
        num_outputs: int = 256,
        strides: tuple[int, ...] = (4, 8, 16, 32),
        common_stride: int = 4,
    ):
        super().__init__()
        self.levels = [f"p{stride.bit_length() - 1}" for stride in strides]
        for name, stride in zip(self.levels, strides):
            steps = max(1, (stride // common_stride).bit_length() - 1)
            ops: list[nn.Module] = []
            for k in range(steps):
                ops.append(ConvReLU(channels if k == 0 else conv_dims, conv_dims, 3, padding=1))
                if stride != common_stride:
                    ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.add_module(name, nn.Sequential(*ops))
        self.predictor = nn.Conv2d(conv_dims, num_outputs, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = getattr(self, self.levels[0])(features[0])
        for name, feature in zip(self.levels[1:], features[1:]):
            x = x + getattr(self, name)(feature)
        return self.predictor(x)


class DensePoseHead(nn.Module):
    """``DensePoseV1ConvXHead``: ``body_conv_fcn1..8``, 3x3 convs with ReLU."""

    def __init__(self, in_channels: int = 256, hidden: int = 512, num_convs: int = 8, kernel_size: int = 3):
        super().__init__()
        self.num_convs = num_convs
        for i in range(num_convs):
            conv = nn.Conv2d(in_channels if i == 0 else hidden, hidden, kernel_size, padding=kernel_size // 2)
            self.add_module(f"body_conv_fcn{i + 1}", conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.num_convs):
            x = F.relu(getattr(self, f"body_conv_fcn{i + 1}")(x))
        return x


@dataclass
class ChartOutput:
    """Raw per-box DensePose maps (N, C, 112, 112): coarse (2), fine (25), u (25), v (25) channels."""

    coarse_segm: torch.Tensor
    fine_segm: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor

    def __len__(self) -> int:
        return self.coarse_segm.shape[0]

    def __getitem__(self, index) -> ChartOutput:
        if isinstance(index, int):
            index = slice(index, index + 1)
        return ChartOutput(self.coarse_segm[index], self.fine_segm[index], self.u[index], self.v[index])


class DensePosePredictor(nn.Module):
    """``DensePoseChartPredictor``: transposed convs (kernel 4, stride 2, padding 1) then x2 bilinear upsampling."""

    def __init__(
        self,
        in_channels: int = 512,
        coarse_channels: int = 2,
        num_parts: int = NUM_PARTS,
        kernel_size: int = 4,
        up_scale: int = 2,
    ):
        super().__init__()
        padding = kernel_size // 2 - 1
        self.ann_index_lowres = nn.ConvTranspose2d(in_channels, coarse_channels, kernel_size, 2, padding)
        self.index_uv_lowres = nn.ConvTranspose2d(in_channels, num_parts + 1, kernel_size, 2, padding)
        self.u_lowres = nn.ConvTranspose2d(in_channels, num_parts + 1, kernel_size, 2, padding)
        self.v_lowres = nn.ConvTranspose2d(in_channels, num_parts + 1, kernel_size, 2, padding)
        self.up_scale = up_scale

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.up_scale, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> ChartOutput:
        return ChartOutput(
            coarse_segm=self._up(self.ann_index_lowres(x)),
            fine_segm=self._up(self.index_uv_lowres(x)),
            u=self._up(self.u_lowres(x)),
            v=self._up(self.v_lowres(x)),
        )
