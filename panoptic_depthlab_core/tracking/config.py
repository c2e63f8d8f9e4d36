"""Tracker settings: one dataclass, loadable from YAML like the other configs (``load_tracker_config``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from panoptic_depthlab_core.config import ConfigError, from_dict, load_yaml
from panoptic_depthlab_core.metadata import LABEL_DIVISOR, THING_TRAIN_IDS


@dataclass
class TrackerConfig:
    """How thing segments are associated across frames, born, confirmed, coasted and dropped.

    Times are in seconds of the input stamps (no constant frame rate is assumed); counts are frames.
    The defaults were chosen on synthetic tuning drives (seeds 8000-8003) with the default model, by
    AssA/IDF1 and velocity error (docs/tracking.md); the held-out drives were not used.
    """

    # --- births and deaths (hysteresis)
    min_hits: int = 2  # a track is confirmed after this many associated frames (its birth included)
    max_misses: int = 3  # a confirmed track coasts through up to this many missed frames, then is lost
    max_coast_s: float = 0.5  # ... and through at most this long without an association
    tentative_max_misses: int = 0  # a tentative track is dropped after more misses than this
    # --- reset: a stamp going backwards (bag loop), a gap longer than this, or a new frame_id
    reset_gap_s: float = 2.0
    # --- association: overlap of the predicted box (or last mask) and 3D position
    min_overlap: float = 0.2  # a pair is possible when box/mask IoU >= this ...
    # ... or the measured 3D position lies within this many standard deviations of the track's
    # prediction (Mahalanobis distance with the filter's predicted covariance plus the measurement
    # noise: the gate widens while a track coasts and while its velocity is still unknown)
    gate_3d_sigmas: float = 3.5
    reject_3d_factor: float = 3.0  # pairs farther apart than this many gates never match, overlap or not
    overlap_weight: float = 1.0  # cost = overlap_weight * (1 - IoU) + distance_weight * min(d / gate, 1)
    distance_weight: float = 0.5
    match_across_classes: bool = False  # True: a car may continue a truck's track (flickering classes)
    mask_stride: int = 2  # mask overlaps are counted on every mask_stride-th row/column of the id map
    # --- motion: constant-velocity Kalman filter per axis on the 3D position (camera frame)
    accel_noise_mps2: float = 0.5  # white-noise acceleration (process noise)
    position_noise_m: float = 0.15  # measurement noise floor per axis
    position_noise_relative: float = 0.04  # ... plus this fraction of the range (x, y)
    range_noise_relative: float = 0.08  # ... and this fraction of the range along z
    min_velocity_span_s: float = 0.25  # velocity is reported once a track has this long of measurements
    # A thing cut by the image's left/right/bottom border (box within border_margin_px of it)
    # corrects the track's position but not its velocity: its visible part drifts as it leaves.
    border_margin_px: float = 2.0
    # --- time to collision: objects in the path (|x| <= corridor half width) that close in
    corridor_half_width_m: float = 1.5
    min_closing_speed_mps: float = 0.3  # slower closing is "not closing" (TTC inf)
    # --- ids
    thing_ids: tuple[int, ...] = THING_TRAIN_IDS
    label_divisor: int = LABEL_DIVISOR

    def __post_init__(self) -> None:
        def positive(name: str, allow_zero: bool = False) -> None:
            value = getattr(self, name)
            ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
            if not ok:
                raise ConfigError(f"tracker.{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")

        if self.min_hits < 1:
            raise ConfigError(f"tracker.min_hits must be >= 1, got {self.min_hits}")
        for name in ("max_misses", "tentative_max_misses"):
            if getattr(self, name) < 0:
                raise ConfigError(f"tracker.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("max_coast_s", "reset_gap_s", "gate_3d_sigmas", "reject_3d_factor", "accel_noise_mps2",
                     "position_noise_m", "corridor_half_width_m", "label_divisor"):
            positive(name)
        for name in ("border_margin_px", "overlap_weight", "distance_weight", "position_noise_relative",
                     "range_noise_relative", "min_velocity_span_s", "min_closing_speed_mps"):
            positive(name, allow_zero=True)
        if not 0.0 <= self.min_overlap <= 1.0:
            raise ConfigError(f"tracker.min_overlap must be in [0, 1], got {self.min_overlap}")
        if self.mask_stride < 1:
            raise ConfigError(f"tracker.mask_stride must be >= 1, got {self.mask_stride}")
        if self.label_divisor < 2:
            raise ConfigError(f"tracker.label_divisor must be >= 2, got {self.label_divisor}")
        self.thing_ids = tuple(int(t) for t in self.thing_ids)


def load_tracker_config(path: str | Path, overrides: dict | None = None) -> TrackerConfig:
    """A YAML mapping of TrackerConfig fields (or a file with a ``tracker:`` section)."""
    data = load_yaml(path) or {}
    if "tracker" in data and isinstance(data["tracker"], dict):
        data = data["tracker"]
    data = {**data, **(overrides or {})}
    return from_dict(TrackerConfig, data, "tracker")
