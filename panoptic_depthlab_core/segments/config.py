"""How the segment statistics are computed: ``SegmentsConfig`` (the ``segments:`` section of a model YAML)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from panoptic_depthlab_core.metadata import LABEL_DIVISOR, THING_TRAIN_IDS

DistanceStatistic = Literal["median", "mean", "trimmed_mean", "p10"]


@dataclass
class SegmentsConfig:
    """How segment distances and extents are computed."""

    distance_statistic: DistanceStatistic = "median"
    trim_fraction: float = 0.1  # cut from each end for trimmed_mean
    min_depth_m: float = 0.1  # depth outside [min, max] (or non-finite) is invalid
    max_depth_m: float = 80.0
    extent_percentiles: tuple[float, float] = (5.0, 95.0)
    include_stuff: bool = True
    # False: stuff segments keep area, box and centroid but get no depth statistics (NaN distance,
    # no 3D). Stuff (road, sky, buildings) is most of a frame's pixels, so this is most of the
    # statistics' time; an overlay that fills stuff by class and labels only things needs no more.
    stuff_depth: bool = True
    thing_ids: tuple[int, ...] = THING_TRAIN_IDS
    label_divisor: int = LABEL_DIVISOR
    void_label: int = -1
    # On the CPU, when the maps are upsampled to the input size. network: over the network's pixels,
    # each weighted by the input pixels it covers (segments/network_resolution.py; the upsampling
    # multiplies the pixels many times over); input: over every input pixel of the upsampled maps.
    # A CUDA device always uses the input pixels (compute_segments_torch, fast there).
    cpu_resolution: Literal["network", "input"] = "network"

    def __post_init__(self) -> None:
        if self.cpu_resolution not in ("network", "input"):
            raise ValueError(f"cpu_resolution must be network or input, got {self.cpu_resolution!r}")
        if self.distance_statistic not in ("median", "mean", "trimmed_mean", "p10"):
            raise ValueError(
                "distance_statistic must be median, mean, trimmed_mean or p10, "
                f"got {self.distance_statistic!r}"
            )
        if not 0.0 <= self.trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must be in [0, 0.5), got {self.trim_fraction}")
        if not (math.isfinite(self.min_depth_m) and math.isfinite(self.max_depth_m)):
            raise ValueError(
                f"min_depth_m/max_depth_m must be finite, got {self.min_depth_m}, {self.max_depth_m}"
            )
        if not 0.0 <= self.min_depth_m < self.max_depth_m:
            raise ValueError(
                f"need 0 <= min_depth_m < max_depth_m, got min_depth_m={self.min_depth_m}, "
                f"max_depth_m={self.max_depth_m}"
            )
        lo, hi = self.extent_percentiles
        if not 0.0 <= lo <= hi <= 100.0:
            raise ValueError(
                f"extent_percentiles must satisfy 0 <= low <= high <= 100, got {self.extent_percentiles}"
            )
        if self.label_divisor < 1:
            raise ValueError(f"label_divisor must be >= 1, got {self.label_divisor}")
        self.thing_ids = tuple(int(t) for t in self.thing_ids)
