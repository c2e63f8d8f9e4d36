"""Tracking of thing segments across frames: stable track ids, track-consistent panoptic ids, 3D
velocity and time to collision (camera frame). Core only: no ROS.

Public API::

    TrackerConfig, load_tracker_config          # settings (YAML-loadable)
    Tracker(cfg).update(result, stamp, frame_id) -> TrackingResult
    Tracker(cfg).update_segments(segments, stamp, frame_id, id_map=None, positions=None)
    TrackingResult.tracks[i] -> TrackState | None  (aligned with the segments)
    TrackingResult.apply(result) -> FrameResult     (track-consistent ids in segments and maps)
    TrackingResult.remap_ids(id_map), .coasting, .reset_reason, .repeated_stamp
    stamp_to_ns(stamp)                               # int = ns, float = s
"""

from .config import TrackerConfig, load_tracker_config
from .kalman import ConstantVelocityKalman3D
from .tracker import Tracker, TrackingResult, TrackState, box_iou_matrix, stamp_to_ns

__all__ = [
    "ConstantVelocityKalman3D",
    "TrackState",
    "Tracker",
    "TrackerConfig",
    "TrackingResult",
    "box_iou_matrix",
    "load_tracker_config",
    "stamp_to_ns",
]
