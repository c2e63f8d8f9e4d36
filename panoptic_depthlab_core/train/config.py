"""Training configuration: one YAML file = model + data + solver + loss + checkpoint + logging.

Loaded strictly (unknown key or wrong type -> ConfigError naming the key); ``--opts a.b=v`` overrides
are applied to the raw YAML before validation, so they are checked the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from panoptic_depthlab_core.config import ConfigError, from_dict, load_yaml, parse_opts, set_by_path
from panoptic_depthlab_core.data.loader import DataConfig
from panoptic_depthlab_core.model import ModelConfig
from panoptic_depthlab_core.train.losses import LossConfig


@dataclass
class SolverConfig:
    """detectron2's Panoptic-DeepLab solver: Adam 1e-3, no weight decay, WarmupPolyLR (0.9, 1000, 0.001)."""

    max_iter: int = 90000
    ims_per_batch: int = 32  # global batch, split evenly over processes
    base_lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    poly_power: float = 0.9
    constant_ending: float = 0.0
    grad_clip_norm: float | None = None  # clip the global grad norm; None = off
    amp: Literal["off", "fp16", "bf16"] = "off"  # mixed precision, CUDA only
    # NHWC tensors: on the CPU the depthwise-conv backward is much faster channels-last
    channels_last: bool = True

    def __post_init__(self) -> None:
        if self.max_iter <= 0:
            raise ConfigError(f"solver.max_iter must be positive, got {self.max_iter}")
        if self.ims_per_batch <= 0:
            raise ConfigError(f"solver.ims_per_batch must be positive, got {self.ims_per_batch}")
        if self.base_lr <= 0:
            raise ConfigError(f"solver.base_lr must be positive, got {self.base_lr}")
        if self.warmup_iters < 0:
            raise ConfigError(f"solver.warmup_iters must be >= 0, got {self.warmup_iters}")
        if self.grad_clip_norm is not None and self.grad_clip_norm <= 0:
            raise ConfigError(f"solver.grad_clip_norm must be positive or null, got {self.grad_clip_norm}")


@dataclass
class CheckpointConfig:
    period: int = 1000  # write a checkpoint every N iterations (and always at the end)
    keep_last: int = 3  # older periodic checkpoints are deleted; 0 keeps all

    def __post_init__(self) -> None:
        if self.period <= 0:
            raise ConfigError(f"checkpoint.period must be positive, got {self.period}")
        if self.keep_last < 0:
            raise ConfigError(f"checkpoint.keep_last must be >= 0, got {self.keep_last}")


@dataclass
class LoggingConfig:
    log_period: int = 20  # scalars to TensorBoard and a text line to the log
    image_period: int = 500  # image summaries (overlay, depth); 0 = never
    tensorboard: bool = True
    progress_bar: bool = True

    def __post_init__(self) -> None:
        if self.log_period <= 0:
            raise ConfigError(f"logging.log_period must be positive, got {self.log_period}")
        if self.image_period < 0:
            raise ConfigError(f"logging.image_period must be >= 0, got {self.image_period}")


@dataclass
class InitConfig:
    """Starting weights, e.g. a converted detectron2 Panoptic-DeepLab checkpoint (no depth head)."""

    weights: str | None = None  # safetensors file
    allow_missing_prefixes: list[str] = field(default_factory=list)  # e.g. ["depth_head."]


@dataclass
class FreezeConfig:
    """Which parameters train. A module whose parameters are all frozen also stays in eval mode, so
    its BatchNorm statistics do not drift (the seed recipe trains only ``depth_head.``)."""

    train_only: list[str] = field(default_factory=list)  # non-empty: only these prefixes train
    frozen: list[str] = field(default_factory=list)  # these prefixes never train


@dataclass
class TrainConfig:
    output_dir: str = "output/train"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # torch intra-op threads per process; 0 = torch's default. On a shared CPU, 1 can be several
    # times faster than oversubscribed OpenMP threads.
    cpu_threads: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    init: InitConfig = field(default_factory=InitConfig)
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # > 0: before writing model_final, re-estimate BatchNorm statistics over this many training
    # batches (see bn_recalibration.py; what `panoptic-depthlab recalibrate-bn` does afterwards)
    bn_recalibration_batches: int = 0

    def __post_init__(self) -> None:
        if self.cpu_threads < 0:
            raise ConfigError(f"cpu_threads must be >= 0, got {self.cpu_threads}")
        if self.bn_recalibration_batches < 0:
            raise ConfigError(f"bn_recalibration_batches must be >= 0, got {self.bn_recalibration_batches}")


def load_train_config(path: str | Path, opts: list[str] | None = None) -> TrainConfig:
    """Read a training YAML and apply ``key.path=value`` overrides; every error names the key."""
    data = load_yaml(path)
    for key, value in parse_opts(list(opts or [])):
        set_by_path(data, key, value)
    return from_dict(TrainConfig, data)
