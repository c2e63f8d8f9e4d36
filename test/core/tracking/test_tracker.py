"""Tracker: identities through a synthetic drive and an occlusion, resets, velocity/TTC against the
world's exact motion, track-consistent ids that fit 16UC1, and bad input."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from panoptic_depthlab_core.config import ConfigError
from panoptic_depthlab_core.data.synthetic import SyntheticDrive, panoptic_from_instance_ids
from panoptic_depthlab_core.results import FrameResult, Segment
from panoptic_depthlab_core.segments import compute_segments
from panoptic_depthlab_core.tracking import Tracker, TrackerConfig, load_tracker_config, stamp_to_ns

CAR = 13
UINT16_VOID = 65535


def _car(instance: int, x: float, z: float = 20.0, y: float = 100.0, w: float = 40.0, h: float = 30.0,
         position: bool = True) -> Segment:
    return Segment(id=CAR * 1000 + instance, class_id=CAR, class_name="car", is_thing=True, score=0.9,
                   area=int(w * h), bbox_xywh=(x, y, w, h), centroid_xy=(x + w / 2, y + h / 2),
                   distance_m=z, position_xyz_m=(x / 100.0, 1.0, z) if position else None)


def _road() -> Segment:
    return Segment(id=0, class_id=0, class_name="road", is_thing=False, score=0.9, area=1000,
                   bbox_xywh=(0, 200, 640, 100), centroid_xy=(320, 250))


def _gt_result(frame) -> FrameResult:
    """The drive's exact panoptic ids and depth, turned into segments as the Predictor does."""
    ids = panoptic_from_instance_ids(frame.instance_ids, frame.label_ids)
    segments = compute_segments(ids, frame.depth_m, K=frame.K)
    return FrameResult(panoptic_ids=ids, semantic=None, depth_m=frame.depth_m, segments=segments, K=frame.K)


@pytest.fixture(scope="module")
def drive_frames():
    drive = SyntheticDrive(seed=21, num_frames=16, size=(128, 256), fps=10.0)
    return drive, list(drive.frames_with_motion())


def test_identities_kept_through_a_synthetic_drive(drive_frames) -> None:
    drive, frames = drive_frames
    tracker = Tracker()
    track_of_gt: dict[int, set[int]] = defaultdict(set)
    gt_of_track: dict[int, set[int]] = defaultdict(set)
    panoptic_of_track: dict[int, set[int]] = defaultdict(set)
    for frame, _ in frames:
        result = _gt_result(frame)
        tracking = tracker.update(result, frame.time_s, "camera")
        tracked = tracking.apply(result)
        for seg, state in zip(result.segments, tracking.tracks, strict=True):
            if state is None:
                assert not seg.is_thing
                continue
            if seg.area >= 64:  # things of at least 8x8 pixels at this small size
                track_of_gt[seg.id].add(state.track_id)
                gt_of_track[state.track_id].add(seg.id)
            panoptic_of_track[state.track_id].add(state.panoptic_id)
        # the remapped map holds the track-consistent ids where the segments were
        for seg, new in zip(result.segments, tracked.segments, strict=True):
            assert np.array_equal(result.panoptic_ids == seg.id, tracked.panoptic_ids == new.id)
    assert len(track_of_gt) >= 8
    switched = {g: t for g, t in track_of_gt.items() if len(t) > 1}
    assert not switched, f"GT objects that changed track: {switched}"
    assert all(len(g) == 1 for g in gt_of_track.values())
    assert all(len(p) == 1 for p in panoptic_of_track.values())  # one panoptic id for a track's life


def test_identity_kept_through_a_short_occlusion() -> None:
    tracker = Tracker(TrackerConfig(max_misses=5, max_coast_s=1.0))
    ids = []
    for k in range(14):
        x = 100.0 + 8.0 * k
        segments = [_road(), _car(7, 400.0, z=30.0)]
        if not 5 <= k <= 7:  # hidden for three frames (0.3 s), still moving meanwhile
            segments.append(_car(3 if k < 5 else 9, x, z=20.0 - 0.5 * k))  # another instance number after
        tracking = tracker.update_segments(segments, 0.1 * k, "cam")
        if len(segments) == 3:
            ids.append((tracking.tracks[2].track_id, tracking.tracks[2].panoptic_id))
        else:
            assert [t.track_id for t in tracking.coasting] == [ids[0][0]]  # the hidden one coasts
            assert tracking.coasting[0].misses == k - 4
    assert len(set(ids)) == 1, ids
    assert tracker.num_tracks == 2


def test_lost_after_max_misses_and_tentative_dropped() -> None:
    tracker = Tracker(TrackerConfig(min_hits=3, max_misses=2))
    first = tracker.update_segments([_car(1, 100)], 0.0, "cam").tracks[0]
    assert not first.confirmed
    tracker.update_segments([], 0.1, "cam")  # a tentative track missing once is gone
    assert tracker.num_tracks == 0
    for k in range(3):
        state = tracker.update_segments([_car(1, 100)], 0.2 + 0.1 * k, "cam").tracks[0]
    assert state.confirmed and state.hits == 3
    for k in range(3):
        tracker.update_segments([], 0.5 + 0.1 * k, "cam")
    assert tracker.num_tracks == 0  # 3 misses > max_misses 2


@pytest.mark.parametrize(
    ("second_stamp", "frame_id", "reason"),
    [(0.5, "cam", "went back"), (10.0, "cam", "gap"), (1.1, "other_cam", "frame_id")],
)
def test_reset_on_time_jump_or_frame_change(second_stamp, frame_id, reason) -> None:
    tracker = Tracker()
    for k in range(3):
        before = tracker.update_segments([_car(1, 100 + k)], 0.8 + 0.1 * k, "cam").tracks[0]
    assert before.confirmed
    after = tracker.update_segments([_car(1, 100)], second_stamp, frame_id)
    assert after.reset_reason is not None and reason in after.reset_reason
    assert after.tracks[0].track_id != before.track_id  # a new track: ids are never reused
    assert not after.tracks[0].confirmed
    assert tracker.resets == 1


def test_velocity_and_ttc_against_the_worlds_exact_motion(drive_frames) -> None:
    drive, frames = drive_frames
    # a corridor wide enough that oncoming cars in the next lane count as "in the path": their
    # closing speed is the sum of both speeds, exactly known
    tracker = Tracker(TrackerConfig(corridor_half_width_m=4.5))
    errors, ttc_checked = [], 0
    for frame, motion in frames:
        result = _gt_result(frame)
        tracking = tracker.update(result, frame.time_s, "camera")
        truth = motion.by_panoptic_id()
        for seg, state in zip(result.segments, tracking.tracks, strict=True):
            if state is None or state.velocity_xyz_mps is None or seg.id not in truth:
                continue
            gt = truth[seg.id]
            if seg.class_id != CAR or seg.area < 200 or gt.position_xyz_m[2] > 30 or state.age_s < 1.0:
                continue
            errors.append(np.linalg.norm(np.subtract(state.velocity_xyz_mps, gt.velocity_xyz_mps)))
            in_path = abs(state.position_xyz_m[0]) <= tracker.cfg.corridor_half_width_m
            assert state.in_path == in_path
            closing = -gt.velocity_xyz_mps[2]
            if in_path and closing > 1.0:
                exact = seg.distance_m / closing  # the segment's distance over the true closing speed
                assert state.ttc_s == pytest.approx(exact, rel=0.2)
                ttc_checked += 1
            elif in_path and closing < -1.0:
                assert state.ttc_s == math.inf
    assert len(errors) >= 10
    assert float(np.median(errors)) < 0.6, errors  # m/s; exact masks and depth: the filter's lag only
    assert ttc_checked >= 3


def test_ttc_for_an_object_closing_in_the_path() -> None:
    tracker = Tracker()
    state = None
    for k in range(15):  # a car 20 m ahead closing at 4 m/s, centred in the path
        z = 20.0 - 4.0 * 0.1 * k
        seg = _car(1, 300.0, z=z)
        seg = Segment(**{**seg.__dict__, "position_xyz_m": (0.2, 1.0, z)})
        state = tracker.update_segments([seg], 0.1 * k, "cam").tracks[0]
    assert state.in_path
    assert state.velocity_xyz_mps[2] == pytest.approx(-4.0, abs=0.2)
    assert state.ttc_s == pytest.approx(state.position_xyz_m[2] / 4.0, rel=0.05)
    seg = Segment(**{**seg.__dict__, "position_xyz_m": (5.0, 1.0, 14.0)})  # far to the side: not in the path
    tracker2 = Tracker(TrackerConfig(corridor_half_width_m=1.5))
    for k in range(5):
        side = tracker2.update_segments([seg], 0.1 * k, "cam").tracks[0]
    assert not side.in_path and side.ttc_s is None


def test_stamps_repeated_or_out_of_order() -> None:
    tracker = Tracker(TrackerConfig(min_hits=3))
    a = tracker.update_segments([_car(1, 100)], 1_000_000_000, "cam")  # int stamps are nanoseconds
    b = tracker.update_segments([_car(1, 100)], 1_000_000_000, "cam")  # the same frame again
    assert b.repeated_stamp and b.reset_reason is None
    assert b.tracks[0].track_id == a.tracks[0].track_id and b.tracks[0].hits == 1  # not counted twice
    c = tracker.update_segments([_car(1, 100)], 0.95, "cam")  # float seconds, 50 ms back
    assert c.reset_reason is not None and "back" in c.reset_reason
    with pytest.raises(ValueError, match="finite"):
        tracker.update_segments([], float("nan"), "cam")
    with pytest.raises(ValueError, match="int nanoseconds or float seconds"):
        tracker.update_segments([], "1.0", "cam")
    assert stamp_to_ns(1.5) == 1_500_000_000 and stamp_to_ns(np.int64(7)) == 7


def test_without_intrinsics_no_3d_no_velocity_no_crash() -> None:
    tracker = Tracker()
    for k in range(10):
        tracking = tracker.update_segments([_car(1, 100 + 5 * k, position=False)], 0.1 * k, "cam")
    state = tracking.tracks[0]
    assert state.confirmed and state.track_id == 1  # still tracked by overlap
    assert state.position_xyz_m is None and state.velocity_xyz_mps is None and state.ttc_s is None


def test_empty_frames_and_more_than_500_things() -> None:
    tracker = Tracker()
    empty = tracker.update_segments([], 0.0, "cam")
    assert empty.tracks == [] and empty.coasting == []
    rng = np.random.default_rng(3)
    xs = rng.uniform(0, 1900, 620)
    ys = rng.uniform(0, 1000, 620)
    ids_seen = None
    for k in range(3):
        segments = [_car(i + 1, xs[i] + k, y=ys[i], w=8, h=8) for i in range(620)]
        tracking = tracker.update_segments(segments, 0.1 * k, "cam")
        ids = [t.panoptic_id for t in tracking.tracks]
        assert len(set(ids)) == 620  # distinct
        assert max(ids) < UINT16_VOID and min(ids) > CAR * 1000 and max(ids) < (CAR + 1) * 1000
        if ids_seen is not None:
            assert ids == ids_seen
        ids_seen = ids
    assert tracker.update_segments([], 0.3, "cam").tracks == []


def test_instance_numbers_exhausted_fall_back_to_crowd() -> None:
    tracker = Tracker(TrackerConfig(label_divisor=10))  # 9 numbers per class
    segments = [_car(i + 1, 60.0 * i, w=20) for i in range(9)]
    segments = [Segment(**{**s.__dict__, "id": CAR * 10 + (i % 9) + 1}) for i, s in enumerate(segments)]
    tracking = tracker.update_segments(segments, 0.0, "cam")
    assert sorted(t.instance for t in tracking.tracks) == list(range(1, 10))
    # a tenth car while all nine are in view: no number left -> the crowd id of its class
    more = [*segments, Segment(**{**segments[0].__dict__, "id": CAR * 10 + 0, "bbox_xywh": (900, 100, 20, 30)})]
    # instance 0 is a crowd region in the input: not tracked at all
    assert tracker.update_segments(more, 0.1, "cam").tracks[-1] is None


def test_remapped_ids_fit_the_16uc1_encoding() -> None:
    tracker = Tracker()
    ids = np.full((20, 30), -1, np.int32)
    ids[:10] = 0
    ids[12:18, 2:8] = 18 * 1000 + 999  # the largest id the encoding holds
    bicycle = Segment(id=18999, class_id=18, class_name="bicycle", is_thing=True, score=1.0, area=36,
                      bbox_xywh=(2, 12, 6, 6), centroid_xy=(5, 15))
    tracking = tracker.update_segments([_road(), bicycle], 0.0, "cam", id_map=ids)
    out = tracking.remap_ids(ids)
    assert out.dtype == np.int32 and out[0, 0] == 0 and out[19, 29] == -1
    assert out[15, 5] == tracking.tracks[1].panoptic_id == 18001
    assert int(out.max()) < UINT16_VOID


def test_config_from_yaml_and_validation(tmp_path) -> None:
    path = tmp_path / "tracker.yaml"
    path.write_text("tracker:\n  min_hits: 3\n  corridor_half_width_m: 1.8\n")
    cfg = load_tracker_config(path)
    assert cfg.min_hits == 3 and cfg.corridor_half_width_m == 1.8
    path.write_text("min_hitz: 3\n")
    with pytest.raises(ConfigError, match="min_hitz"):
        load_tracker_config(path)
    with pytest.raises(ConfigError, match="max_coast_s"):
        TrackerConfig(max_coast_s=0.0)
    with pytest.raises(ConfigError, match="min_overlap"):
        TrackerConfig(min_overlap=1.5)


def test_a_thing_leaving_the_image_keeps_its_velocity() -> None:
    tracker = Tracker()
    for k in range(10):  # closing at 5 m/s, fully in view
        seg = Segment(**{**_car(1, 300.0 - 10 * k).__dict__, "position_xyz_m": (-2.0, 1.0, 20.0 - 0.5 * k)})
        state = tracker.update_segments([seg], 0.1 * k, "cam", image_hw=(480, 640)).tracks[0]
    assert state.velocity_xyz_mps[2] == pytest.approx(-5.0, abs=0.3)
    for k in range(10, 16):  # cut by the left border: the visible part's depth stops changing
        seg = Segment(**{**_car(1, 0.0, w=40.0 - 5 * (k - 10)).__dict__, "position_xyz_m": (-2.0, 1.0, 15.0)})
        state = tracker.update_segments([seg], 0.1 * k, "cam", image_hw=(480, 640)).tracks[0]
    assert state.track_id == 1
    assert state.velocity_xyz_mps[2] == pytest.approx(-5.0, abs=0.3)  # not dragged towards 0


def test_track_state_to_dict_is_strict_json() -> None:
    """A track in the path that does not close in has TTC inf: to_dict gives None there (JSON has no inf)."""
    import json

    tracker = Tracker()
    for k in range(6):
        seg = Segment(**{**_car(1, 300.0).__dict__, "position_xyz_m": (0.2, 1.0, 20.0)})
        state = tracker.update_segments([seg], 0.1 * k, "cam").tracks[0]
    assert state.in_path and state.ttc_s == math.inf
    data = json.loads(json.dumps(state.to_dict(), allow_nan=False))
    assert data["ttc_s"] is None and data["track_id"] == state.track_id
    assert data["velocity_xyz_mps"] == pytest.approx(list(state.velocity_xyz_mps))
