"""Multi-object tracking of thing segments: stable track ids, track-consistent panoptic ids, 3D motion.

One :class:`Tracker` per camera stream. Each frame (``update``) it

1. resets itself on a time jump (a stamp going backwards: a bag loop; a gap over ``reset_gap_s``) or
   a new ``frame_id`` — a track never bridges two unrelated streams;
2. predicts every live track to the frame's stamp (box: constant image velocity; 3D position:
   :class:`~.kalman.ConstantVelocityKalman3D`);
3. scores every (track, thing segment) pair by overlap — the IoU of the predicted box, or of the
   track's last mask with the segment's, counted on a strided copy of the id map (the network's
   map when the result was upsampled: a few ten thousand pixels, never a per-pixel Python loop) —
   and by 3D distance, gates impossible pairs, and assigns with the Hungarian algorithm
   (``scipy.optimize.linear_sum_assignment``);
4. updates the matched tracks, lets unmatched ones coast (confirmed) or drops them (hysteresis:
   tentative until ``min_hits``, lost after ``max_misses`` frames or ``max_coast_s``), and starts a
   tentative track for every unmatched segment.

Track-consistent panoptic ids: a track keeps one instance number (1 .. label_divisor-1, per class)
for its life, so ``class * label_divisor + instance`` is stable over frames and still fits the
16UC1 encoding of ``panoptic_depthlab_ros.messages.panoptic_to_uint16`` (max id 18 * 1000 + 999).
Numbers are handed out round-robin, so a number freed by a lost track is not reused at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import linear_sum_assignment

from panoptic_depthlab_core.metadata import NUM_CLASSES
from panoptic_depthlab_core.results import FrameResult, NearestUpsampling, Segment, json_safe_dict

from .config import TrackerConfig
from .kalman import ConstantVelocityKalman3D

NS_PER_S = 1_000_000_000
_INVALID = 1.0e6  # cost of a gated pair (never accepted)
VOID_ID = -1


def stamp_to_ns(stamp: float | int) -> int:
    """A stamp -> integer nanoseconds. ``int`` (numpy integers too) = nanoseconds, as ROS's
    ``sec * 10**9 + nanosec``; ``float`` = seconds. Anything else, or a non-finite or negative
    value, is a ValueError that says so."""
    if isinstance(stamp, (bool, np.bool_)):
        raise ValueError(f"stamp must be int nanoseconds or float seconds, got {stamp!r}")
    if isinstance(stamp, (int, np.integer)):
        ns = int(stamp)
    elif isinstance(stamp, (float, np.floating)):
        if not math.isfinite(stamp):
            raise ValueError(f"stamp must be finite, got {stamp!r}")
        ns = round(float(stamp) * NS_PER_S)
    else:
        raise ValueError(f"stamp must be int nanoseconds or float seconds, got {type(stamp).__name__} {stamp!r}")
    if ns < 0:
        raise ValueError(f"stamp must be >= 0, got {stamp!r}")
    return ns


@dataclass(frozen=True)
class TrackState:
    """What a planner needs of one track at one stamp (camera optical frame: x right, y down, z forward)."""

    track_id: int  # >= 1, unique for the tracker's life (never reused, not even after a reset)
    class_id: int  # train id
    confirmed: bool  # False while tentative (fewer than min_hits associations)
    instance: int  # instance number in the track-consistent id (0: no number free -> crowd id)
    panoptic_id: int  # class_id * label_divisor + instance
    hits: int  # associated frames so far
    misses: int  # consecutive frames without an association (> 0: coasting, predicted state)
    age_s: float  # since birth
    position_xyz_m: tuple[float, float, float] | None  # filtered; None without any 3D measurement
    velocity_xyz_mps: tuple[float, float, float] | None  # None until min_velocity_span_s of measurements
    velocity_std_mps: tuple[float, float, float] | None
    in_path: bool  # |x| <= corridor_half_width_m and in front of the camera
    ttc_s: float | None  # in the path: z / closing speed, inf when not closing; None otherwise

    def to_dict(self) -> dict:
        return json_safe_dict(self)


@dataclass
class TrackingResult:
    """One frame's tracking output, aligned with the segments given to ``Tracker.update``."""

    stamp_ns: int
    frame_id: str
    tracks: list[TrackState | None]  # per input segment; None for stuff (and crowd regions)
    coasting: list[TrackState]  # confirmed tracks not seen in this frame, at their predicted state
    id_lut: np.ndarray  # int32: new id of each old panoptic id; the last entry maps void (-1)
    reset_reason: str | None = None  # why the tracker reset before this frame, if it did
    repeated_stamp: bool = False  # same stamp as the previous frame: associated, nothing counted

    @property
    def stamp_s(self) -> float:
        return self.stamp_ns / NS_PER_S

    def remap_ids(self, panoptic_ids: np.ndarray) -> np.ndarray:
        """An id map of this frame (any resolution; -1 void) -> track-consistent ids (int32)."""
        ids = np.asarray(panoptic_ids)
        lut = self.id_lut
        if ids.size and int(ids.max()) >= lut.size - 1:
            raise ValueError(f"panoptic id {int(ids.max())} is beyond the id range {lut.size - 2} of this frame")
        return np.take(lut, ids, mode="wrap")  # -1 wraps to the last entry: void

    def remap_segments(self, segments: Sequence[Segment]) -> list[Segment]:
        """Copies of ``segments`` with track-consistent ids (stuff unchanged)."""
        out = []
        for seg, track in zip(segments, self.tracks, strict=True):
            out.append(seg if track is None else replace(seg, id=track.panoptic_id))
        return out

    def apply(self, result: FrameResult) -> FrameResult:
        """A copy of ``result`` with track-consistent ids in its segments and id maps (the network's
        map too, so ``messages.panoptic_image`` converts the remapped ids)."""
        upsampling = result.upsampling
        if upsampling is not None:
            upsampling = NearestUpsampling(self.remap_ids(upsampling.panoptic_ids), upsampling.rows, upsampling.cols)
        panoptic = None if result.panoptic_ids is None else self.remap_ids(result.panoptic_ids)
        return replace(result, panoptic_ids=panoptic, segments=self.remap_segments(result.segments),
                       upsampling=upsampling)

    def by_track_id(self) -> dict[int, TrackState]:
        """Every track of this frame (seen and coasting) by track id."""
        found = {t.track_id: t for t in self.tracks if t is not None}
        found.update({t.track_id: t for t in self.coasting})
        return found


class _Track:
    __slots__ = ("track_id", "class_id", "instance", "hits", "misses", "confirmed", "birth_ns", "last_seen_ns",
                 "box", "box_velocity", "box_ns", "kf")

    def __init__(self, track_id: int, class_id: int, instance: int, stamp_ns: int, box: np.ndarray) -> None:
        self.track_id = track_id
        self.class_id = class_id
        self.instance = instance
        self.hits = 1
        self.misses = 0
        self.confirmed = False
        self.birth_ns = stamp_ns
        self.last_seen_ns = stamp_ns
        self.box = box  # x0, y0, x1, y1 (input pixels) at box_ns
        self.box_velocity = np.zeros(4)  # pixels / s
        self.box_ns = stamp_ns
        self.kf: ConstantVelocityKalman3D | None = None

    def predicted_box(self, stamp_ns: int) -> np.ndarray:
        return self.box + self.box_velocity * ((stamp_ns - self.box_ns) / NS_PER_S)

    def observe_box(self, box: np.ndarray, stamp_ns: int) -> None:
        dt = (stamp_ns - self.box_ns) / NS_PER_S
        if dt > 0:  # smoothed image velocity of the box edges (alpha = 0.5)
            self.box_velocity = 0.5 * self.box_velocity + 0.5 * (box - self.box) / dt
        self.box = box
        self.box_ns = stamp_ns


def _box_xyxy(seg: Segment) -> np.ndarray:
    x, y, w, h = seg.bbox_xywh
    return np.array([x, y, x + w, y + h], dtype=np.float64)


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a`` [n, 4] and ``b`` [m, 4] (x0, y0, x1, y1) -> [n, m]."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


class Tracker:
    """Tracks thing segments of one camera stream. Not thread-safe: one caller at a time.

    Usage (core, no ROS)::

        tracker = Tracker(TrackerConfig())
        result = predictor.predict(rgb, K=K)
        tracking = tracker.update(result, stamp=header_ns, frame_id="camera_optical_frame")
        tracked = tracking.apply(result)          # ids, segments and maps made track-consistent
        for seg, track in zip(result.segments, tracking.tracks):
            if track is not None and track.confirmed:
                track.track_id, track.velocity_xyz_mps, track.ttc_s
    """

    def __init__(self, cfg: TrackerConfig | None = None) -> None:
        self.cfg = cfg or TrackerConfig()
        self._next_track_id = 1
        self._thing = np.zeros(max(max(self.cfg.thing_ids, default=0) + 1, 64), dtype=bool)
        self._thing[list(self.cfg.thing_ids)] = True
        self.resets = 0
        self._clear()

    # ------------------------------------------------------------------------------------ state
    def _clear(self) -> None:
        self._tracks: list[_Track] = []
        self._last_ns: int | None = None
        self._frame_id: str | None = None
        self._used: dict[int, set[int]] = {}  # class -> instance numbers held by live tracks
        self._cursor: dict[int, int] = {}  # class -> where the round-robin search starts
        self._prev_slots: np.ndarray | None = None  # strided map of the previous frame: its det index
        self._prev_slot_tracks: list[_Track | None] = []

    def reset(self) -> None:
        """Forget every track (track ids keep counting up, so an id never means two objects)."""
        self._clear()
        self.resets += 1

    @property
    def num_tracks(self) -> int:
        return len(self._tracks)

    def _allocate_instance(self, class_id: int, matched: set[int]) -> int:
        limit = self.cfg.label_divisor - 1
        used = self._used.setdefault(class_id, set())
        if len(used) >= limit:  # every number held: the longest-coasting unmatched track of the class goes
            victims = [t for t in self._tracks if t.class_id == class_id and t.instance and id(t) not in matched]
            if not victims:
                return 0
            victim = max(victims, key=lambda t: (t.misses, -t.last_seen_ns))
            self._drop(victim)
        start = self._cursor.get(class_id, 0)
        for k in range(limit):
            number = (start + k) % limit + 1
            if number not in used:
                used.add(number)
                self._cursor[class_id] = number % limit
                return number
        return 0

    def _drop(self, track: _Track) -> None:
        self._tracks.remove(track)
        if track.instance:
            self._used.get(track.class_id, set()).discard(track.instance)

    # ----------------------------------------------------------------------------------- update
    def update(self, result: FrameResult, stamp: float | int, frame_id: str = "",
               positions: Sequence[tuple[float, float, float] | None] | None = None) -> TrackingResult:
        """Track one predicted frame. Overlaps are counted on the network's id map when the result
        was upsampled (``result.upsampling``), else on ``result.panoptic_ids``; 3D positions are the
        segments' ``position_xyz_m`` unless ``positions`` (one per segment) is given."""
        id_map = result.upsampling.panoptic_ids if result.upsampling is not None else result.panoptic_ids
        has_size = result.upsampling is not None or any(
            m is not None for m in (result.panoptic_ids, result.semantic, result.depth_m))
        return self.update_segments(result.segments, stamp, frame_id, id_map, positions,
                                    image_hw=result.size_hw if has_size else None)

    def update_segments(self, segments: Sequence[Segment], stamp: float | int, frame_id: str = "",
                        id_map: np.ndarray | None = None,
                        positions: Sequence[tuple[float, float, float] | None] | None = None,
                        image_hw: tuple[int, int] | None = None) -> TrackingResult:
        """Track one frame given its segments (boxes in input pixels), optionally its id map (any
        resolution; enables mask overlaps), 3D positions (camera frame, metres; None = unknown) and
        the image size (things cut by its left/right/bottom border do not move the velocity
        estimate: the visible part's position drifts as the object leaves the image)."""
        cfg = self.cfg
        now = stamp_to_ns(stamp)
        frame_id = str(frame_id)
        if positions is not None and len(positions) != len(segments):
            raise ValueError(f"positions must have one entry per segment: {len(positions)} vs {len(segments)}")
        reason = self._reset_reason(now, frame_id)
        if reason is not None:
            self.reset()
        repeated = self._last_ns is not None and now == self._last_ns
        self._last_ns, self._frame_id = now, frame_id
        t_s = now / NS_PER_S

        det_index = [i for i, s in enumerate(segments) if s.is_thing and s.id % cfg.label_divisor != 0]
        det_boxes = np.array([_box_xyxy(segments[i]) for i in det_index]).reshape(-1, 4)
        det_class = np.array([segments[i].class_id for i in det_index], dtype=np.int64)
        det_pos = np.full((len(det_index), 3), np.nan)
        for j, i in enumerate(det_index):
            p = positions[i] if positions is not None else segments[i].position_xyz_m
            if p is not None and all(math.isfinite(v) for v in p):
                det_pos[j] = p
        truncated = np.zeros(len(det_index), dtype=bool)
        if image_hw is not None and len(det_index):
            m = cfg.border_margin_px
            truncated = ((det_boxes[:, 0] <= m) | (det_boxes[:, 2] >= image_hw[1] - m)
                         | (det_boxes[:, 3] >= image_hw[0] - m))

        if not repeated:
            for track in self._tracks:
                if track.kf is not None:
                    track.kf.predict(t_s)
        det_slots = self._det_slots(segments, det_index, id_map)
        matches = self._associate(now, t_s, det_boxes, det_class, det_pos, det_slots)

        matched_tracks: set[int] = set()
        det_track: list[_Track | None] = [None] * len(det_index)
        for row, j in matches:
            track = self._tracks[row]
            det_track[j] = track
            matched_tracks.add(id(track))
            track.observe_box(det_boxes[j], now)
            track.last_seen_ns = now
            if not repeated:
                track.hits += 1
                track.misses = 0
                self._measure(track, det_pos[j], t_s, bool(truncated[j]))
                if track.hits >= cfg.min_hits:
                    track.confirmed = True
        if not repeated:
            for track in list(self._tracks):
                if id(track) in matched_tracks:
                    continue
                track.misses += 1
                coast_s = (now - track.last_seen_ns) / NS_PER_S
                lost = (track.misses > cfg.tentative_max_misses if not track.confirmed
                        else track.misses > cfg.max_misses or coast_s > cfg.max_coast_s)
                if lost:
                    self._drop(track)
        for j in range(len(det_index)):
            if det_track[j] is not None:
                continue
            class_id = int(det_class[j])
            instance = self._allocate_instance(class_id, matched_tracks)
            track = _Track(self._next_track_id, class_id, instance, now, det_boxes[j])
            self._next_track_id += 1
            track.confirmed = cfg.min_hits <= 1
            self._measure(track, det_pos[j], t_s, bool(truncated[j]))
            self._tracks.append(track)
            matched_tracks.add(id(track))
            det_track[j] = track

        if det_slots is not None:
            self._prev_slots = det_slots
            self._prev_slot_tracks = det_track
        else:
            self._prev_slots, self._prev_slot_tracks = None, []

        states: list[TrackState | None] = [None] * len(segments)
        lut = self._identity_lut(segments)
        for j, i in enumerate(det_index):
            track = det_track[j]
            state = self._state(track, now)
            states[i] = state
            lut[segments[i].id] = state.panoptic_id
        coasting = [self._state(t, now) for t in self._tracks if t.confirmed and t.misses > 0]
        return TrackingResult(now, frame_id, states, coasting, lut, reason, repeated)

    # ------------------------------------------------------------------------------------ steps
    def _reset_reason(self, now: int, frame_id: str) -> str | None:
        if self._last_ns is None:
            return None
        if frame_id != self._frame_id:
            return f"frame_id changed from {self._frame_id!r} to {frame_id!r}"
        if now < self._last_ns:
            return f"stamp went back by {(self._last_ns - now) / NS_PER_S:.3f} s (bag loop or replay)"
        gap = (now - self._last_ns) / NS_PER_S
        if gap > self.cfg.reset_gap_s:
            return f"gap of {gap:.3f} s between frames (reset_gap_s {self.cfg.reset_gap_s})"
        return None

    def _identity_lut(self, segments: Sequence[Segment]) -> np.ndarray:
        top = max([s.id for s in segments], default=0)
        classes = max(max(self.cfg.thing_ids, default=0) + 1, NUM_CLASSES)
        size = max(classes * self.cfg.label_divisor, top + 1)
        lut = np.arange(size + 1, dtype=np.int32)
        lut[size] = VOID_ID
        return lut

    def _det_slots(self, segments: Sequence[Segment], det_index: list[int],
                   id_map: np.ndarray | None) -> np.ndarray | None:
        """The strided id map as detection indices (-1: no tracked thing there)."""
        if id_map is None or not det_index:
            return None
        ids = np.asarray(id_map)
        if ids.ndim != 2:
            raise ValueError(f"id_map must be 2-D, got shape {ids.shape}")
        s = self.cfg.mask_stride
        small = ids[::s, ::s]
        top = max(segments[i].id for i in det_index)
        lut = np.full(top + 2, -1, dtype=np.int32)
        lut[[segments[i].id for i in det_index]] = np.arange(len(det_index), dtype=np.int32)
        small = np.where((small > top) | (small < 0), top + 1, small)
        return np.take(lut, small)

    def _mask_iou(self, det_slots: np.ndarray | None, n_det: int) -> np.ndarray | None:
        """IoU of each live track's previous mask with each detection's mask [tracks, dets]."""
        prev = self._prev_slots
        if det_slots is None or prev is None or prev.shape != det_slots.shape or not self._tracks:
            return None
        row_of = {id(t): r for r, t in enumerate(self._tracks)}
        prev_rows = np.array([row_of.get(id(t), -1) if t is not None else -1 for t in self._prev_slot_tracks] + [-1],
                             dtype=np.int64)
        pixel_rows = prev_rows[np.where(prev >= 0, prev, len(prev_rows) - 1)]
        n_tr = len(self._tracks)
        both = (pixel_rows >= 0) & (det_slots >= 0)
        inter = np.bincount(pixel_rows[both] * n_det + det_slots[both], minlength=n_tr * n_det).reshape(n_tr, n_det)
        area_t = np.bincount(pixel_rows[pixel_rows >= 0], minlength=n_tr)
        area_d = np.bincount(det_slots[det_slots >= 0], minlength=n_det)
        union = area_t[:, None] + area_d[None, :] - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, inter / union, 0.0)

    def _associate(self, now: int, t_s: float, det_boxes: np.ndarray, det_class: np.ndarray, det_pos: np.ndarray,
                   det_slots: np.ndarray | None) -> list[tuple[int, int]]:
        cfg = self.cfg
        n_tr, n_det = len(self._tracks), len(det_boxes)
        if n_tr == 0 or n_det == 0:
            return []
        pred_boxes = np.stack([t.predicted_box(now) for t in self._tracks])
        overlap = box_iou_matrix(pred_boxes, det_boxes)
        mask_iou = self._mask_iou(det_slots, n_det)
        if mask_iou is not None:
            overlap = np.maximum(overlap, mask_iou)
        pred_pos = np.full((n_tr, 3), np.nan)
        pred_var = np.ones((n_tr, 3))
        for r, t in enumerate(self._tracks):
            if t.kf is not None:  # already predicted to this stamp
                pred_pos[r] = t.kf.p
                pred_var[r] = t.kf.pp
        innovation_var = pred_var[:, None, :] + self._measurement_std(det_pos)[None, :, :] ** 2
        d2 = np.sum((pred_pos[:, None, :] - det_pos[None, :, :]) ** 2 / innovation_var, axis=2)
        dist = np.sqrt(d2) / cfg.gate_3d_sigmas  # in gates; NaN where either side has no 3D
        known = np.isfinite(dist)
        near = known & (dist <= 1.0)
        far = known & (dist > cfg.reject_3d_factor)
        possible = ((overlap >= cfg.min_overlap) | near) & ~far
        if not cfg.match_across_classes:
            track_class = np.array([t.class_id for t in self._tracks])
            possible &= track_class[:, None] == det_class[None, :]
        if not possible.any():
            return []
        dist_term = np.where(known, np.minimum(np.nan_to_num(dist, nan=0.0), 1.0), 0.5)
        cost = cfg.overlap_weight * (1.0 - overlap) + cfg.distance_weight * dist_term
        cost = np.where(possible, cost, _INVALID)
        rows, cols = linear_sum_assignment(cost)
        return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if possible[r, c]]

    def _measurement_std(self, positions: np.ndarray) -> np.ndarray:
        """Per-axis 1-sigma of measured positions [n, 3] (grows with range; depth along z most)."""
        cfg = self.cfg
        rng = np.linalg.norm(positions, axis=1, keepdims=True)
        std = cfg.position_noise_m + rng * np.array([cfg.position_noise_relative, cfg.position_noise_relative,
                                                     cfg.range_noise_relative])
        return np.where(np.isfinite(std), std, 1.0)

    def _measure(self, track: _Track, position: np.ndarray, t_s: float, truncated: bool = False) -> None:
        if not np.all(np.isfinite(position)):
            return
        cfg = self.cfg
        std = self._measurement_std(position[None, :])[0]
        if track.kf is None:
            track.kf = ConstantVelocityKalman3D(position, std, t_s, cfg.accel_noise_mps2)
        else:  # a thing cut by the image border: its position counts, its apparent motion does not
            track.kf.update(position, std, keep_velocity=truncated)

    def _state(self, track: _Track, now: int) -> TrackState:
        cfg = self.cfg
        position = velocity = velocity_std = None
        in_path, ttc = False, None
        if track.kf is not None:
            kf = track.kf
            p = kf.predicted(now / NS_PER_S)
            position = (float(p[0]), float(p[1]), float(p[2]))
            if kf.span_s >= cfg.min_velocity_span_s and kf.updates >= 2:
                velocity = (float(kf.v[0]), float(kf.v[1]), float(kf.v[2]))
                velocity_std = tuple(float(v) for v in kf.velocity_std)
            in_path = p[2] > 0 and abs(p[0]) <= cfg.corridor_half_width_m
            if in_path and velocity is not None:
                closing = -velocity[2]
                ttc = float(p[2] / closing) if closing > cfg.min_closing_speed_mps else math.inf
        return TrackState(
            track_id=track.track_id,
            class_id=track.class_id,
            confirmed=track.confirmed,
            instance=track.instance,
            panoptic_id=track.class_id * cfg.label_divisor + track.instance,
            hits=track.hits,
            misses=track.misses,
            age_s=(now - track.birth_ns) / NS_PER_S,
            position_xyz_m=position,
            velocity_xyz_mps=velocity,
            velocity_std_mps=velocity_std,  # type: ignore[arg-type]
            in_path=bool(in_path),
            ttc_s=ttc,
        )
