"""Panoptic-DepthLab: one encoder, three DeepLabV3+ decoders (semantic, instance, metric depth).

The semantic and instance branches are detectron2's Panoptic-DeepLab, module for module, so its
published Cityscapes checkpoints load without renaming; the depth branch sits beside them under
``depth_head.``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .deeplabv3plus import DepthHead, InstanceHead, SemanticHead, build_decoder
from .mobilenet import MobileNetV3Backbone
from .resnet_deeplab import ResNetDeepLab

OUTPUT_NAMES = ("sem_logits", "center", "offset", "depth")
COMMON_STRIDE = 4


def check_images(images: torch.Tensor) -> None:
    """Raise ValueError unless ``images`` is [B, 3, H, W] uint8 or floating point RGB (0-255)."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor of shape [B, 3, H, W], got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"expected images of shape [B, 3, H, W] (RGB, 0-255), got rank {images.dim()} "
                         f"shape {tuple(images.shape)}")
    if images.shape[1] != 3:
        raise ValueError(f"expected 3 RGB channels in dim 1 ([B, 3, H, W]), got {images.shape[1]} "
                         f"(shape {tuple(images.shape)})")
    if not (images.dtype == torch.uint8 or images.dtype.is_floating_point):
        raise ValueError(f"expected uint8 or float RGB values 0-255, got dtype {images.dtype}")
    if images.shape[2] < 16 or images.shape[3] < 16:
        raise ValueError(f"images must be at least 16x16 pixels, got {tuple(images.shape[2:])}")


class PanopticDepthLab(nn.Module):
    def __init__(self, backbone: nn.Module, sem_seg_head: SemanticHead, ins_embed_head: InstanceHead,
                 depth_head: DepthHead, pixel_mean: tuple[float, float, float],
                 pixel_std: tuple[float, float, float], size_divisibility: int = 32) -> None:
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.ins_embed_head = ins_embed_head
        self.depth_head = depth_head
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), persistent=False)
        self.size_divisibility = size_divisibility

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """RGB 0-255 [B, 3, H, W] -> dict of maps at H x W (logits, raw center, offsets x4, depth m)."""
        check_images(images)
        height, width = images.shape[-2:]
        x = (images.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std
        d = self.size_divisibility
        pad_h, pad_w = (-height) % d, (-width) % d
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))  # zero after normalisation = the mean colour
        features = self.backbone(x)
        sem_logits = self.sem_seg_head(features)
        center, offset = self.ins_embed_head(features)
        depth = self.depth_head(features)
        outputs = {}
        for name, y in zip(OUTPUT_NAMES, (sem_logits, center, offset, depth), strict=True):
            y = F.interpolate(y, scale_factor=COMMON_STRIDE, mode="bilinear", align_corners=False)
            if name == "offset":
                y = y * COMMON_STRIDE
            outputs[name] = y[..., :height, :width]
        return outputs


def build_backbone(cfg: ModelConfig) -> tuple[nn.Module, dict[str, int]]:
    if cfg.backbone == "resnet52_deeplab":
        backbone = ResNetDeepLab(norm=cfg.norm)
    elif cfg.backbone == "mobilenet_v3_large":
        backbone = MobileNetV3Backbone(width_mult=cfg.backbone_width_mult)
    else:
        raise ValueError(f"unknown backbone {cfg.backbone!r}")
    return backbone, backbone.out_channels


def build_model(cfg: ModelConfig) -> PanopticDepthLab:
    """Build the network described by ``cfg`` with fresh (detectron2-style) initial weights."""
    backbone, channels = build_backbone(cfg)

    def decoder(decoder_channels: int) -> nn.ModuleDict:
        return build_decoder(channels, cfg.project_channels, decoder_channels, cfg.aspp_channels,
                             cfg.aspp_dilations, cfg.aspp_dropout, cfg.pool_kernel, cfg.use_dsconv, cfg.norm)

    sem = SemanticHead(decoder(cfg.sem_decoder_channels), cfg.sem_decoder_channels, cfg.sem_head_channels,
                       cfg.num_classes, cfg.use_dsconv, cfg.norm)
    ins = InstanceHead(decoder(cfg.ins_decoder_channels), cfg.ins_decoder_channels, cfg.ins_head_channels,
                       cfg.use_dsconv, cfg.norm)
    depth = DepthHead(decoder(cfg.depth_decoder_channels), cfg.depth_decoder_channels, cfg.depth_head_channels,
                      cfg.max_depth_m, cfg.use_dsconv, cfg.norm)
    return PanopticDepthLab(backbone, sem, ins, depth, cfg.pixel_mean, cfg.pixel_std, cfg.size_divisibility)
