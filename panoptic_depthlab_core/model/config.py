"""Model configuration (one YAML file per variant under ``config/models/``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import ConfigError


@dataclass
class ModelConfig:
    name: str = "panoptic_depthlab_r52"
    backbone: Literal["resnet52_deeplab", "mobilenet_v3_large"] = "resnet52_deeplab"
    backbone_width_mult: float = 1.0  # mobilenet only
    use_dsconv: bool = False
    norm: Literal["BN", "SyncBN"] = "SyncBN"
    num_classes: int = 19
    project_channels: tuple[int, int] = (32, 64)  # res2, res3 low-level projections
    aspp_channels: int = 256
    aspp_dilations: tuple[int, int, int] = (6, 12, 18)
    aspp_dropout: float = 0.1
    # ASPP image pooling window on the stride-16 map = training crop / 16; None = global pooling.
    pool_kernel: tuple[int, int] | None = (32, 64)
    sem_decoder_channels: int = 256
    sem_head_channels: int = 256
    ins_decoder_channels: int = 128
    ins_head_channels: int = 32
    depth_decoder_channels: int = 256
    depth_head_channels: int = 256
    max_depth_m: float = 80.0
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)  # RGB, 0-255
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    size_divisibility: int = 32  # inputs are padded to a multiple of this

    def __post_init__(self) -> None:
        positive = {
            "num_classes": self.num_classes, "aspp_channels": self.aspp_channels,
            "sem_decoder_channels": self.sem_decoder_channels, "ins_decoder_channels": self.ins_decoder_channels,
            "depth_decoder_channels": self.depth_decoder_channels, "size_divisibility": self.size_divisibility,
        }
        for key, value in positive.items():
            if value <= 0:
                raise ConfigError(f"model.{key} must be positive, got {value}")
        if not self.max_depth_m > 0:
            raise ConfigError(f"model.max_depth_m must be positive, got {self.max_depth_m}")
        if self.size_divisibility % 16:
            raise ConfigError(f"model.size_divisibility must be a multiple of 16, got {self.size_divisibility}")
