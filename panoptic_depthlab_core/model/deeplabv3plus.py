"""DeepLabV3+ decoders and the three heads (semantic, instance, depth), detectron2's layout.

Each head owns a full decoder: ASPP on res5, then res3 and res2 stages that upsample, project the
low-level feature, concatenate ``[projection, upsampled]`` and fuse. Module names
(``decoder.res5.project_conv.convs.0``, ``decoder.res3.fuse_conv.0``, ``head``, ``predictor``) match
detectron2's checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ASPP, Conv2d, DepthwiseSeparableConv2d, c2_msra_fill, c2_xavier_fill

IN_FEATURES = ("res2", "res3", "res5")


def _fuse(in_channels: int, out_channels: int, use_dsconv: bool, norm: str) -> nn.Module:
    if use_dsconv:
        return DepthwiseSeparableConv2d(in_channels, out_channels, 5, padding=2, norm=norm)
    return nn.Sequential(
        Conv2d(in_channels, out_channels, 3, padding=1, norm=norm),
        Conv2d(out_channels, out_channels, 3, padding=1, norm=norm),
    )


def _two_convs(in_channels: int, mid_channels: int, out_channels: int, use_dsconv: bool, norm: str) -> nn.Module:
    """A head trunk: two 3x3 conv+BN+ReLU, or one depthwise-separable 5x5 in the DSConv variant."""
    if use_dsconv:
        return DepthwiseSeparableConv2d(in_channels, out_channels, 5, padding=2, norm=norm)
    return nn.Sequential(
        Conv2d(in_channels, mid_channels, 3, padding=1, norm=norm),
        Conv2d(mid_channels, out_channels, 3, padding=1, norm=norm),
    )


def build_decoder(
    in_channels: dict[str, int],
    project_channels: tuple[int, int],
    decoder_channels: int,
    aspp_channels: int,
    aspp_dilations: tuple[int, int, int],
    aspp_dropout: float,
    pool_kernel: tuple[int, int] | None,
    use_dsconv: bool,
    norm: str,
) -> nn.ModuleDict:
    """The ``decoder`` ModuleDict of one head: ``res5`` (ASPP), ``res3`` and ``res2`` stages."""
    stage_channels = {"res2": decoder_channels, "res3": decoder_channels, "res5": aspp_channels}
    decoder = nn.ModuleDict()
    for idx, name in enumerate(IN_FEATURES):
        stage = nn.ModuleDict()
        if name == "res5":
            stage["project_conv"] = ASPP(
                in_channels[name], aspp_channels, aspp_dilations, pool_kernel, aspp_dropout, use_dsconv, norm
            )
            stage["fuse_conv"] = None
        else:
            stage["project_conv"] = Conv2d(in_channels[name], project_channels[idx], 1, norm=norm)
            above = stage_channels[IN_FEATURES[idx + 1]]
            stage["fuse_conv"] = _fuse(project_channels[idx] + above, decoder_channels, use_dsconv, norm)
        decoder[name] = stage
    return decoder


def run_decoder(decoder: nn.ModuleDict, features: dict[str, torch.Tensor]) -> torch.Tensor:
    """res5 -> res3 -> res2: upsample, concat [projection, upsampled], fuse. Returns the stride-4 map."""
    y = None
    for name in reversed(IN_FEATURES):
        proj = decoder[name]["project_conv"](features[name])
        if y is None:
            y = proj
            continue
        y = F.interpolate(y, size=proj.shape[-2:], mode="bilinear", align_corners=False)
        y = decoder[name]["fuse_conv"](torch.cat([proj, y], dim=1))
    return y


class _HeadBase(nn.Module):
    def _init_weights(self, predictors: list[nn.Module]) -> None:
        """detectron2's init: xavier for head convs, msra inside DSConv, N(0, 0.001) predictors."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                c2_xavier_fill(m)
        for m in self.modules():
            if isinstance(m, DepthwiseSeparableConv2d):
                c2_msra_fill(m.depthwise)
                c2_msra_fill(m.pointwise)
        for p in predictors:
            nn.init.normal_(p.weight, 0, 0.001)
            nn.init.constant_(p.bias, 0)


class SemanticHead(_HeadBase):
    """``sem_seg_head``: decoder -> head (2x 3x3 or DSConv 5x5) -> 1x1 predictor (num_classes)."""

    def __init__(self, decoder: nn.ModuleDict, decoder_channels: int, head_channels: int, num_classes: int,
                 use_dsconv: bool, norm: str) -> None:
        super().__init__()
        self.decoder = decoder
        c = decoder_channels
        self.head = _two_convs(c, c, head_channels, use_dsconv, norm)
        self.predictor = nn.Conv2d(head_channels, num_classes, 1)
        self._init_weights([self.predictor])

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.predictor(self.head(run_decoder(self.decoder, features)))


class InstanceHead(_HeadBase):
    """``ins_embed_head``: decoder -> center head (always regular convs) and offset head."""

    def __init__(self, decoder: nn.ModuleDict, decoder_channels: int, head_channels: int, use_dsconv: bool,
                 norm: str) -> None:
        super().__init__()
        self.decoder = decoder
        c = decoder_channels
        self.center_head = _two_convs(c, c, head_channels, False, norm)
        self.center_predictor = nn.Conv2d(head_channels, 1, 1)
        self.offset_head = _two_convs(c, c, head_channels, use_dsconv, norm)
        self.offset_predictor = nn.Conv2d(head_channels, 2, 1)
        self._init_weights([self.center_predictor, self.offset_predictor])

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        y = run_decoder(self.decoder, features)
        return self.center_predictor(self.center_head(y)), self.offset_predictor(self.offset_head(y))


class DepthHead(_HeadBase):
    """``depth_head``: laid out like the semantic head; one output channel in metres.

    The raw output passes through ``max_depth_m * sigmoid(x)``: non-negative, capped, and smooth
    near the cap (a clamp would stop gradients for far pixels).
    """

    def __init__(self, decoder: nn.ModuleDict, decoder_channels: int, head_channels: int, max_depth_m: float,
                 use_dsconv: bool, norm: str) -> None:
        super().__init__()
        self.decoder = decoder
        self.max_depth_m = float(max_depth_m)
        c = decoder_channels
        self.head = _two_convs(c, c, head_channels, use_dsconv, norm)
        self.predictor = nn.Conv2d(head_channels, 1, 1)
        self._init_weights([self.predictor])

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        raw = self.predictor(self.head(run_decoder(self.decoder, features)))
        return self.max_depth_m * torch.sigmoid(raw)
