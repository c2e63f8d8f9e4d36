"""The node's per-frame steps after the network: distance source (depth / ground / fused) and tracking.

No rclpy here (the bag tool runs it too). :class:`DistanceAndTracking` holds, per input stream, a
:class:`~panoptic_depthlab_core.tracking.Tracker` and a depth/ground agreement monitor, applies the
distance source the parameters and the weights call for, tracks the things, and counts what went
wrong with the stamps — everything ``/diagnostics`` reports about it (``values``, ``warnings``).

Order per frame (the node's and the evaluation's, ``sequence_eval``): Predictor -> ground distance
(``apply_ground_distance``: positions move to the ground contact) -> Tracker (3D association and
velocity on those positions) -> track-consistent ids (``TrackingResult.apply``) -> messages.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from panoptic_depthlab_core.data.synthetic.drive import FrameMotion, ObjectMotion
from panoptic_depthlab_core.eval.sequence_eval import SequenceFrame, SequenceMetrics, SequenceMetricsConfig
from panoptic_depthlab_core.ground_distance import (
    CameraMount,
    CameraMountError,
    DepthGroundAgreement,
    GroundContact,
    apply_ground_distance,
    depth_decoder_trained,
)
from panoptic_depthlab_core.metadata import LABEL_DIVISOR
from panoptic_depthlab_core.results import FrameResult
from panoptic_depthlab_core.tracking import Tracker, TrackerConfig, TrackState, stamp_to_ns

DISTANCE_SOURCES = ("depth", "ground", "fused")
LOG_THROTTLE_S = 5.0
FUSION_MAX_RATIO = 1.5  # ground/decoder distance ratio beyond which a segment keeps the decoder's


@dataclass(frozen=True)
class DistancePolicy:
    """The distance source that runs, why, and the camera mount it uses (None for depth)."""

    source: str  # depth | ground | fused
    reason: str
    mount: CameraMount | None = None


def weights_depth_trained(weights: str | Path | None) -> tuple[bool, str]:
    """Whether the weights carry a trained depth decoder, and a sentence saying so (for the log)."""
    if not weights:
        return True, "random weights (no weights file)"
    path = Path(weights)
    if depth_decoder_trained(path):
        return True, f"{path.name}: a trained depth decoder"
    return False, f"{path.name}: its sidecar/metadata say depth_decoder_trained false"


def resolve_distance_policy(requested: str, camera_height_m: float, camera_pitch_rad: float,
                            depth_trained: bool, weights_note: str = "") -> DistancePolicy:
    """The source for parameter ``distance_source`` = ``requested``; ValueError naming the parameter
    when the camera mount it needs is missing or absurd."""
    if requested not in (*DISTANCE_SOURCES, "auto"):
        raise ValueError(f"distance_source must be auto, depth, ground or fused; got {requested!r}")
    mount = None
    if camera_height_m and camera_height_m > 0:
        try:
            mount = CameraMount(float(camera_height_m), float(camera_pitch_rad))
        except CameraMountError as exc:
            raise ValueError(f"camera_height_m/camera_pitch_rad: {exc}") from exc
    note = f" ({weights_note})" if weights_note else ""
    if requested == "depth":
        reason = "distance_source depth"
        if not depth_trained:
            reason += ": the depth decoder is untrained, distances are not metric" + note
        return DistancePolicy("depth", reason, None)
    if requested in ("ground", "fused"):
        if mount is None:
            raise ValueError(
                f"distance_source {requested} needs camera_height_m (the camera's height above the road, m) > 0; "
                "it is not set"
            )
        reason = f"distance_source {requested}"
        if requested == "fused" and not depth_trained:
            reason += ": the depth decoder is untrained, fusing it adds noise" + note
        return DistancePolicy(requested, reason, mount)
    # auto
    if not depth_trained:
        if mount is None:
            raise ValueError(
                "camera_height_m is not set: the weights have no trained depth decoder, so distances come from "
                "the ground plane, which needs camera_height_m (m above the road) and camera_pitch_rad "
                "(or set distance_source depth to publish the untrained decoder's values)" + note
            )
        return DistancePolicy("ground", "ground: weights have no trained depth decoder" + note, mount)
    if mount is None:
        return DistancePolicy("depth", "depth: camera_height_m not set (no ground plane to fuse with)", None)
    return DistancePolicy("fused", "fused: trained depth decoder and a camera mount (camera_height_m)", mount)


def tracker_config(params: Any) -> TrackerConfig:
    """TrackerConfig from the node parameters (NodeParams); the rest keeps its defaults."""
    return TrackerConfig(
        min_hits=params.tracking_min_hits,
        max_misses=params.tracking_max_misses,
        max_coast_s=params.tracking_max_coast_s,
        reset_gap_s=params.tracking_reset_gap_s,
        min_overlap=params.tracking_min_overlap,
        gate_3d_sigmas=params.tracking_gate_3d_sigmas,
        match_across_classes=params.tracking_match_across_classes,
        corridor_half_width_m=params.tracking_corridor_half_width_m,
        min_closing_speed_mps=params.tracking_min_closing_speed_mps,
    )


def header_stamp_ns(header: Any) -> int:
    """builtin_interfaces/Time -> int nanoseconds; ValueError for a negative time."""
    ns = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
    return stamp_to_ns(ns)


@dataclass
class TrackedFrame:
    """A frame after the distance source and the tracker."""

    result: FrameResult  # track-consistent ids in segments and maps when tracked
    tracks: list[TrackState | None] | None  # aligned with result.segments; None: tracking off
    reset_reason: str | None = None
    # aligned with result.segments, for evaluations: the decoder's distance before the source was
    # applied, and the ground contact (None: no ground distance computed)
    decoder_distance_m: list[float] = field(default_factory=list)
    contacts: list[GroundContact | None] = field(default_factory=list)


@dataclass
class _Stream:
    tracker: Tracker
    agreement: DepthGroundAgreement = field(default_factory=DepthGroundAgreement)
    frames: int = 0
    last_tracks: int = 0
    last_confirmed: int = 0


class DistanceAndTracking:
    """Distance source + tracker per stream (one camera each). Thread-safe (``process`` is called
    by one frame loop; parameters and diagnostics come from other threads).

    ``log(level, text)`` (optional) gets the tracker resets and depth-decoder health changes,
    at most once per ``LOG_THROTTLE_S`` per kind."""

    def __init__(self, params: Any, depth_trained: bool = True, weights_note: str = "",
                 log: Callable[[str, str], None] | None = None) -> None:
        self.depth_trained = depth_trained
        self.weights_note = weights_note
        self.log = log
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self.counters = {"tracker_resets": 0, "stamps_repeated": 0, "stamps_out_of_order": 0, "stamps_invalid": 0,
                         "frames_without_3d": 0, "fusion_rejected": 0}
        self.last_reset = ""
        self.last_frame_had_k: bool | None = None
        self._health_message = ""
        self._health_ok: bool | None = None
        self._last_log: dict[str, float] = {}
        self.policy = DistancePolicy("depth", "not configured")
        self.tracking = True
        self.wants_3d = True  # use_camera_info: without it, frames without K are expected, no warning
        self._tracker_cfg = TrackerConfig()
        self.update_params(params)

    # -------------------------------------------------------------------------------- parameters
    def update_params(self, params: Any) -> None:
        """Apply the distance and tracking parameters (next frame); ValueError (nothing changed)
        when the distance source cannot work with them."""
        policy = resolve_distance_policy(params.distance_source, params.camera_height_m, params.camera_pitch_rad,
                                         self.depth_trained, self.weights_note)
        cfg = tracker_config(params)  # ConfigError (a ValueError) for an impossible combination
        with self._lock:
            self.policy = policy
            if params.tracking and not self.tracking:
                for stream in self._streams.values():
                    stream.tracker.reset()
            self.tracking = bool(params.tracking)
            self.wants_3d = bool(params.use_camera_info)
            self._tracker_cfg = cfg
            for stream in self._streams.values():
                stream.tracker.cfg = cfg
                if policy.source != "fused":
                    stream.agreement.reset()

    def reset(self) -> None:
        """Forget every stream's tracks and agreement window (a new bag; track ids keep counting)."""
        with self._lock:
            for stream in self._streams.values():
                stream.tracker.reset()
                stream.agreement.reset()

    # -------------------------------------------------------------------------------- frames
    def _stream(self, key: str) -> _Stream:
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _Stream(Tracker(self._tracker_cfg))
        return stream

    def process(self, result: FrameResult, header: Any, stream_key: str = "") -> TrackedFrame:
        """Apply the distance source to ``result`` (in place: its segments are replaced) and track it."""
        with self._lock:
            policy, tracking = self.policy, self.tracking
            stream = self._stream(stream_key)
            has_k = result.K is not None
            self.last_frame_had_k = has_k
            if not has_k:
                self.counters["frames_without_3d"] += 1
            decoder = [s.distance_m for s in result.segments]
            before = list(result.segments)
            contacts: dict[int, GroundContact] = {}
            if policy.mount is not None:  # without K there is no contact: ground gives NaN, fused keeps depth
                contacts = apply_ground_distance(result, policy.mount, depth_trained=policy.source == "fused")
                if policy.source == "fused" and has_k:
                    self._check_health(stream.agreement.update(contacts))
                    self._keep_decoder_where_contradicted(result, before, contacts)
            aligned = [contacts.get(s.id) for s in result.segments]  # ids before tracking renumbers them
            if not tracking:
                return TrackedFrame(result, None, None, decoder, aligned)
            try:
                stamp = header_stamp_ns(header)
            except (ValueError, TypeError, AttributeError) as exc:
                self.counters["stamps_invalid"] += 1
                self._log("stamp", "warning", f"tracking skipped for a frame: invalid stamp ({exc})")
                return TrackedFrame(result, [None] * len(result.segments), None, decoder, aligned)
            frame_id = str(getattr(header, "frame_id", ""))
            tracking_result = stream.tracker.update(result, stamp, frame_id)
            stream.frames += 1
            if tracking_result.repeated_stamp:
                self.counters["stamps_repeated"] += 1
            reason = tracking_result.reset_reason
            if reason is not None:
                self.counters["tracker_resets"] += 1
                if reason.startswith("stamp went back"):
                    self.counters["stamps_out_of_order"] += 1
                self.last_reset = reason
                stream.agreement.reset()
                self._log("reset", "info", f"tracker reset: {reason}")
            states = [t for t in tracking_result.tracks if t is not None]
            stream.last_tracks = len(states) + len(tracking_result.coasting)
            stream.last_confirmed = sum(t.confirmed for t in states) + len(tracking_result.coasting)
            return TrackedFrame(tracking_result.apply(result), tracking_result.tracks, reason, decoder, aligned)

    def _keep_decoder_where_contradicted(self, result: FrameResult, before: list, contacts: dict) -> None:
        """Fused only where the two agree: a contact the decoder contradicts by more than
        ``FUSION_MAX_RATIO`` (a predicted mask with stray pixels near the image bottom puts the
        contact metres too close, and the ground's small variance there would win the fusion)
        keeps the decoder's distance. Counted; the health monitor still sees every contact."""
        segments = list(result.segments)
        for i, (seg, old) in enumerate(zip(segments, before, strict=True)):
            contact = contacts.get(old.id)
            if seg.distance_source != "fused" or contact is None:
                continue
            ratio = contact.distance_m / old.distance_m if old.distance_m > 0 else math.inf
            if not 1.0 / FUSION_MAX_RATIO <= ratio <= FUSION_MAX_RATIO:
                segments[i] = old
                self.counters["fusion_rejected"] += 1
        result.segments = segments

    def _check_health(self, status: Any) -> None:
        self._health_message = status.message
        if status.healthy is not None and status.healthy != self._health_ok:
            self._health_ok = status.healthy
            self._log("health", "info" if status.healthy else "warning", status.message)

    def _log(self, kind: str, level: str, text: str) -> None:
        if self.log is None:
            return
        now = time.monotonic()
        if now - self._last_log.get(kind, -math.inf) >= LOG_THROTTLE_S:
            self._last_log[kind] = now
            self.log(level, text)

    # -------------------------------------------------------------------------------- diagnostics
    def describe(self) -> str:
        """One line for the log at configure."""
        policy = self.policy
        mount = (f"camera {policy.mount.height_m:.2f} m above the road, pitch {policy.mount.pitch_rad:.4f} rad"
                 if policy.mount else "no camera mount")
        return f"distance source {policy.reason}; {mount}; tracking {'on' if self.tracking else 'off'}"

    def values(self) -> dict[str, str]:
        """/diagnostics keys: the distance source and why, the tracker's state, stamp problems."""
        with self._lock:
            policy = self.policy
            values = {
                "distance_source": policy.source,
                "distance_source_reason": policy.reason,
                "camera_mount": (f"height {policy.mount.height_m:.3f} m, pitch {policy.mount.pitch_rad:.4f} rad"
                                 if policy.mount else "not used"),
                "depth_decoder_health": (self._health_message or "no samples yet") if policy.source == "fused"
                else f"not checked (distance_source {policy.source})",
                "tracking": "on" if self.tracking else "off",
                "tracks": str(sum(s.last_tracks for s in self._streams.values())),
                "tracks_confirmed": str(sum(s.last_confirmed for s in self._streams.values())),
                "tracker_resets": str(self.counters["tracker_resets"]),
                "tracker_last_reset": self.last_reset or "none",
                "stamps_repeated": str(self.counters["stamps_repeated"]),
                "stamps_out_of_order": str(self.counters["stamps_out_of_order"]),
                "stamps_invalid": str(self.counters["stamps_invalid"]),
                "frames_without_3d": str(self.counters["frames_without_3d"]),
                "fusion_rejected": str(self.counters["fusion_rejected"]),
            }
            if self.last_frame_had_k is False:
                values["motion"] = "no CameraInfo for the last frame: no 3D positions, velocity or time to collision"
            elif self.last_frame_had_k:
                values["motion"] = "3D positions, velocity and time to collision from CameraInfo"
            return values

    def warnings(self) -> list[str]:
        """What makes /diagnostics WARN: a depth decoder that persistently disagrees with the road,
        and, while tracking with use_camera_info, frames without CameraInfo (no 3D, no velocity)."""
        with self._lock:
            found = []
            if self.policy.source == "fused" and self._health_ok is False:
                found.append(f"depth decoder health: {self._health_message}")
            if self.tracking and self.wants_3d and self.last_frame_had_k is False:
                found.append("no CameraInfo: no 3D positions, velocity or time to collision")
            return found


class SequenceScorer:
    """Tracking metrics of one camera stream against GT panoptic maps with ids consistent over time
    (a synthetic drive bag): ``sequence_eval.SequenceMetrics`` fed with what the node published —
    HOTA/DetA/AssA, IDF1, MOTA, STQ, distances by range band, and with GT motion the velocity and
    time-to-collision errors."""

    def __init__(self, name: str, corridor_half_width_m: float = 1.5) -> None:
        self.metrics = SequenceMetrics(SequenceMetricsConfig(corridor_half_width_m=corridor_half_width_m))
        self.metrics.begin(name)
        self.frames = 0

    def add(self, frame: TrackedFrame, gt_panoptic: Any, gt_depth_m: Any, stamp_ns: int,
            motion: Any = None) -> None:
        """One processed frame (``ProcessedFrame.tracked``) with its GT (int32 ids, -1 void; depth
        in m or None) and optional ``FrameMotion``. Frames without tracks score as untracked."""
        result = frame.result
        ids = np.asarray(result.panoptic_ids if result.panoptic_ids is not None
                         else result.upsampling.upsample(result.upsampling.panoptic_ids))
        tracks = frame.tracks or [None] * len(result.segments)
        top = max([s.id for s in result.segments], default=0)
        lut = np.zeros(top + 2, dtype=np.int64)  # panoptic id -> track id (0 none); last entry: void
        states: dict[int, TrackState] = {}
        distances: dict[int, dict] = {}
        for i, (seg, state) in enumerate(zip(result.segments, tracks, strict=True)):
            if state is None:
                continue
            lut[seg.id] = state.track_id
            states[state.track_id] = state
            contact = frame.contacts[i] if i < len(frame.contacts) else None
            distances[state.track_id] = {
                "decoder": frame.decoder_distance_m[i] if i < len(frame.decoder_distance_m) else math.nan,
                "ground": contact.distance_m if contact is not None else math.nan,
                "ground_reliable": bool(contact is not None and contact.reliable),
                "published": seg.distance_m,
                "source": seg.distance_source,
            }
        track_map = np.take(lut, np.where((ids < 0) | (ids > top), top + 1, ids))
        gt = np.asarray(gt_panoptic)
        depth = np.full(gt.shape, np.nan, np.float32) if gt_depth_m is None else np.asarray(gt_depth_m)
        sequence_frame = SequenceFrame(rgb=None, K=result.K, gt_panoptic=gt, gt_depth_m=depth,  # type: ignore[arg-type]
                                       stamp_s=stamp_ns / 1e9, motion=motion)
        self.metrics.add(sequence_frame, track_map, ids, states, distances)
        self.frames += 1

    def result(self) -> dict:
        return self.metrics.result()


def motion_from_gt_tracks(msg: Any, index: int = 0) -> FrameMotion:
    """A GT ``TrackedSegmentArray`` (a drive bag's ``/gt/tracks``: exact motion by GT panoptic id)
    -> the ``FrameMotion`` the sequence metrics compare velocities and TTCs with. The message has
    no lateral position: an object in the path gets x = 0, one outside it x = +inf (what
    ``SequenceMetrics`` reads of x is whether the object is in the corridor)."""
    objects = []
    for seg in msg.segments:
        train = int(seg.panoptic_id) // LABEL_DIVISOR
        x = 0.0 if seg.in_path else math.inf
        objects.append(ObjectMotion(instance_id=-1, panoptic_id=int(seg.panoptic_id), label_id=-1, train_id=train,
                                    position_xyz_m=(x, 0.0, float(seg.distance)),
                                    velocity_xyz_mps=(float(seg.velocity.x), float(seg.velocity.y),
                                                      float(seg.velocity.z))))
    stamp = msg.header.stamp
    return FrameMotion(index, int(stamp.sec) + int(stamp.nanosec) / 1e9, math.nan, math.nan, (0.0, 0.0, 0.0),
                       np.eye(4), objects)
