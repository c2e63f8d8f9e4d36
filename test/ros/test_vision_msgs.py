"""vision_msgs 4.1 interface: built package fields, rosbags registration, packaged .msg copies."""

from __future__ import annotations

import filecmp
import importlib
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from panoptic_depthlab_ros.bag_types import VISION_MSGS_DEFS_DIR, make_typestore

REPO = Path(__file__).resolve().parents[2]
INTERFACE_MSG_DIR = REPO / "interfaces" / "vision_msgs" / "msg"

# The public interface of vision_msgs 4.1, written as in the issue (not read from our .msg files).
SPEC: dict[str, list[tuple[str, str]]] = {
    "Point2D": [("float64", "x"), ("float64", "y")],
    "Pose2D": [("Point2D", "position"), ("float64", "theta")],
    "BoundingBox2D": [("Pose2D", "center"), ("float64", "size_x"), ("float64", "size_y")],
    "BoundingBox2DArray": [("std_msgs/Header", "header"), ("BoundingBox2D[]", "boxes")],
    "BoundingBox3D": [("geometry_msgs/Pose", "center"), ("geometry_msgs/Vector3", "size")],
    "BoundingBox3DArray": [("std_msgs/Header", "header"), ("BoundingBox3D[]", "boxes")],
    "ObjectHypothesis": [("string", "class_id"), ("float64", "score")],
    "ObjectHypothesisWithPose": [("ObjectHypothesis", "hypothesis"),
                                 ("geometry_msgs/PoseWithCovariance", "pose")],
    "Detection2D": [("std_msgs/Header", "header"), ("ObjectHypothesisWithPose[]", "results"),
                    ("BoundingBox2D", "bbox"), ("string", "id")],
    "Detection2DArray": [("std_msgs/Header", "header"), ("Detection2D[]", "detections")],
    "Detection3D": [("std_msgs/Header", "header"), ("ObjectHypothesisWithPose[]", "results"),
                    ("BoundingBox3D", "bbox"), ("string", "id")],
    "Detection3DArray": [("std_msgs/Header", "header"), ("Detection3D[]", "detections")],
    "Classification": [("std_msgs/Header", "header"), ("ObjectHypothesis[]", "results")],
    "VisionClass": [("uint16", "class_id"), ("string", "class_name")],
    "LabelInfo": [("std_msgs/Header", "header"), ("VisionClass[]", "class_map"), ("float32", "threshold")],
    "VisionInfo": [("std_msgs/Header", "header"), ("string", "method"), ("string", "database_location"),
                   ("int32", "database_version")],
}

_IDL_PRIMITIVES = {
    "float64": "double", "float32": "float", "uint16": "uint16", "int32": "int32", "string": "string"
}


def _rosidl_type(spec_type: str) -> str:
    """Issue notation -> the string get_fields_and_field_types() reports."""
    is_array = spec_type.endswith("[]")
    base = spec_type.removesuffix("[]")
    if base in _IDL_PRIMITIVES:
        name = _IDL_PRIMITIVES[base]
    else:
        name = base if "/" in base else f"vision_msgs/{base}"
    return f"sequence<{name}>" if is_array else name


HAVE_VISION_MSGS = importlib.util.find_spec("vision_msgs") is not None
needs_vision_msgs = pytest.mark.skipif(
    not HAVE_VISION_MSGS, reason="vision_msgs not built (run scripts/build_vision_msgs.sh .venv)"
)


@needs_vision_msgs
@pytest.mark.parametrize("name", sorted(SPEC))
def test_built_message_has_exactly_the_issue_fields(name: str) -> None:
    cls = getattr(importlib.import_module("vision_msgs.msg"), name)
    expected = {field: _rosidl_type(t) for t, field in SPEC[name]}
    fields = cls.get_fields_and_field_types()
    assert fields == expected
    assert list(fields) == list(expected)  # order too: it fixes the wire layout


def test_msg_files_are_exactly_the_spec() -> None:
    assert sorted(p.stem for p in INTERFACE_MSG_DIR.glob("*.msg")) == sorted(SPEC)
    for name, fields in SPEC.items():
        text = (INTERFACE_MSG_DIR / f"{name}.msg").read_text()
        lines = [ln.split("#")[0].strip() for ln in text.splitlines()]
        assert [tuple(ln.split()) for ln in lines if ln] == [tuple(f) for f in fields], name


def test_cmakelists_lists_every_msg_file() -> None:
    cmake = (INTERFACE_MSG_DIR.parent / "CMakeLists.txt").read_text()
    listed = sorted(re.findall(r'"msg/(\w+)\.msg"', cmake))
    assert listed == sorted(SPEC)


def test_packaged_msg_defs_identical_to_interfaces() -> None:
    names = sorted(p.name for p in INTERFACE_MSG_DIR.glob("*.msg"))
    assert sorted(p.name for p in VISION_MSGS_DEFS_DIR.glob("*.msg")) == names
    match, mismatch, errors = filecmp.cmpfiles(INTERFACE_MSG_DIR, VISION_MSGS_DEFS_DIR, names, shallow=False)
    assert not mismatch and not errors, f"copy interfaces/vision_msgs/msg/*.msg to {VISION_MSGS_DEFS_DIR}"


def _rosbags_detection3d_array(store):
    t = store.types
    time = t["builtin_interfaces/msg/Time"](sec=7, nanosec=8)
    header = t["std_msgs/msg/Header"](stamp=time, frame_id="cam_optical")
    point = t["geometry_msgs/msg/Point"](x=1.5, y=-0.5, z=12.25)
    quat = t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)
    pose = t["geometry_msgs/msg/Pose"](position=point, orientation=quat)
    covariance = np.arange(36, dtype=np.float64)
    hypothesis = t["vision_msgs/msg/ObjectHypothesisWithPose"](
        hypothesis=t["vision_msgs/msg/ObjectHypothesis"](class_id="car", score=0.875),
        pose=t["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=covariance),
    )
    size = t["geometry_msgs/msg/Vector3"](x=1.8, y=1.5, z=4.2)
    bbox = t["vision_msgs/msg/BoundingBox3D"](center=pose, size=size)
    detection = t["vision_msgs/msg/Detection3D"](header=header, results=[hypothesis], bbox=bbox, id="13001")
    return t["vision_msgs/msg/Detection3DArray"](header=header, detections=[detection, detection])


def test_rosbags_round_trips_detection3d_array() -> None:
    store = make_typestore()
    msg = _rosbags_detection3d_array(store)
    raw = store.serialize_cdr(msg, "vision_msgs/msg/Detection3DArray")
    back = store.deserialize_cdr(raw, "vision_msgs/msg/Detection3DArray")
    assert back.header.frame_id == "cam_optical" and len(back.detections) == 2
    det = back.detections[1]
    assert det.id == "13001" and det.results[0].hypothesis.class_id == "car"
    assert det.results[0].hypothesis.score == 0.875 and det.bbox.center.position.z == 12.25
    np.testing.assert_array_equal(det.results[0].pose.covariance, np.arange(36))


def test_rosbag2_file_carries_vision_msgs(tmp_path: Path) -> None:
    from rosbags.rosbag2 import Reader, Writer

    store = make_typestore()
    msg = _rosbags_detection3d_array(store)
    bag = tmp_path / "bag"
    with Writer(bag, version=9) as writer:
        conn = writer.add_connection("/detections_3d", "vision_msgs/msg/Detection3DArray", typestore=store)
        writer.write(conn, 42, store.serialize_cdr(msg, conn.msgtype))
    with Reader(bag) as reader:
        (conn, stamp, raw), = list(reader.messages())
        assert stamp == 42 and conn.msgtype == "vision_msgs/msg/Detection3DArray"
        assert store.deserialize_cdr(raw, conn.msgtype).detections[0].id == "13001"


@needs_vision_msgs
def test_rclpy_cdr_matches_rosbags_definitions() -> None:
    """The built typesupport and the rosbags registration agree byte for byte."""
    from rclpy.serialization import deserialize_message, serialize_message
    from vision_msgs.msg import Detection3DArray, LabelInfo, VisionClass

    store = make_typestore()
    raw = bytes(store.serialize_cdr(_rosbags_detection3d_array(store), "vision_msgs/msg/Detection3DArray"))
    msg = deserialize_message(raw, Detection3DArray)
    assert msg.detections[0].results[0].hypothesis.class_id == "car"
    assert msg.detections[0].bbox.size.z == pytest.approx(4.2)
    assert serialize_message(msg) == raw

    info = LabelInfo(class_map=[VisionClass(class_id=13, class_name="car")], threshold=0.5)
    info.header.frame_id = "cam_optical"
    back = store.deserialize_cdr(serialize_message(info), "vision_msgs/msg/LabelInfo")
    assert back.class_map[0].class_id == 13 and back.class_map[0].class_name == "car"
    assert back.threshold == 0.5
