"""Per-segment arrays -> ``Segment`` objects: the last step of every statistics path."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from panoptic_depthlab_core.results import Segment

from .config import SegmentsConfig


def nan_stats(s: int) -> dict[str, np.ndarray]:
    """The depth statistics of s segments before any depth is known (all NaN)."""
    return {k: np.full(s, np.nan) for k in ("mean", "median", "trimmed_mean", "p10")}


def assemble_segments(
    seg_ids: np.ndarray,
    area: np.ndarray,
    box: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    centroid: tuple[np.ndarray, np.ndarray],
    stats: dict[str, np.ndarray],
    n_valid: np.ndarray,
    position: np.ndarray | None,
    extent: np.ndarray | None,
    scores: Mapping[int, float] | None,
    cfg: SegmentsConfig,
    class_names: tuple[str, ...],
) -> list[Segment]:
    """Per-segment arrays (host numpy, one entry per segment) -> Segment objects."""
    x_min, y_min, x_max, y_max = box
    cx_px, cy_px = centroid
    distance = stats[cfg.distance_statistic]
    thing_set = set(cfg.thing_ids)
    segments = []
    for i, seg_id in enumerate(seg_ids.tolist()):
        class_id = seg_id // cfg.label_divisor
        has_depth = bool(n_valid[i] > 0)
        segments.append(
            Segment(
                id=seg_id,
                class_id=class_id,
                class_name=class_names[class_id] if 0 <= class_id < len(class_names) else f"class_{class_id}",
                is_thing=class_id in thing_set,
                score=float(scores.get(seg_id, math.nan)) if scores is not None else math.nan,
                area=int(area[i]),
                bbox_xywh=(
                    float(x_min[i]),
                    float(y_min[i]),
                    float(x_max[i] - x_min[i] + 1),
                    float(y_max[i] - y_min[i] + 1),
                ),
                centroid_xy=(float(cx_px[i]), float(cy_px[i])),
                depth_mean_m=float(stats["mean"][i]),
                depth_median_m=float(stats["median"][i]),
                depth_trimmed_mean_m=float(stats["trimmed_mean"][i]),
                depth_p10_m=float(stats["p10"][i]),
                distance_m=float(distance[i]),
                valid_depth_pixels=int(n_valid[i]),
                position_xyz_m=tuple(float(v) for v in position[i])
                if position is not None and has_depth
                else None,
                extent_xyz_m=tuple(float(v) for v in extent[i]) if extent is not None and has_depth else None,
            )
        )
    return segments
