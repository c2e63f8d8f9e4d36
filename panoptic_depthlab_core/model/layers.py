"""Building blocks with detectron2's module names, so its checkpoints load tensor for tensor.

A normed conv stores ``<p>.weight`` and ``<p>.norm.*`` and has no bias, exactly like detectron2's
``layers.Conv2d`` wrapper; depthwise-separable blocks are ``<p>.depthwise`` / ``<p>.pointwise``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def make_norm(kind: str, channels: int) -> nn.Module | None:
    """'BN' (plain BatchNorm2d), 'SyncBN' (converted at training time) or '' (no norm)."""
    if kind in ("BN", "SyncBN"):
        return nn.BatchNorm2d(channels)
    if kind == "":
        return None
    raise ValueError(f"unknown norm {kind!r}; expected 'BN', 'SyncBN' or ''")


class Conv2d(nn.Conv2d):
    """conv -> norm -> activation; bias only when there is no norm (detectron2's rule)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        norm: str = "BN",
        activation: bool = True,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=norm == ""
        )
        self.norm = make_norm(norm, out_channels)
        self.activation = nn.ReLU(inplace=True) if activation else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


class DepthwiseSeparableConv2d(nn.Module):
    """Depthwise kxk + norm + ReLU, then pointwise 1x1 + norm + ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, padding: int, dilation: int = 1,
        norm: str = "BN",
    ) -> None:
        super().__init__()
        self.depthwise = Conv2d(
            in_channels, in_channels, kernel_size, padding=padding, dilation=dilation, groups=in_channels,
            norm=norm,
        )
        self.pointwise = Conv2d(in_channels, out_channels, 1, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three dilated 3x3, image pooling, 1x1 projection.

    ``pool_kernel`` (h, w) is detectron2's windowed pooling (training crop / 16) that the published
    weights expect; ``None`` selects global pooling. Unlike detectron2, a feature map smaller than the
    window pools over the whole map instead of failing, so any input size runs.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dilations: tuple[int, int, int] = (6, 12, 18),
        pool_kernel: tuple[int, int] | None = (32, 64),
        dropout: float = 0.1,
        use_dsconv: bool = False,
        norm: str = "BN",
    ) -> None:
        super().__init__()
        self.pool_kernel = tuple(pool_kernel) if pool_kernel is not None else None
        self.dropout = dropout
        convs: list[nn.Module] = [Conv2d(in_channels, out_channels, 1, norm=norm)]
        for d in dilations:
            if use_dsconv:
                convs.append(DepthwiseSeparableConv2d(in_channels, out_channels, 3, padding=d, dilation=d, norm=norm))
            else:
                convs.append(Conv2d(in_channels, out_channels, 3, padding=d, dilation=d, norm=norm))
        pooling = nn.AdaptiveAvgPool2d(1) if self.pool_kernel is None else nn.Identity()
        convs.append(nn.Sequential(pooling, Conv2d(in_channels, out_channels, 1, norm="")))
        self.convs = nn.ModuleList(convs)
        self.project = Conv2d(5 * out_channels, out_channels, 1, norm=norm)

    def _image_pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_kernel is not None:
            kh = min(self.pool_kernel[0], x.shape[-2])
            kw = min(self.pool_kernel[1], x.shape[-1])
            x = F.avg_pool2d(x, (kh, kw), stride=1)
        return self.convs[4](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        branches = [conv(x) for conv in self.convs[:4]]
        pooled = self._image_pool(x)
        branches.append(F.interpolate(pooled, size=size, mode="bilinear", align_corners=False))
        y = self.project(torch.cat(branches, dim=1))
        if self.dropout > 0:
            y = F.dropout(y, self.dropout, training=self.training)
        return y


def c2_msra_fill(module: nn.Module) -> None:
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)


def c2_xavier_fill(module: nn.Module) -> None:
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)
