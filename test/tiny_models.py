"""The tiny model the export, runtime and CLI tests share: same code paths as the small variant
(MobileNetV3 + DSConv decoders), few channels, so an export or a forward pass takes a moment.

Importable from every test module (pytest puts this folder, the one holding conftest.py, on sys.path).
"""

from __future__ import annotations

TINY_MODEL: dict = {
    "name": "tiny",
    "backbone": "mobilenet_v3_large",
    "use_dsconv": True,
    "aspp_channels": 32,
    "sem_decoder_channels": 32,
    "sem_head_channels": 32,
    "ins_decoder_channels": 16,
    "ins_head_channels": 16,
    "depth_decoder_channels": 32,
    "depth_head_channels": 32,
    "pool_kernel": None,
}

# Narrower still (a quarter-width backbone, 16-channel decoders): the evaluation and training tests,
# which run it over whole (synthetic) datasets and, for training, in several processes.
NARROW_MODEL: dict = {
    "backbone": "mobilenet_v3_large", "backbone_width_mult": 0.25, "use_dsconv": True, "norm": "BN",
    "pool_kernel": None, "aspp_channels": 16, "project_channels": [8, 8], "sem_decoder_channels": 16,
    "sem_head_channels": 16, "ins_decoder_channels": 16, "ins_head_channels": 8,
    "depth_decoder_channels": 16, "depth_head_channels": 16,
}  # fmt: skip


def tiny_model_config():
    """TINY_MODEL as a ModelConfig."""
    from panoptic_depthlab_core.config import from_dict
    from panoptic_depthlab_core.model import ModelConfig

    return from_dict(ModelConfig, dict(TINY_MODEL))
