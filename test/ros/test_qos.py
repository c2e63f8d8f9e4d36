"""Input QoS helpers: pure choices, then a real rclpy round trip over loopback.

With the helper's profile, a subscription must receive from a best-effort publisher (a reliable
subscription would get nothing) and from a reliable publisher.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable in this environment")

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402

from panoptic_depthlab_ros.qos import (  # noqa: E402
    input_qos_profile,
    latched_qos_profile,
    parse_input_reliability,
    reliability_for_publishers,
    resolve_reliability,
    topic_input_qos,
)

pytestmark = pytest.mark.ros

RELIABLE, BEST_EFFORT = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT


def _endpoint(reliability: ReliabilityPolicy) -> SimpleNamespace:
    return SimpleNamespace(qos_profile=QoSProfile(depth=1, reliability=reliability))


def test_auto_follows_publishers() -> None:
    assert reliability_for_publishers([]) == RELIABLE  # nobody yet: default cameras are reliable
    assert reliability_for_publishers([_endpoint(RELIABLE), _endpoint(RELIABLE)]) == RELIABLE
    assert reliability_for_publishers([_endpoint(RELIABLE), _endpoint(BEST_EFFORT)]) == BEST_EFFORT
    assert resolve_reliability("reliable", [_endpoint(BEST_EFFORT)]) == RELIABLE
    assert resolve_reliability("best_effort", [_endpoint(RELIABLE)]) == BEST_EFFORT
    assert resolve_reliability("auto", [_endpoint(BEST_EFFORT)]) == BEST_EFFORT


def test_input_profile_is_keep_last_one_volatile() -> None:
    profile = input_qos_profile("best_effort")
    assert profile.history == HistoryPolicy.KEEP_LAST and profile.depth == 1
    assert profile.reliability == BEST_EFFORT and profile.durability == DurabilityPolicy.VOLATILE
    assert input_qos_profile(RELIABLE).reliability == RELIABLE
    assert latched_qos_profile().durability == DurabilityPolicy.TRANSIENT_LOCAL


@pytest.mark.parametrize("bad", ["", "sensor_data", "BEST_AVAILABLE", "1"])
def test_invalid_mode_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="input_reliability must be one of auto, reliable, best_effort"):
        parse_input_reliability(bad)


def test_mode_spelling_is_normalised() -> None:
    assert parse_input_reliability(" Best-Effort ") == "best_effort"


def _wait_for(predicate, executor, timeout_s: float, step=None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if step is not None:
            step()
        executor.spin_once(timeout_sec=0.05)
        if predicate():
            return True
    return False


def test_auto_profile_receives_best_effort_and_reliable_publishers(rclpy_context) -> None:
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from panoptic_depthlab_core.image_messages import image_msg_to_rgb
    from panoptic_depthlab_ros.image_conversion import numpy_to_image_msg

    node = rclpy.create_node("qos_helper_test", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    try:
        frames = {
            "cam_best_effort/image": np.full((4, 6, 3), 40, np.uint8),
            "cam_reliable/image": np.full((4, 6, 3), 200, np.uint8),
        }
        offered = {"cam_best_effort/image": BEST_EFFORT, "cam_reliable/image": RELIABLE}
        publishers = {
            topic: node.create_publisher(Image, topic, QoSProfile(depth=1, reliability=offered[topic]))
            for topic in frames
        }

        def graph_has_publishers() -> bool:
            infos = [node.get_publishers_info_by_topic(node.resolve_topic_name(t)) for t in frames]
            return all(len(i) == 1 for i in infos)

        assert _wait_for(graph_has_publishers, executor, 5.0), "publishers never showed up in the graph"

        received: dict[str, np.ndarray] = {}
        for topic in frames:
            profile = topic_input_qos(node, topic, "auto")
            assert profile.reliability == offered[topic], topic
            assert profile.depth == 1
            node.create_subscription(
                Image, topic, lambda msg, t=topic: received.setdefault(t, image_msg_to_rgb(msg)), profile
            )

        def publish() -> None:
            for topic, pixels in frames.items():
                publishers[topic].publish(numpy_to_image_msg(pixels, "rgb8"))

        got_both = _wait_for(lambda: len(received) == 2, executor, 10.0, step=publish)
        assert got_both, f"received only {list(received)}"
        for topic, pixels in frames.items():
            np.testing.assert_array_equal(received[topic], pixels)
    finally:
        executor.shutdown()
        node.destroy_node()
