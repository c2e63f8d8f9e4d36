"""ResNet with the DeepLab stem ("R-52"), output stride 16, as detectron2 builds it.

Stem: three 3x3 conv+BN+ReLU (3->64 s2, 64->64, 64->128), then 3x3 max-pool s2. Bottleneck stages
[3, 4, 6, 3] with the stride in the 3x3 conv; res5 keeps stride 1 and uses dilations 2 x [1, 2, 4].
Module names follow detectron2 (``stem.conv1``, ``res2.0.shortcut``, ``res5.2.conv3.norm``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Conv2d, c2_msra_fill


class DeepLabStem(nn.Module):
    def __init__(self, in_channels: int = 3, out_channels: int = 128, norm: str = "BN") -> None:
        super().__init__()
        self.conv1 = Conv2d(in_channels, out_channels // 2, 3, stride=2, padding=1, norm=norm)
        self.conv2 = Conv2d(out_channels // 2, out_channels // 2, 3, padding=1, norm=norm)
        self.conv3 = Conv2d(out_channels // 2, out_channels, 3, padding=1, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3(self.conv2(self.conv1(x)))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BottleneckBlock(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, bottleneck_channels: int, stride: int = 1,
        dilation: int = 1, norm: str = "BN",
    ) -> None:
        super().__init__()
        self.shortcut = (
            Conv2d(in_channels, out_channels, 1, stride=stride, norm=norm, activation=False)
            if in_channels != out_channels or stride != 1
            else None
        )
        self.conv1 = Conv2d(in_channels, bottleneck_channels, 1, norm=norm)
        self.conv2 = Conv2d(
            bottleneck_channels, bottleneck_channels, 3, stride=stride, padding=dilation, dilation=dilation,
            norm=norm,
        )
        self.conv3 = Conv2d(bottleneck_channels, out_channels, 1, norm=norm, activation=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.conv3(self.conv2(self.conv1(x)))
        return F.relu_(out + identity)


class ResNetDeepLab(nn.Module):
    """Returns {"res2": stride 4, "res3": stride 8, "res5": stride 16}; res4 is computed, not returned."""

    def __init__(
        self,
        blocks_per_stage: tuple[int, int, int, int] = (3, 4, 6, 3),
        stem_channels: int = 128,
        res5_dilation: int = 2,
        res5_multi_grid: tuple[int, ...] = (1, 2, 4),
        norm: str = "BN",
    ) -> None:
        super().__init__()
        self.stem = DeepLabStem(3, stem_channels, norm)
        in_ch, bottleneck, out_ch = stem_channels, 64, 256
        for i, n_blocks in enumerate(blocks_per_stage):
            name = f"res{i + 2}"
            first_stride = 1 if i == 0 or i == 3 else 2
            stage = []
            for b in range(n_blocks):
                dilation = res5_dilation * res5_multi_grid[b] if i == 3 else 1
                stage.append(
                    BottleneckBlock(in_ch, out_ch, bottleneck, first_stride if b == 0 else 1, dilation, norm)
                )
                in_ch = out_ch
            self.add_module(name, nn.Sequential(*stage))
            bottleneck, out_ch = bottleneck * 2, out_ch * 2
        self.out_channels = {"res2": 256, "res3": 512, "res5": 2048}
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                c2_msra_fill(m)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        res2 = self.res2(x)
        res3 = self.res3(res2)
        res5 = self.res5(self.res4(res3))
        return {"res2": res2, "res3": res3, "res5": res5}
