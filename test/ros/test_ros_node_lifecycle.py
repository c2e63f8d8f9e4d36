"""Lifecycle over the standard services: configure / activate / deactivate / cleanup, and no output
while inactive. Own node process with autostart off."""

from __future__ import annotations

import time

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable in this environment")
pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not built (scripts/build_vision_msgs.sh)")

from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from pdl_ros_harness import NodeProcess, make_image, stamp_of, wait_until, write_params  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

pytestmark = pytest.mark.ros


def test_lifecycle_transitions_and_no_output_while_inactive(ros_env, pdl_weights, pdl_client, tmp_path):
    params = write_params(tmp_path / "params.yaml", pdl_weights, autostart=False)
    node = NodeProcess(ros_env, params, tmp_path / "node.log", "pdl_lifecycle", namespace="/lc")
    client = pdl_client
    try:

        def state() -> int:
            return client.call(
                GetState, f"{node.fqn}/get_state", GetState.Request(), timeout=60
            ).current_state.id

        def change(transition: int) -> bool:
            request = ChangeState.Request()
            request.transition.id = transition
            return client.call(ChangeState, f"{node.fqn}/change_state", request, timeout=120).success

        assert state() == State.PRIMARY_STATE_UNCONFIGURED
        image_pub = client.node.create_publisher(Image, "/lc/image", QoSProfile(depth=1))
        client.subscribe("lc_panoptic", Image, f"{node.fqn}/panoptic", QoSProfile(depth=10))

        def publish_and_wait(stamp: int, expect: bool) -> None:
            msg = make_image(160, 120, stamp)
            image_pub.publish(msg)
            if expect:
                wait_until(
                    lambda: any(stamp_of(m) == stamp for m in client.messages("lc_panoptic")),
                    60,
                    f"output for stamp {stamp}",
                    node,
                )
            else:
                time.sleep(2.0)
                assert not any(stamp_of(m) == stamp for m in client.messages("lc_panoptic"))

        assert change(Transition.TRANSITION_CONFIGURE)
        assert state() == State.PRIMARY_STATE_INACTIVE
        assert client.node.count_publishers(f"{node.fqn}/panoptic") == 0  # outputs exist only when active
        publish_and_wait(1, expect=False)

        assert change(Transition.TRANSITION_ACTIVATE)
        assert state() == State.PRIMARY_STATE_ACTIVE
        wait_until(lambda: image_pub.get_subscription_count() > 0, 20, "the node's image subscription", node)
        wait_until(
            lambda: client.node.count_publishers(f"{node.fqn}/panoptic") > 0, 20, "output publisher", node
        )
        time.sleep(0.5)
        publish_and_wait(2, expect=True)

        assert change(Transition.TRANSITION_DEACTIVATE)
        assert state() == State.PRIMARY_STATE_INACTIVE
        wait_until(lambda: image_pub.get_subscription_count() == 0, 20, "the image subscription to go", node)
        publish_and_wait(3, expect=False)

        assert change(Transition.TRANSITION_CLEANUP)
        assert state() == State.PRIMARY_STATE_UNCONFIGURED
        assert node.alive()
        client.node.destroy_publisher(image_pub)
    finally:
        node.stop()


def test_active_node_exits_promptly_on_sigint(ros_env, pdl_weights, pdl_client, tmp_path):
    """The frame loop runs on a non-daemon inference thread: SIGINT while active must still end
    the process (the loop is stopped before anything else is torn down)."""
    params = write_params(tmp_path / "params.yaml", pdl_weights)  # autostart: configure + activate
    node = NodeProcess(ros_env, params, tmp_path / "node.log", "pdl_sigint", namespace="/si")
    try:
        image_pub = pdl_client.node.create_publisher(Image, "/si/image", QoSProfile(depth=1))
        pdl_client.subscribe("si_panoptic", Image, f"{node.fqn}/panoptic", QoSProfile(depth=10))
        wait_until(lambda: image_pub.get_subscription_count() > 0, 120, "the node to become active", node)
        time.sleep(0.5)
        image_pub.publish(make_image(160, 120, 7))
        wait_until(lambda: any(stamp_of(m) == 7 for m in pdl_client.messages("si_panoptic")), 60, "a frame", node)
        node.proc.send_signal(2)
        assert node.proc.wait(timeout=20) == 0, node.log()[-2000:]
        pdl_client.node.destroy_publisher(image_pub)
    finally:
        node.stop()
