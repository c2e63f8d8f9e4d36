"""FrameResult -> messages, without a node: encodings, void values, toggles, markers, detections."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable in this environment")
pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not built (scripts/build_vision_msgs.sh)")

from sensor_msgs.msg import CameraInfo  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from panoptic_depthlab_core.metadata import SKY_TRAIN_ID  # noqa: E402
from panoptic_depthlab_core.results import FrameResult, Segment  # noqa: E402
from panoptic_depthlab_ros.messages import (  # noqa: E402
    OUTPUT_NAMES,
    MessageOptions,
    build_messages,
    label_info,
    maps_needed,
    panoptic_to_uint16,
    stuff_segments_needed,
)

K = np.array([[100.0, 0, 16], [0, 100.0, 12], [0, 0, 1]])


def _result(with_k: bool = True) -> FrameResult:
    h, w = 24, 32
    ids = np.full((h, w), 10 * 1000, np.int32)  # sky
    ids[10:20, 5:15] = 13 * 1000 + 1  # a car
    ids[0, 0] = -1
    semantic = (ids // 1000).astype(np.uint8)
    semantic[0, 0] = 255
    depth = np.full((h, w), 30.0, np.float32)
    depth[10:20, 5:15] = 12.34
    depth[1, 1] = np.nan
    car = Segment(
        id=13001,
        class_id=13,
        class_name="car",
        is_thing=True,
        score=0.9,
        area=100,
        bbox_xywh=(5.0, 10.0, 10.0, 10.0),
        centroid_xy=(9.5, 14.5),
        distance_m=12.34,
        position_xyz_m=(-0.8, 0.3, 12.34) if with_k else None,
        extent_xyz_m=(1.2, 1.2, 0.0) if with_k else None,
    )
    sky = Segment(
        id=10000,
        class_id=10,
        class_name="sky",
        is_thing=False,
        score=0.8,
        area=667,
        bbox_xywh=(0.0, 0.0, 32.0, 24.0),
        centroid_xy=(16.0, 8.0),
        distance_m=30.0,
        position_xyz_m=(0.0, -1.0, 30.0) if with_k else None,
        extent_xyz_m=(5.0, 5.0, 0.0),
    )
    return FrameResult(
        panoptic_ids=ids, semantic=semantic, depth_m=depth, segments=[car, sky], K=K if with_k else None
    )


def _header(sec: int = 7) -> Header:
    header = Header(frame_id="cam_optical")
    header.stamp.sec = sec
    return header


def _info() -> CameraInfo:
    info = CameraInfo(width=32, height=24)
    info.k = K.reshape(-1).tolist()
    return info


def test_every_output_with_input_header_and_encodings() -> None:
    rgb = np.zeros((24, 32, 3), np.uint8)
    out = build_messages(_result(), _header(), _info(), MessageOptions(), rgb=rgb)
    assert set(out) == set(OUTPUT_NAMES)
    encodings = {"panoptic": "16UC1", "semantic": "mono8", "depth": "32FC1", "visualization": "bgr8"}
    for name, encoding in encodings.items():
        assert (out[name].encoding, out[name].width, out[name].height) == (encoding, 32, 24)
        assert out[name].header.stamp.sec == 7 and out[name].header.frame_id == "cam_optical"
    panoptic = np.frombuffer(bytes(out["panoptic"].data), np.uint16).reshape(24, 32)
    assert panoptic[0, 0] == 65535 and panoptic[15, 10] == 13001 and panoptic[2, 2] == 10000
    depth = np.frombuffer(bytes(out["depth"].data), np.float32).reshape(24, 32)
    assert math.isnan(depth[1, 1]) and depth[15, 10] == pytest.approx(12.34)
    assert out["camera_info"].header.stamp.sec == 7


def test_detections_things_only_by_default_and_stuff_on_request() -> None:
    out = build_messages(_result(), _header(), None, MessageOptions(outputs={"detections", "detections_3d"}))
    (det,) = out["detections"].detections
    assert det.id == "13001" and det.results[0].hypothesis.class_id == "car"
    assert det.results[0].hypothesis.score == pytest.approx(0.9)
    assert (det.bbox.center.position.x, det.bbox.center.position.y, det.bbox.size_x) == (10.0, 15.0, 10.0)
    assert det.results[0].pose.pose.position.z == pytest.approx(12.34)
    (det3,) = out["detections_3d"].detections
    assert det3.bbox.center.position.z == pytest.approx(12.34) and det3.bbox.size.x == pytest.approx(1.2)
    with_stuff = build_messages(
        _result(), _header(), None, MessageOptions(outputs={"detections"}, include_stuff_detections=True)
    )
    assert {d.id for d in with_stuff["detections"].detections} == {"13001", "10000"}
    strict = build_messages(
        _result(), _header(), None, MessageOptions(outputs={"detections"}, min_detection_score=0.95)
    )
    assert strict["detections"].detections == []


def test_markers_delete_old_then_text_and_boxes() -> None:
    out = build_messages(_result(), _header(), None, MessageOptions(outputs={"markers"}))
    markers = out["markers"].markers
    assert markers[0].action == Marker.DELETEALL
    assert [m.text for m in markers if m.type == Marker.TEXT_VIEW_FACING] == ["car 12.3 m"]
    assert sum(m.type == Marker.CUBE for m in markers) == 1
    no_boxes = build_messages(
        _result(), _header(), None, MessageOptions(outputs={"markers"}, marker_boxes=False)
    )
    assert all(m.type != Marker.CUBE for m in no_boxes["markers"].markers)


def test_toggles_missing_k_sky_inf_and_frame_override() -> None:
    out = build_messages(
        _result(with_k=False),
        _header(),
        None,
        MessageOptions(
            outputs={"depth", "detections_3d", "markers"}, depth_sky_inf=True, frame_id="override"
        ),
    )
    assert set(out) == {"depth"}  # no K: no 3D outputs
    depth = np.frombuffer(bytes(out["depth"].data), np.float32).reshape(24, 32)
    semantic = _result().semantic
    assert np.isinf(depth[semantic == SKY_TRAIN_ID]).all()
    assert out["depth"].header.frame_id == "override"
    with pytest.raises(ValueError, match="unknown outputs"):
        MessageOptions(outputs={"pointcloud"})


def test_panoptic_id_range_and_label_info() -> None:
    with pytest.raises(ValueError, match="16UC1"):
        panoptic_to_uint16(np.array([[70000]], np.int32))
    msg = label_info(_header(), 0.3)
    assert len(msg.class_map) == 19 and msg.class_map[11].class_name == "person"
    assert msg.threshold == pytest.approx(0.3)


def test_emit_maps_first_overlay_last_and_same_with_a_helper_thread() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from panoptic_depthlab_ros.messages import FrameMessages

    rgb = np.full((24, 32, 3), 90, np.uint8)
    order: list[str] = []
    emitted: dict = {}

    def emit(name, message) -> None:
        order.append(name)
        emitted[name] = message

    serial = build_messages(_result(), _header(), _info(), MessageOptions(), rgb=rgb, emit=emit)
    assert emitted == serial
    assert order == ["camera_info", "panoptic", "semantic", "depth", "detections", "detections_3d", "tracks",
                     "markers", "visualization"]  # fmt: skip

    # The node's way: the maps leave from the helper thread before the segments exist.
    order.clear()
    emitted.clear()
    result = _result()
    maps = FrameResult(result.panoptic_ids, result.semantic, result.depth_m, K=result.K)
    with ThreadPoolExecutor(1) as pool:
        builder = FrameMessages(_header(), _info(), MessageOptions(), rgb, pool, emit)
        builder.add_maps(maps)
        pool.submit(lambda: None).result(timeout=10)  # one thread: the maps job has finished
        assert set(order) == {"camera_info", "panoptic", "semantic", "depth"}
        out = builder.add_segments(result)
    assert repr(emitted) == repr(out) and len(order) == len(set(order)) == 9 and order[-1] == "visualization"
    for name in ("panoptic", "semantic", "depth", "visualization"):
        assert bytes(serial[name].data) == bytes(out[name].data), name


def test_upsampled_result_gives_the_same_images_from_the_network_map() -> None:
    """With ``result.upsampling`` the panoptic image and the overlay are made on the network's map:
    byte for byte the messages of the same result without it."""
    from dataclasses import replace

    from panoptic_depthlab_core.maps import nearest_index
    from panoptic_depthlab_core.results import NearestUpsampling

    small = _result()
    rows, cols = nearest_index(24, 50, "cpu").numpy(), nearest_index(32, 77, "cpu").numpy()
    upsampling = NearestUpsampling(small.panoptic_ids, rows, cols)
    big = replace(
        small,
        panoptic_ids=upsampling.upsample(small.panoptic_ids),
        semantic=upsampling.upsample(small.semantic),
        depth_m=upsampling.upsample(small.depth_m),
    )
    rgb = np.random.default_rng(0).integers(0, 256, (50, 77, 3), dtype=np.uint8)
    options = MessageOptions(outputs={"panoptic", "visualization"})
    plain = build_messages(big, _header(), None, options, rgb=rgb)
    fast = build_messages(replace(big, upsampling=upsampling), _header(), None, options, rgb=rgb)
    for name in ("panoptic", "visualization"):
        assert (fast[name].width, fast[name].height) == (77, 50)
        assert bytes(fast[name].data) == bytes(plain[name].data), name
    panoptic = np.frombuffer(bytes(fast["panoptic"].data), np.uint16).reshape(50, 77)
    assert panoptic[0, 0] == 65535 and (panoptic == 13001).any()


@pytest.mark.parametrize(
    "outputs, sky_inf, needed",
    [
        ({"detections", "detections_3d", "markers", "camera_info"}, False, set()),
        ({"panoptic", "visualization"}, False, set()),
        ({"semantic"}, False, {"semantic"}),
        ({"depth"}, False, {"depth"}),
        ({"depth"}, True, {"semantic", "depth"}),
        (set(OUTPUT_NAMES), False, {"semantic", "depth"}),
    ],
)
def test_only_the_maps_the_outputs_read_are_made(outputs, sky_inf, needed) -> None:
    """A result made with ``maps_needed`` (the rest None, as the Predictor leaves them) gives byte
    for byte the messages of a full result."""
    from dataclasses import replace

    from panoptic_depthlab_core.maps import nearest_index
    from panoptic_depthlab_core.results import NearestUpsampling

    options = MessageOptions(outputs=outputs, depth_sky_inf=sky_inf)
    assert maps_needed(options) == needed
    small = _result()
    upsampling = NearestUpsampling(small.panoptic_ids, nearest_index(24, 50, "cpu").numpy(),
                                   nearest_index(32, 77, "cpu").numpy())  # fmt: skip
    full = replace(small, panoptic_ids=upsampling.upsample(small.panoptic_ids), semantic=upsampling.upsample(
        small.semantic), depth_m=upsampling.upsample(small.depth_m), upsampling=upsampling)  # fmt: skip
    part = replace(
        full,
        panoptic_ids=None,
        semantic=full.semantic if "semantic" in needed else None,
        depth_m=full.depth_m if "depth" in needed else None,
    )
    info = CameraInfo(width=77, height=50)
    info.k = [100.0, 0, 38, 0, 100.0, 25, 0, 0, 1]
    rgb = np.random.default_rng(1).integers(0, 256, (50, 77, 3), dtype=np.uint8)
    want = build_messages(full, _header(), info, options, rgb=rgb)
    got = build_messages(part, _header(), info, options, rgb=rgb)
    assert set(got) == set(want) == outputs
    for name in outputs:
        if hasattr(want[name], "data"):
            assert (got[name].width, got[name].height) == (77, 50)
            assert bytes(got[name].data) == bytes(want[name].data), name
        else:  # repr: TrackedSegment's NaN velocity never equals itself
            assert got[name] == want[name] or repr(got[name]) == repr(want[name]), name


PLANNER = {"detections", "detections_3d", "markers", "camera_info"}


@pytest.mark.parametrize(
    "outputs, include_stuff, needed",
    [
        (PLANNER, False, "none"),
        (PLANNER, True, "full"),
        ({"visualization"}, False, "no_depth"),
        ({"visualization", "panoptic"}, True, "no_depth"),  # stuff detections asked, none subscribed
        (set(OUTPUT_NAMES), False, "no_depth"),
        (set(OUTPUT_NAMES), True, "full"),
    ],
)
def test_only_the_stuff_the_outputs_read_is_described(outputs, include_stuff, needed) -> None:
    """A result whose stuff segments were narrowed as ``stuff_segments_needed`` says (none, or no
    depth statistics, as the Predictor makes them) gives the messages of a full result."""
    from dataclasses import replace

    options = MessageOptions(outputs=outputs, include_stuff_detections=include_stuff)
    assert stuff_segments_needed(options) == needed
    full = _result()
    if needed == "none":
        segments = [s for s in full.segments if s.is_thing]
    else:
        nan = float("nan")
        no_depth = dict(distance_m=nan, depth_mean_m=nan, depth_median_m=nan, depth_trimmed_mean_m=nan,
                        depth_p10_m=nan, valid_depth_pixels=0, position_xyz_m=None, extent_xyz_m=None)  # fmt: skip
        segments = [s if s.is_thing or needed == "full" else replace(s, **no_depth) for s in full.segments]
    part = replace(full, segments=segments)
    rgb = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    want = build_messages(full, _header(), _info(), options, rgb=rgb)
    got = build_messages(part, _header(), _info(), options, rgb=rgb)
    assert set(got) == set(want)
    for name in want:
        if hasattr(want[name], "data"):
            assert bytes(got[name].data) == bytes(want[name].data), name
        else:  # repr: TrackedSegment's NaN velocity never equals itself
            assert got[name] == want[name] or repr(got[name]) == repr(want[name]), name
