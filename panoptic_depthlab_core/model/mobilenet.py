"""Small backbone for CPU and embedded use: torchvision's MobileNetV3-Large, dilated to stride 16.

Returns the same three feature levels as the ResNet ("res2" stride 4, "res3" stride 8, "res5" stride
16), so the decoders and everything downstream are unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import mobilenet_v3_large


class MobileNetV3Backbone(nn.Module):
    def __init__(self, width_mult: float = 1.0, reduced_tail: bool = True) -> None:
        super().__init__()
        features = mobilenet_v3_large(weights=None, dilated=True, width_mult=width_mult,
                                      reduced_tail=reduced_tail).features
        # Blocks that halve the resolution start a new level; the outputs just before them are the
        # stride-4 and stride-8 features.
        stride_blocks = [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)]
        self.res2_end = stride_blocks[1]  # first block at stride 8
        self.res3_end = stride_blocks[2]  # first block at stride 16
        self.features = features
        self.out_channels = {
            "res2": _out_channels(features[self.res2_end - 1]),
            "res3": _out_channels(features[self.res3_end - 1]),
            "res5": _out_channels(features[-1]),
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for i, block in enumerate(self.features):
            x = block(x)
            if i == self.res2_end - 1:
                out["res2"] = x
            elif i == self.res3_end - 1:
                out["res3"] = x
        out["res5"] = x
        return out


def _out_channels(block: nn.Module) -> int:
    return [m for m in block.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
