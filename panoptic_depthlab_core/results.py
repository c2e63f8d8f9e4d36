"""What one frame of inference produces: dense maps at the input resolution plus per-segment facts.

These types are the contract between the core (predictor, post-processing) and every consumer (ROS
messages, bag evaluation, CLI, visualisation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Segment:
    """One panoptic segment (a thing instance or a stuff region) with its distance."""

    id: int  # panoptic id = train_id * 1000 + instance (stuff: instance 0)
    class_id: int  # train id 0..18
    class_name: str
    is_thing: bool
    score: float  # things: mean class prob x center value; stuff: mean class prob
    area: int  # pixels at the input resolution
    bbox_xywh: tuple[float, float, float, float]  # pixels, x/y of the top-left corner
    centroid_xy: tuple[float, float]  # pixels
    depth_mean_m: float = float("nan")
    depth_median_m: float = float("nan")
    depth_trimmed_mean_m: float = float("nan")
    depth_p10_m: float = float("nan")
    distance_m: float = float("nan")  # the configured statistic; NaN when no valid depth
    valid_depth_pixels: int = 0
    # Camera optical frame (x right, y down, z forward), metres; None without intrinsics.
    position_xyz_m: tuple[float, float, float] | None = None
    extent_xyz_m: tuple[float, float, float] | None = None

    def to_dict(self) -> dict:
        def clean(v):
            if isinstance(v, float) and not np.isfinite(v):
                return None
            if isinstance(v, tuple):
                return [clean(x) for x in v]
            return v

        return {k: clean(v) for k, v in self.__dict__.items()}


@dataclass
class FrameResult:
    """Dense outputs at the input image resolution plus the segment list."""

    panoptic_ids: np.ndarray  # int32 [H, W], class*1000+instance, -1 void
    semantic: np.ndarray  # uint8 [H, W], train ids, 255 void
    depth_m: np.ndarray  # float32 [H, W], metres along z; NaN where invalid
    segments: list[Segment] = field(default_factory=list)
    K: np.ndarray | None = None  # 3x3 intrinsics of the input image, if known
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.panoptic_ids.shape[0])

    @property
    def width(self) -> int:
        return int(self.panoptic_ids.shape[1])
