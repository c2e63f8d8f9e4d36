"""The node over real rclpy (own process, LOCALHOST, our domain): outputs, QoS, bad input, parameters.

Stamps identify frames: each test uses its own range of header.stamp.sec values, and waits for the
outputs carrying that stamp.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable in this environment")
pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not built (scripts/build_vision_msgs.sh)")

import yaml  # noqa: E402
from pdl_ros_harness import (  # noqa: E402
    IMAGE_OUTPUTS,
    OUTPUT_NAMES,
    REPO,
    SHM_PROFILE,
    SMALL_MODEL,
    env_with,
    image_pixels,
    latest_diagnostics,
    make_camera_info,
    make_image,
    set_parameters,
    stamp_of,
    wait_until,
)
from rclpy.qos import DurabilityPolicy, QoSProfile  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage  # noqa: E402
from vision_msgs.msg import LabelInfo  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from panoptic_depthlab_ros.node import OUTPUT_TYPES  # noqa: E402

pytestmark = pytest.mark.ros



@pytest.fixture(scope="module")
def outputs(pdl_client, pdl_node, pdl_publishers):
    """Subscribe every output of the shared node once for this module."""
    for name in OUTPUT_NAMES:
        pdl_client.subscribe(name, OUTPUT_TYPES[name], f"{pdl_node.fqn}/{name}", QoSProfile(depth=10))
    for name in OUTPUT_NAMES:
        wait_until(
            lambda n=name: pdl_client.node.count_publishers(f"{pdl_node.fqn}/{n}") > 0,
            20,
            f"publisher of {name}",
            pdl_node,
        )
    time.sleep(0.5)  # let the node's publishers match our subscriptions
    return pdl_client


def by_stamp(client, name: str, stamp: int):
    for msg in client.messages(name):
        if stamp_of(msg) == stamp:
            return msg
    return None


def send_frame(
    client,
    pubs,
    node,
    width: int,
    height: int,
    stamp: int,
    outputs=("panoptic",),
    timeout: float = 90.0,
    info=None,
):
    """Publish CameraInfo (if given) then an image; wait for the named outputs with that stamp."""
    if info is not None:
        info.header.stamp.sec = stamp
        pubs["camera_info"].publish(info)
        time.sleep(0.3)
    image = make_image(width, height, stamp, seed=stamp)
    pubs["image"].publish(image)
    wait_until(
        lambda: all(by_stamp(client, n, stamp) is not None for n in outputs),
        timeout,
        f"outputs {outputs} for stamp {stamp}",
        node,
    )
    return image


def diag_count(client, node, key: str) -> int:
    return int(latest_diagnostics(client, node.fqn).get(key, "0"))


def test_outputs_640x480_every_output_and_late_label_info(outputs, pdl_node, pdl_publishers):
    send_frame(
        outputs, pdl_publishers, pdl_node, 640, 480, 100, OUTPUT_NAMES, info=make_camera_info(640, 480)
    )
    for name in OUTPUT_NAMES:
        msg = by_stamp(outputs, name, 100)
        msg = msg.markers[0] if name == "markers" else msg
        assert msg.header.frame_id == "camera_optical", name
        assert msg.header.stamp.nanosec == 0, name
    for name, encoding in IMAGE_OUTPUTS.items():
        msg = by_stamp(outputs, name, 100)
        assert (msg.encoding, msg.width, msg.height) == (encoding, 640, 480), name
    info = by_stamp(outputs, "camera_info", 100)
    assert (info.width, info.height) == (640, 480)
    panoptic = np.frombuffer(bytes(by_stamp(outputs, "panoptic", 100).data), np.uint16)
    ids = set(np.unique(panoptic).tolist()) - {65535}
    assert ids and all(i // 1000 < 19 for i in ids)
    depth = np.frombuffer(bytes(by_stamp(outputs, "depth", 100).data), np.float32)
    assert depth.size == 640 * 480 and np.isfinite(depth).any()
    markers = by_stamp(outputs, "markers", 100).markers
    assert markers[0].action == Marker.DELETEALL
    texts = [m.text for m in markers if m.type == Marker.TEXT_VIEW_FACING]
    assert texts and all(t.endswith(" m") for t in texts)

    # A subscriber that arrives after activation still gets LabelInfo (transient_local).
    late = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    outputs.subscribe("label_info", LabelInfo, f"{pdl_node.fqn}/label_info", late)
    label_info = wait_until(
        lambda: outputs.messages("label_info"), 20, "LabelInfo for a late subscriber", pdl_node
    )
    class_map = {c.class_id: c.class_name for c in label_info[0].class_map}
    assert len(class_map) == 19 and class_map[13] == "car" and class_map[0] == "road"


def test_detection3d_distances_equal_predictor(outputs, pdl_node, pdl_publishers, pdl_weights):
    from panoptic_depthlab_ros.messages import MessageOptions, detection_segments
    from panoptic_depthlab_ros.params import NodeParams
    from panoptic_depthlab_ros.processing import intrinsics_for, load_predictor

    info = make_camera_info(640, 480)
    image = send_frame(
        outputs, pdl_publishers, pdl_node, 640, 480, 200, ("detections_3d", "detections"), info=info
    )
    predictor = load_predictor(
        NodeParams(model_config=str(SMALL_MODEL), weights=str(pdl_weights), input_height=128, input_width=256)
    )
    result = predictor.predict(image_pixels(image), intrinsics_for(info, 640, 480))
    expected = {
        str(s.id): s
        for s in detection_segments(result, MessageOptions(include_stuff_detections=True))
        if s.position_xyz_m is not None
    }
    got = {d.id: d for d in by_stamp(outputs, "detections_3d", 200).detections}
    assert expected, "the predictor found no segments with a 3D position"
    assert set(got) == set(expected)
    for seg_id, det in got.items():
        seg = expected[seg_id]
        position = det.bbox.center.position
        assert position.z == pytest.approx(seg.distance_m, rel=1e-4, abs=1e-4)
        assert (position.x, position.y) == pytest.approx(seg.position_xyz_m[:2], rel=1e-3, abs=1e-3)
        assert det.results[0].hypothesis.class_id == seg.class_name
    detections_2d = {d.id for d in by_stamp(outputs, "detections", 200).detections}
    assert detections_2d == {
        str(s.id) for s in detection_segments(result, MessageOptions(include_stuff_detections=True))
    }


def test_output_images_equal_the_predictors_maps(outputs, pdl_node, pdl_publishers, pdl_weights):
    """The images leave through the GIL-free serialised path (no fallback warning in the log) and
    carry the Predictor's maps for the same frame: 640x480 from a 128x256 network, so the node
    makes only the maps they read and takes the rest from the network's map."""
    from panoptic_depthlab_ros.messages import panoptic_to_uint16
    from panoptic_depthlab_ros.params import NodeParams
    from panoptic_depthlab_ros.processing import intrinsics_for, load_predictor

    info = make_camera_info(640, 480)
    image = send_frame(outputs, pdl_publishers, pdl_node, 640, 480, 210, IMAGE_OUTPUTS, info=info)
    assert "serialized_image_publishing" not in pdl_node.log()
    assert latest_diagnostics(outputs, pdl_node.fqn)["image_publishing"] == "serialized, GIL released"
    predictor = load_predictor(
        NodeParams(model_config=str(SMALL_MODEL), weights=str(pdl_weights), input_height=128, input_width=256)
    )
    result = predictor.predict(image_pixels(image), intrinsics_for(info, 640, 480))
    got = {name: by_stamp(outputs, name, 210) for name in IMAGE_OUTPUTS}
    for name, msg in got.items():
        assert (msg.width, msg.height, msg.header.frame_id) == (640, 480, "camera_optical"), name
    panoptic = np.frombuffer(bytes(got["panoptic"].data), np.uint16).reshape(480, 640)
    semantic = np.frombuffer(bytes(got["semantic"].data), np.uint8).reshape(480, 640)
    depth = np.frombuffer(bytes(got["depth"].data), np.float32).reshape(480, 640)
    # another process, maybe other torch threads: a border pixel may flip where logits nearly tie
    assert (panoptic == panoptic_to_uint16(result.panoptic_ids)).mean() > 0.999
    assert (semantic == result.semantic).mean() > 0.999
    np.testing.assert_allclose(depth, result.depth_m, rtol=1e-4, atol=1e-4)
    assert len(got["visualization"].data) == 480 * 640 * 3


def test_outputs_1920x1080(outputs, pdl_node, pdl_publishers):
    send_frame(
        outputs,
        pdl_publishers,
        pdl_node,
        1920,
        1080,
        300,
        OUTPUT_NAMES,
        timeout=150,
        info=make_camera_info(1920, 1080),
    )
    for name, encoding in IMAGE_OUTPUTS.items():
        msg = by_stamp(outputs, name, 300)
        assert (msg.encoding, msg.width, msg.height, msg.header.frame_id) == (
            encoding,
            1920,
            1080,
            "camera_optical",
        )
    assert by_stamp(outputs, "detections_3d", 300).header.frame_id == "camera_optical"
    pdl_publishers["camera_info"].publish(make_camera_info(640, 480))


def _minor_faults(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[7])  # minflt: field 10 of proc(5), counted after the ")" of the name


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux) to count page faults")
def test_1080p_frames_reuse_freed_memory(outputs, pdl_node, pdl_publishers):
    """retain_freed_memory (default on): a steady 1080p frame maps almost no new pages (glibc's
    default unmaps each frame's big arrays and empty thread heaps: ~7,000 faults a frame here)."""
    if "retain_freed_memory: glibc" not in pdl_node.log():
        pytest.skip("not glibc: freed memory is left to the C library")
    info = make_camera_info(1920, 1080)
    for stamp in (310, 311):  # the first 1080p frames map the heap once
        send_frame(outputs, pdl_publishers, pdl_node, 1920, 1080, stamp, OUTPUT_NAMES, timeout=150, info=info)
    before = _minor_faults(pdl_node.proc.pid)
    for stamp in (312, 313):
        send_frame(outputs, pdl_publishers, pdl_node, 1920, 1080, stamp, OUTPUT_NAMES, timeout=150, info=info)
    per_frame = (_minor_faults(pdl_node.proc.pid) - before) / 2
    pdl_publishers["camera_info"].publish(make_camera_info(640, 480))
    assert per_frame < 2500, f"{per_frame:.0f} minor page faults per 1080p frame"


_BEST_EFFORT_PUBLISHER = """
import signal, sys, time, numpy as np, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node("best_effort_camera")
qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
pub = node.create_publisher(Image, "/test/image", qos)
img = Image(height=1080, width=1920, encoding="rgb8", step=1920 * 3)
img.data = np.random.default_rng(1).integers(0, 255, 1080 * 1920 * 3, dtype=np.uint8).tobytes()
img.header.frame_id = "camera_optical"
deadline = time.time() + float(sys.argv[1])
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
i = 0
while time.time() < deadline and not stop:
    img.header.stamp.sec = 5000 + i
    pub.publish(img)
    i += 1
    rclpy.spin_once(node, timeout_sec=0.5)
node.destroy_node()  # leave the graph cleanly, so the node sees the publisher go at once
rclpy.shutdown()
"""


def test_best_effort_1080p_publisher_with_shm_profile(outputs, pdl_node, pdl_publishers, ros_env):
    """auto QoS re-subscribes best-effort when a best-effort camera appears; with the shipped SHM
    profile on both sides its 1080p frames cross processes. Afterwards the reliable camera works again."""
    env = env_with(ros_env, FASTDDS_DEFAULT_PROFILES_FILE=str(SHM_PROFILE))
    camera = subprocess.Popen(
        [sys.executable, "-c", _BEST_EFFORT_PUBLISHER, "60"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            lambda: "best_effort" in latest_diagnostics(outputs, pdl_node.fqn).get("input_reliability", ""),
            30,
            "the node to switch to a best-effort subscription",
            pdl_node,
        )
        got = wait_until(
            lambda: [m for m in outputs.messages("panoptic") if stamp_of(m) >= 5000],
            120,
            "an output for a best-effort 1080p frame",
            pdl_node,
        )
        assert (got[0].width, got[0].height) == (1920, 1080)
    finally:
        camera.terminate()
        try:
            camera.wait(timeout=20)
        except subprocess.TimeoutExpired:
            camera.kill()
            camera.wait()
    wait_until(
        lambda: (
            latest_diagnostics(outputs, pdl_node.fqn).get("input_reliability", "").endswith("reliable")
            and "best" not in latest_diagnostics(outputs, pdl_node.fqn)["input_reliability"]
        ),
        30,
        "the node to go back to reliable",
        pdl_node,
    )
    time.sleep(1.0)  # the new reliable subscription has to match our publisher
    send_frame(
        outputs, pdl_publishers, pdl_node, 640, 480, 400, ("panoptic",), info=make_camera_info(640, 480)
    )


def _bad_images():
    def image(**changes):
        msg = make_image(64, 48, 0)
        for key, value in changes.items():
            setattr(msg, key, value)
        return msg

    return {
        "unsupported_encoding": image(encoding="32FC1"),
        "step_too_small": image(step=64 * 3 - 1),
        "data_too_short": image(data=bytes(64 * 3 * 10)),
        "zero_size": image(width=0, step=0, data=b""),
        "too_large": image(width=20000, height=20000, step=60000, data=bytes(100)),
    }


BAD_IMAGE_REASONS = ("unsupported_encoding", "step_too_small", "data_too_short", "zero_size", "too_large")


@pytest.mark.parametrize("reason", BAD_IMAGE_REASONS)
def test_bad_image_then_valid_frame(outputs, pdl_node, pdl_publishers, reason):
    stamp = 600 + BAD_IMAGE_REASONS.index(reason)
    key = f"rejected_{reason}"
    before = diag_count(outputs, pdl_node, key)
    pdl_publishers["image"].publish(_bad_images()[reason])
    wait_until(lambda: diag_count(outputs, pdl_node, key) == before + 1, 30, f"{key} to count it", pdl_node)
    send_frame(outputs, pdl_publishers, pdl_node, 640, 480, stamp)
    assert pdl_node.alive()
    assert f"rejected input ({reason})" in pdl_node.log()


def test_corrupt_jpeg_on_compressed_input_then_valid_jpeg(outputs, pdl_node, pdl_publishers):
    import cv2

    assert set_parameters(outputs, pdl_node.fqn, image_transport="compressed")[0].successful
    try:
        wait_until(
            lambda: pdl_publishers["compressed"].get_subscription_count() > 0,
            20,
            "the node to subscribe image/compressed",
            pdl_node,
        )
        before = diag_count(outputs, pdl_node, "rejected_decode_failed")
        ok, jpeg = cv2.imencode(".jpg", image_pixels(make_image(640, 480, 0)))
        corrupt = CompressedImage(format="jpeg", data=jpeg.tobytes()[:200] + bytes(300))
        corrupt.header.stamp.sec = 700
        pdl_publishers["compressed"].publish(corrupt)
        wait_until(
            lambda: diag_count(outputs, pdl_node, "rejected_decode_failed") == before + 1,
            30,
            "the corrupt JPEG to be counted",
            pdl_node,
        )
        valid = CompressedImage(format="jpeg", data=jpeg.tobytes())
        valid.header.stamp.sec = 701
        valid.header.frame_id = "camera_optical"
        pdl_publishers["compressed"].publish(valid)
        wait_until(lambda: by_stamp(outputs, "panoptic", 701), 60, "output for the valid JPEG", pdl_node)
        assert "rejected input (decode_failed)" in pdl_node.log()
    finally:
        assert set_parameters(outputs, pdl_node.fqn, image_transport="raw")[0].successful
    wait_until(lambda: pdl_publishers["image"].get_subscription_count() > 0, 20, "raw input again", pdl_node)


def _bad_info(kind: str) -> CameraInfo:
    if kind == "k_zeros":
        info = make_camera_info(640, 480)
        info.k = [0.0] * 9
        info.p = [0.0] * 12
    elif kind == "k_nan":
        info = make_camera_info(640, 480)
        info.k = [float("nan")] * 9
        info.p = [0.0] * 12
    else:
        info = make_camera_info(1280, 720)
    return info


@pytest.mark.parametrize(
    "kind,reason",
    [
        ("k_zeros", "invalid_camera_info"),
        ("k_nan", "invalid_camera_info"),
        ("size", "camera_info_size_mismatch"),
    ],
)
def test_bad_camera_info_then_valid_frame_without_3d(outputs, pdl_node, pdl_publishers, kind, reason):
    stamp = {"k_zeros": 800, "k_nan": 810, "size": 820}[kind]
    key = f"rejected_{reason}"
    before = diag_count(outputs, pdl_node, key)
    pdl_publishers["camera_info"].publish(_bad_info(kind))
    time.sleep(0.5)
    send_frame(outputs, pdl_publishers, pdl_node, 640, 480, stamp, ("panoptic", "detections"))
    wait_until(lambda: diag_count(outputs, pdl_node, key) == before + 1, 30, f"{key} to count it", pdl_node)
    time.sleep(0.5)
    assert by_stamp(outputs, "detections_3d", stamp) is None  # no usable K -> no 3D output
    assert f"rejected input ({reason})" in pdl_node.log()
    # A good CameraInfo brings the 3D outputs back.
    send_frame(
        outputs,
        pdl_publishers,
        pdl_node,
        640,
        480,
        stamp + 1,
        ("detections_3d",),
        info=make_camera_info(640, 480),
    )


def test_invalid_parameters_refused_with_reason(outputs, pdl_node):
    cases = {
        "nms_kernel": 4,
        "backend": "foo",
        "input_reliability": "sometimes",
        "min_depth_m": 100.0,
        "device": "gpu7",
        "center_threshold": 2.0,
    }
    for name, value in cases.items():
        result = set_parameters(outputs, pdl_node.fqn, **{name: value})[0]
        assert not result.successful, name
        assert result.reason, name
    assert "min_depth_m" in set_parameters(outputs, pdl_node.fqn, min_depth_m=100.0)[0].reason
    assert set_parameters(outputs, pdl_node.fqn, center_threshold=0.2)[0].successful
    assert set_parameters(outputs, pdl_node.fqn, center_threshold=0.1)[0].successful
    assert all(r.successful for r in set_parameters(outputs, pdl_node.fqn, center_threshold=-1.0, thing_area=0))
    assert set_parameters(outputs, pdl_node.fqn, thing_area=-1)[0].successful  # the model's again
    assert pdl_node.alive()


def _launch_parameter_arguments() -> set[str]:
    tree = ast.parse((REPO / "launch" / "panoptic_depthlab.launch.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", "") == "PARAMETER_ARGUMENTS" for t in node.targets
        ):
            return set(ast.literal_eval(node.value))
    raise AssertionError("launch file has no PARAMETER_ARGUMENTS")


def test_yaml_keys_and_launch_arguments_are_declared_parameters(outputs, pdl_node):
    from rcl_interfaces.srv import ListParameters

    from panoptic_depthlab_ros.params import PARAMETER_NAMES

    response = outputs.call(ListParameters, f"{pdl_node.fqn}/list_parameters", ListParameters.Request())
    declared = set(response.result.names)
    assert set(PARAMETER_NAMES) <= declared
    config = yaml.safe_load((REPO / "config" / "panoptic_depthlab.yaml").read_text())
    yaml_keys = set(config["/**"]["ros__parameters"])
    assert yaml_keys <= declared, yaml_keys - declared
    assert yaml_keys == set(PARAMETER_NAMES)  # the shipped file lists every parameter
    launch_params = _launch_parameter_arguments()
    assert launch_params and launch_params <= declared, launch_params - declared
