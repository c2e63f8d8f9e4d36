"""What one frame of inference produces: dense maps at the input resolution plus per-segment facts.

These types are the contract between the core (predictor, post-processing) and every consumer (ROS
messages, bag evaluation, CLI, visualisation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def json_safe(value):
    """A field value for JSON: non-finite floats -> None (JSON has no NaN/inf), tuples -> lists."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, tuple):
        return [json_safe(x) for x in value]
    return value


def json_safe_dict(obj) -> dict:
    """A dataclass instance's fields as a JSON-safe dict (``json_safe`` per value)."""
    return {k: json_safe(v) for k, v in obj.__dict__.items()}


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
    # Where distance_m (and position_xyz_m) came from: "depth" (the depth decoder), "ground" (the
    # flat-road ground contact, ground_distance.py) or "fused" (both, inverse-variance weighted).
    distance_source: str = "depth"
    # False when the number is known to be doubtful: a ground contact cut by the image border or
    # hidden by another object (the distance is then only an upper bound).
    distance_reliable: bool = True

    def to_dict(self) -> dict:
        return json_safe_dict(self)


@dataclass
class NearestUpsampling:
    """How the input-resolution id map was made from the network's: ``panoptic_ids[rows][:, cols]``.

    Per-id work (an overlay's colour index, say) can then run on the network's map — a fraction of
    the pixels of a larger input — and be mapped back exactly with :meth:`upsample`."""

    panoptic_ids: np.ndarray  # int32 [h, w] at the network resolution (padding cropped)
    rows: np.ndarray  # int64 [H]: the network row of each input row
    cols: np.ndarray  # int64 [W]: the network column of each input column

    def upsample(self, small: np.ndarray) -> np.ndarray:
        """A [h, w] per-network-pixel array -> [H, W], the way the id map was upsampled."""
        if small.shape[:2] != self.panoptic_ids.shape:
            raise ValueError(f"expected an array of shape {self.panoptic_ids.shape}, got {small.shape}")
        return nearest_upsample(small, self.rows, self.cols)


def nearest_upsample(small: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``small[rows][:, cols]`` as a C-contiguous array: columns gathered first, then whole rows
    copied, which is faster than ``small[rows][:, cols]`` and, unlike it, does not return a
    column-major array that slows everything after it."""
    return np.take(small, cols, axis=1)[rows]


@dataclass
class FrameResult:
    """Dense outputs at the input image resolution plus the segment list.

    A map is None only when the caller did not ask for it (``Predictor.predict(maps=...)``) and the
    input was resized; ``upsampling`` is set then and gives the size."""

    panoptic_ids: np.ndarray | None  # int32 [H, W], class*1000+instance, -1 void
    semantic: np.ndarray | None  # uint8 [H, W], train ids, 255 void
    depth_m: np.ndarray | None  # float32 [H, W], metres along z; NaN where invalid
    segments: list[Segment] = field(default_factory=list)
    K: np.ndarray | None = None  # 3x3 intrinsics of the input image, if known
    timings_ms: dict[str, float] = field(default_factory=dict)
    # set when the maps were upsampled from the network's (a larger or smaller input), else None
    upsampling: NearestUpsampling | None = None

    @property
    def size_hw(self) -> tuple[int, int]:
        """(height, width) of the input image."""
        for dense in (self.panoptic_ids, self.semantic, self.depth_m):
            if dense is not None:
                return int(dense.shape[0]), int(dense.shape[1])
        if self.upsampling is None:
            raise ValueError("a FrameResult without maps needs its upsampling (the input size)")
        return int(self.upsampling.rows.size), int(self.upsampling.cols.size)

    @property
    def height(self) -> int:
        return self.size_hw[0]

    @property
    def width(self) -> int:
        return self.size_hw[1]
