"""The node's distance-source policy and per-frame tracking step without a node (fast): which source
runs and why, parameter errors, bad stamps counted, track ids in every message, velocity arrows."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable in this environment")
pytest.importorskip("panoptic_depthlab_msgs", reason="panoptic_depthlab_msgs is not built (make setup)")

from std_msgs.msg import Header  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from panoptic_depthlab_core.results import FrameResult, Segment  # noqa: E402
from panoptic_depthlab_ros.distance_tracking import (  # noqa: E402
    DistanceAndTracking,
    resolve_distance_policy,
    weights_depth_trained,
)
from panoptic_depthlab_ros.messages import MessageOptions, build_messages  # noqa: E402
from panoptic_depthlab_ros.params import NodeParams, validate_params  # noqa: E402

K = np.array([[200.0, 0.0, 64.0], [0.0, 200.0, 48.0], [0.0, 0.0, 1.0]])


def _frame(shift: int = 0, z: float = 20.0, with_k: bool = True) -> FrameResult:
    """Road below row 60, one car (boxes shift right by ``shift`` px) on it."""
    h, w = 96, 128
    ids = np.full((h, w), 10 * 1000, np.int32)  # sky
    ids[60:] = 0  # road
    x0 = 40 + shift
    ids[50:70, x0:x0 + 30] = 13 * 1000 + 1
    car = Segment(id=13001, class_id=13, class_name="car", is_thing=True, score=0.9, area=600,
                  bbox_xywh=(float(x0), 50.0, 30.0, 20.0), centroid_xy=(x0 + 15.0, 60.0), distance_m=z,
                  position_xyz_m=((x0 + 15.0 - 64.0) / 200.0 * z, 0.5, z) if with_k else None,
                  extent_xyz_m=(1.8, 1.5, 0.0) if with_k else None)
    road = Segment(id=0, class_id=0, class_name="road", is_thing=False, score=0.9, area=36 * 128,
                   bbox_xywh=(0.0, 60.0, 128.0, 36.0), centroid_xy=(64.0, 78.0))
    return FrameResult(ids, (ids // 1000).astype(np.uint8), np.full((h, w), z, np.float32), [road, car],
                       K=K if with_k else None)


def _header(stamp_ns: int, frame_id: str = "cam") -> Header:
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return header


def test_distance_policy_says_which_source_and_why(tmp_path: Path):
    weights = tmp_path / "model_final.safetensors"
    weights.write_bytes(b"")
    (tmp_path / "model_final.safetensors.json").write_text(json.dumps({"depth_decoder_trained": False}))
    trained, note = weights_depth_trained(weights)
    assert not trained and "depth_decoder_trained false" in note
    policy = resolve_distance_policy("auto", 1.3, 0.02, trained, note)
    assert policy.source == "ground" and policy.reason.startswith("ground: weights have no trained depth decoder")
    assert resolve_distance_policy("auto", 1.3, 0.02, True).source == "fused"
    assert resolve_distance_policy("auto", 0.0, 0.0, True).source == "depth"
    with pytest.raises(ValueError, match="camera_height_m is not set: the weights have no trained depth decoder"):
        resolve_distance_policy("auto", 0.0, 0.0, False, note)
    with pytest.raises(ValueError, match="distance_source ground needs camera_height_m"):
        resolve_distance_policy("ground", 0.0, 0.0, True)
    with pytest.raises(ValueError, match="camera_height_m/camera_pitch_rad: camera pitch must be within"):
        resolve_distance_policy("fused", 1.3, 0.9, True)  # degrees' worth of radians
    problems = validate_params(NodeParams(distance_source="fused"))
    assert any("needs camera_height_m" in p for p in problems)


def test_bad_stamps_are_counted_and_reset_the_tracker():
    tracking = DistanceAndTracking(NodeParams(tracking_min_hits=1), depth_trained=True)
    base = 10 * 1_000_000_000
    first = tracking.process(_frame(), _header(base))
    track_id = first.tracks[1].track_id
    same = tracking.process(_frame(1), _header(base))  # repeated stamp: associated, not counted
    assert same.tracks[1].track_id == track_id
    later = tracking.process(_frame(2), _header(base + 100_000_000))
    assert later.tracks[1].track_id == track_id and later.reset_reason is None
    back = tracking.process(_frame(2), _header(base - 500_000_000))  # out of order: reset, new track
    assert back.reset_reason.startswith("stamp went back") and back.tracks[1].track_id != track_id
    header = _header(base)
    header.stamp.sec = -5  # int32 allows it; a time before the epoch is not a stamp
    bad = tracking.process(_frame(), header)
    assert bad.tracks == [None, None]
    values = tracking.values()
    assert values["stamps_repeated"] == "1" and values["stamps_out_of_order"] == "1"
    assert values["tracker_resets"] == "1" and values["stamps_invalid"] == "1"
    assert values["tracker_last_reset"].startswith("stamp went back")
    # the segment ids stay track-consistent in the remapped result
    assert later.result.segments[1].id == later.tracks[1].panoptic_id


def test_no_camera_info_no_3d_no_velocity_and_a_warning():
    tracking = DistanceAndTracking(NodeParams(camera_height_m=1.3), depth_trained=True)
    frame = tracking.process(_frame(with_k=False), _header(1_000_000_000))
    assert frame.tracks[1] is not None and frame.tracks[1].velocity_xyz_mps is None
    messages = build_messages(frame.result, _header(1_000_000_000), options=MessageOptions(), tracks=frame.tracks)
    assert "detections" in messages and not {"detections_3d", "tracks", "markers"} & set(messages)
    assert messages["detections"].detections[0].id == str(frame.tracks[1].track_id)
    assert tracking.values()["frames_without_3d"] == "1"
    assert any("no CameraInfo" in w for w in tracking.warnings())
    # without use_camera_info no 3D output is wanted: the same frame is no warning
    tracking.update_params(NodeParams(camera_height_m=1.3, use_camera_info=False))
    tracking.process(_frame(with_k=False), _header(2_000_000_000))
    assert not any("no CameraInfo" in w for w in tracking.warnings())


def test_messages_carry_track_ids_velocity_and_source():
    from panoptic_depthlab_msgs.msg import TrackedSegment

    tracking = DistanceAndTracking(NodeParams(camera_height_m=1.0, camera_pitch_rad=0.0), depth_trained=False)
    assert tracking.policy.source == "ground"
    t0 = 5 * 1_000_000_000
    frames = [tracking.process(_frame(i), _header(t0 + i * 100_000_000)) for i in range(5)]
    last = frames[-1]
    car = last.tracks[1]
    assert car.confirmed and car.velocity_xyz_mps is not None
    out = build_messages(last.result, _header(t0 + 400_000_000), options=MessageOptions(), tracks=last.tracks)
    (det3d,) = out["detections_3d"].detections
    (entry,) = out["tracks"].segments
    assert det3d.id == entry.id == str(car.track_id) == out["detections"].detections[0].id
    assert entry.distance_source == TrackedSegment.DISTANCE_SOURCE_GROUND
    # ground: the car's lowest row 69 (its bottom edge at v = 69.5), h = 1 m, f = 200, c_y = 48 -> z = 200 / 21.5
    assert entry.distance == pytest.approx(200.0 / 21.5, rel=1e-3)
    assert entry.panoptic_id == car.panoptic_id and math.isfinite(entry.velocity.x)
    assert entry.age == pytest.approx(0.4)
    panoptic = np.frombuffer(bytes(out["panoptic"].data), np.uint16).reshape(96, 128)
    assert (panoptic == car.panoptic_id).sum() == 600
    arrows = [m for m in out["markers"].markers if m.type == Marker.ARROW and m.action == Marker.ADD]
    texts = [m.text for m in out["markers"].markers if m.type == Marker.TEXT_VIEW_FACING]
    assert len(arrows) == 1 and len(arrows[0].points) == 2
    added = [m for m in out["markers"].markers if m.action == Marker.ADD]  # text, arrow, box: one id each
    assert len({m.id for m in added}) == len(added) == 3 and all(m.pose.orientation.w == 1.0 for m in added)
    assert texts == [f"car #{car.track_id}\nground {entry.distance:.1f} m"]
    # tracking off: per-frame ids, no arrows, the source still published
    tracking.update_params(replace(NodeParams(camera_height_m=1.0), tracking=False))
    off = tracking.process(_frame(5), _header(t0 + 500_000_000))
    assert off.tracks is None
    out = build_messages(off.result, _header(t0 + 500_000_000), options=MessageOptions(), tracks=off.tracks)
    assert out["tracks"].segments[0].id == "13001" and math.isnan(out["tracks"].segments[0].velocity.x)
    assert out["tracks"].segments[0].distance_source == TrackedSegment.DISTANCE_SOURCE_GROUND


def test_fused_only_where_ground_and_decoder_agree():
    """A ground contact the decoder contradicts (> 1.5x apart) keeps the decoder's distance and is
    counted; one that agrees is fused (between the two, with the ground's smaller variance)."""
    tracking = DistanceAndTracking(NodeParams(camera_height_m=1.0), depth_trained=True)
    assert tracking.policy.source == "fused"
    ground = 200.0 / 21.5
    far = tracking.process(_frame(z=20.0), _header(1_000_000_000)).result.segments[1]
    assert far.distance_source == "depth" and far.distance_m == 20.0
    assert tracking.values()["fusion_rejected"] == "1"
    near = tracking.process(_frame(z=10.0), _header(1_100_000_000)).result.segments[1]
    assert near.distance_source == "fused" and ground < near.distance_m < 10.0
    assert tracking.values()["fusion_rejected"] == "1"


def test_packaged_msg_defs_equal_the_interface_package_and_rclpy():
    """The .msg copies the bag tools register are the interface package's, and rosbags' CDR of a
    TrackedSegmentArray is what the built rclpy type reads (and writes)."""
    import filecmp

    from panoptic_depthlab_msgs.msg import TrackedSegmentArray
    from rclpy.serialization import deserialize_message

    from panoptic_depthlab_ros.bag_types import MSG_DEFS_DIR, make_typestore

    interface = Path(__file__).resolve().parents[2] / "interfaces" / "panoptic_depthlab_msgs" / "msg"
    names = sorted(p.name for p in interface.glob("*.msg"))
    assert names == ["TrackedSegment.msg", "TrackedSegmentArray.msg"]
    packaged = MSG_DEFS_DIR / "panoptic_depthlab_msgs"
    assert sorted(p.name for p in packaged.glob("*.msg")) == names
    match, mismatch, errors = filecmp.cmpfiles(interface, packaged, names, shallow=False)
    assert match == names, (mismatch, errors)

    store = make_typestore()
    T = store.types
    seg = T["panoptic_depthlab_msgs/msg/TrackedSegment"](
        id="42", panoptic_id=13005, distance=12.5, distance_source=2,
        velocity=T["geometry_msgs/msg/Vector3"](x=0.1, y=0.0, z=-3.0), in_path=True, time_to_collision=4.2,
        age=1.5)
    header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=3, nanosec=7), frame_id="cam")
    raw = bytes(store.serialize_cdr(T["panoptic_depthlab_msgs/msg/TrackedSegmentArray"](
        header=header, segments=[seg]), "panoptic_depthlab_msgs/msg/TrackedSegmentArray"))
    msg = deserialize_message(raw, TrackedSegmentArray)
    (got,) = msg.segments
    assert (got.id, got.panoptic_id, got.distance_source, got.in_path) == ("42", 13005, 2, True)
    assert (got.distance, got.velocity.z, got.time_to_collision, got.age) == pytest.approx((12.5, -3.0, 4.2, 1.5))
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 7
    assert got.DISTANCE_SOURCE_FUSED == 2


def test_persistent_depth_ground_disagreement_is_a_health_warning():
    """A decoder that reads every car at twice its ground distance, frame after frame: /diagnostics
    WARNs with the depth-decoder health message, and the log says it once."""
    from diagnostic_msgs.msg import DiagnosticStatus

    from panoptic_depthlab_ros.diagnostics import FrameStats, node_status

    logged: list[tuple[str, str]] = []
    tracking = DistanceAndTracking(NodeParams(camera_height_m=1.0), depth_trained=True,
                                   log=lambda level, text: logged.append((level, text)))
    for i in range(25):  # 20 samples are needed
        tracking.process(_frame(z=20.0), _header(1_000_000_000 + i * 100_000_000))
    values = tracking.values()
    assert values["depth_decoder_health"].startswith("depth decoder disagrees with the ground plane")
    warnings = tracking.warnings()
    assert warnings and warnings[0].startswith("depth decoder health: depth decoder disagrees")
    status = node_status("n: panoptic_depthlab", "cpu", "active", FrameStats().snapshot(), values, warnings)
    assert status.level == DiagnosticStatus.WARN and "depth decoder health" in status.message
    assert [level for level, text in logged if "disagrees" in text] == ["warning"]


def test_frames_with_no_things_or_more_than_500_through_the_node_step():
    """The node's per-frame step (distance source + tracker + messages) with 620 cars, then none,
    then 620 again: every car keeps its track id and its value in the 16UC1 image, all values
    distinct and inside the encoding; the empty frame publishes empty arrays, no crash."""
    h, w = 400, 1280
    k = np.array([[500.0, 0.0, 640.0], [0.0, 500.0, 200.0], [0.0, 0.0, 1.0]])

    def crowded(n: int) -> FrameResult:
        ids = np.full((h, w), 10 * 1000, np.int32)
        ids[200:] = 0  # road below the horizon
        segments = [Segment(id=0, class_id=0, class_name="road", is_thing=False, score=0.9, area=200 * w,
                            bbox_xywh=(0.0, 200.0, float(w), 200.0), centroid_xy=(640.0, 300.0))]
        for i in range(n):
            row, col = divmod(i, 80)
            y0, x0 = 208 + 16 * row, 16 * col
            ids[y0:y0 + 8, x0:x0 + 8] = 13 * 1000 + i + 1
            z = 500.0 / (y0 + 8 - 200)
            segments.append(Segment(id=13001 + i, class_id=13, class_name="car", is_thing=True, score=0.9, area=64,
                                    bbox_xywh=(float(x0), float(y0), 8.0, 8.0), centroid_xy=(x0 + 4.0, y0 + 4.0),
                                    distance_m=z, position_xyz_m=((x0 + 4.0 - 640.0) / 500.0 * z, 1.0, z),
                                    extent_xyz_m=(0.5, 0.5, 0.0)))
        return FrameResult(ids, (ids // 1000).astype(np.uint8), np.full((h, w), 20.0, np.float32), segments, K=k)

    tracking = DistanceAndTracking(NodeParams(camera_height_m=1.0, camera_pitch_rad=0.0, tracking_min_hits=1),
                                   depth_trained=False)
    t0 = 7 * 1_000_000_000
    seen: dict[str, int] = {}
    for step, n in enumerate((620, 0, 620)):
        frame = tracking.process(crowded(n), _header(t0 + step * 100_000_000))
        out = build_messages(frame.result, _header(t0 + step * 100_000_000), options=MessageOptions(),
                             tracks=frame.tracks)
        detections = out["detections"].detections
        assert len(detections) == n and len(out["tracks"].segments) == n
        if n == 0:
            assert tracking.values()["tracks"] == "620"  # coasting, not lost
            continue
        ids = [d.id for d in detections]
        assert len(set(ids)) == n and all(ids)
        panoptic = np.frombuffer(bytes(out["panoptic"].data), np.uint16).reshape(h, w)
        values = {entry.id: entry.panoptic_id for entry in out["tracks"].segments}
        assert len(set(values.values())) == n and max(values.values()) < 14 * 1000
        assert all((panoptic == v).sum() == 64 for v in list(values.values())[:50])
        if step == 0:
            seen = values
    # the empty frame coasts the tracks (max_misses 3): the same cars come back with the same ids
    assert values == seen
    assert tracking.values()["tracker_resets"] == "0"


def test_node_tracking_defaults_are_the_tuned_tracker_defaults():
    """The node and bag-eval run the tracker the held-out drives were scored with (docs/tracking.md):
    NodeParams' tracking defaults give exactly TrackerConfig()."""
    from panoptic_depthlab_core.tracking import TrackerConfig
    from panoptic_depthlab_ros.distance_tracking import tracker_config

    assert tracker_config(NodeParams()) == TrackerConfig()


def test_converted_weights_switch_the_node_to_ground_and_say_why(tmp_path: Path):
    """The node's factory reads convert-d2's sidecar: auto becomes ground, the configure log line and
    /diagnostics name the weights file and the untrained decoder; a camera height is then required."""
    from panoptic_depthlab_ros.processing import make_distance_tracking

    weights = tmp_path / "model_final.safetensors"
    weights.write_bytes(b"")
    (tmp_path / "model_final.safetensors.json").write_text(json.dumps({"depth_head": "fresh_init",
                                                                        "depth_decoder_trained": False}))
    tracking = make_distance_tracking(NodeParams(weights=str(weights), camera_height_m=1.22, camera_pitch_rad=0.04))
    assert tracking.policy.source == "ground"
    line = tracking.describe()
    assert "ground: weights have no trained depth decoder" in line and "model_final.safetensors" in line
    values = tracking.values()
    assert values["distance_source"] == "ground" and "no trained depth decoder" in values["distance_source_reason"]
    assert values["depth_decoder_health"] == "not checked (distance_source ground)"
    with pytest.raises(ValueError, match="camera_height_m is not set: the weights have no trained depth decoder"):
        make_distance_tracking(NodeParams(weights=str(weights)))


def test_a_car_closing_in_the_path_gets_ttc_in_tracks_and_markers():
    """A car straight ahead closing at 5 m/s (depth source): ~/tracks says in_path with TTC = z / 5,
    the marker text shows the TTC and the velocity arrow turns red."""
    tracking = DistanceAndTracking(NodeParams(), depth_trained=True)
    assert tracking.policy.source == "depth"
    t0 = 3 * 1_000_000_000
    for k in range(8):
        frame = tracking.process(_frame(shift=9, z=20.0 - 0.5 * k), _header(t0 + k * 100_000_000))
    car = frame.tracks[1]
    assert car.in_path and car.velocity_xyz_mps[2] == pytest.approx(-5.0, abs=0.5)
    out = build_messages(frame.result, _header(t0 + 700_000_000), options=MessageOptions(), tracks=frame.tracks)
    (entry,) = out["tracks"].segments
    assert entry.in_path and entry.time_to_collision == pytest.approx(car.ttc_s)
    assert entry.time_to_collision == pytest.approx(entry.distance / 5.0, rel=0.15)
    (text,) = [m.text for m in out["markers"].markers if m.type == Marker.TEXT_VIEW_FACING]
    assert text.startswith(f"car #{car.track_id} TTC {car.ttc_s:.1f} s\n")
    (arrow,) = [m for m in out["markers"].markers if m.type == Marker.ARROW and m.action == Marker.ADD]
    assert arrow.color.r == 1.0 and arrow.color.g < 0.2  # red: closing in, in the path
    assert arrow.points[1].z - arrow.points[0].z == pytest.approx(car.velocity_xyz_mps[2])
