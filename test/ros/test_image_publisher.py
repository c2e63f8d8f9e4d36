"""ImagePublisher: images serialised here and published through rcl arrive as rclpy's would."""

from __future__ import annotations

import time
import types

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable in this environment")

from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from panoptic_depthlab_ros.image_conversion import numpy_to_image_msg  # noqa: E402
from panoptic_depthlab_ros.image_publisher import ImagePublisher, serialize_image  # noqa: E402


def _header(frame_id: str, sec: int = 1700000000, nanosec: int = 999_999_999) -> Header:
    header = Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = sec, nanosec
    return header


@pytest.mark.parametrize("frame_id", ["", "c", "cam", "cam_opt", "camera_optical_frame", "ünïcode"])
@pytest.mark.parametrize(
    "pixels, encoding",
    [
        (np.arange(35, dtype=np.uint16).reshape(5, 7), "16UC1"),
        (np.linspace(-1, 80, 15, dtype=np.float32).reshape(3, 5), "32FC1"),
        (np.arange(18, dtype=np.uint8).reshape(2, 3, 3), "bgr8"),
        (np.arange(3, dtype=np.uint8).reshape(1, 3), "mono8"),
    ],
)
def test_serialized_bytes_equal_rclpys(frame_id, pixels, encoding) -> None:
    """Every string length mod 4 (CDR alignment after frame_id and encoding) and element size."""
    _assert_same_cdr(numpy_to_image_msg(pixels, encoding, _header(frame_id)))


def test_serialized_bytes_of_unusual_images_equal_rclpys() -> None:
    _assert_same_cdr(Image())
    odd = Image(height=2, width=3, encoding="yuv422_yuy2", is_bigendian=1, step=7, data=bytes(range(14)))
    odd.header = _header("x", sec=-5, nanosec=0)
    _assert_same_cdr(odd)


def _assert_same_cdr(msg: Image) -> None:
    """rclpy reads our bytes back as ``msg``; they equal rclpy's own except in the alignment
    padding, which Fast CDR leaves uninitialised (ours is zero)."""
    ours, theirs = serialize_image(msg).tobytes(), serialize_message(msg)
    assert deserialize_message(ours, Image) == msg
    assert len(ours) == len(theirs)
    differ = [i for i in range(len(ours)) if ours[i] != theirs[i]]
    assert all(ours[i] == 0 for i in differ), differ
    assert len(differ) <= 6  # at most 3 padding bytes after each of the two strings


def _receive(context, gil_free: bool, messages: list[Image]) -> tuple[ImagePublisher, list[Image], list[str]]:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile

    node = rclpy.create_node("image_publisher_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    received: list[Image] = []
    warnings: list[str] = []
    try:
        node.create_subscription(Image, "/pdl_test/image", received.append, QoSProfile(depth=10))
        publisher = ImagePublisher(node.create_publisher(Image, "/pdl_test/image", QoSProfile(depth=10)),
                                   gil_free=gil_free, warn=warnings.append)  # fmt: skip
        deadline = time.monotonic() + 10
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        for msg in messages:
            publisher.publish(msg)
        while len(received) < len(messages) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown()
        node.destroy_node()
    return publisher, received, warnings


@pytest.mark.parametrize("gil_free", [True, False])
def test_published_images_arrive_unchanged(rclpy_context, gil_free) -> None:
    """Over real rclpy: 1080p depth and overlay images, and a small one, field for field."""
    rng = np.random.default_rng(0)
    sent = [
        numpy_to_image_msg(rng.uniform(0, 80, (1080, 1920)).astype(np.float32), "32FC1", _header("cam", 1, 2)),
        numpy_to_image_msg(rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8), "bgr8", _header("cam", 1, 2)),
        numpy_to_image_msg(np.full((3, 5), 65535, np.uint16), "16UC1", _header("other_frame", 3, 4)),
    ]
    publisher, received, warnings = _receive(rclpy_context, gil_free, sent)
    # the wheels here have everything the GIL-free path needs: it must really have been used
    assert publisher.gil_free is gil_free and warnings == []
    assert publisher.unavailable_reason == (None if gil_free else "switched off")
    assert len(received) == len(sent)
    for got, want in zip(received, sent, strict=True):
        assert got == want


def test_the_probe_has_no_padding_and_matches_this_rmw() -> None:
    """The start-up check compares exact bytes, so its probe must need no alignment padding."""
    from panoptic_depthlab_ros.image_publisher import _probe_image, _serializer_matches_rmw

    probe = _probe_image()
    assert (len(probe.header.frame_id) + 1) % 4 == 0 and (len(probe.encoding) + 1 + 1) % 4 == 0
    assert _serializer_matches_rmw()


def test_a_different_rmw_serialization_falls_back(monkeypatch) -> None:
    """Where the rmw's bytes differ from ours (another CDR representation), rclpy's publish is used."""
    import panoptic_depthlab_ros.image_publisher as module

    monkeypatch.setattr(module, "_serializer_matches_rmw", lambda: False)
    warnings: list[str] = []
    plain = types.SimpleNamespace(handle=types.SimpleNamespace(pointer=1), publish=lambda msg: None)
    publisher = ImagePublisher(plain, gil_free=True, warn=warnings.append)
    assert not publisher.gil_free and warnings == ["this rmw serializes sensor_msgs/Image differently"]


def test_without_the_rcl_publisher_address_it_falls_back_and_says_why() -> None:
    """An rclpy whose publisher handle has no ``pointer``: ordinary publish, one warning."""
    published: list[object] = []
    warnings: list[str] = []
    plain = types.SimpleNamespace(handle=object(), publish=published.append)
    publisher = ImagePublisher(plain, gil_free=True, warn=warnings.append)
    assert not publisher.gil_free and warnings == [publisher.unavailable_reason]
    assert "address" in publisher.unavailable_reason
    msg = Image()
    publisher.publish(msg)
    assert published == [msg]
