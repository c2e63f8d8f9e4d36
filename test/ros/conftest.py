"""Fixtures for the node tests: one shared node process (session scope) and one in-test client.

The shared node runs with the shipped shared-memory Fast DDS profile, the small model at a 128x256
network input (fast on CPU) and deterministic weights; tests that change its parameters put them back.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pdl_ros_harness import (
    Client,
    NodeProcess,
    diagnostics_values,
    input_publishers,
    make_camera_info,
    make_test_weights,
    wait_until,
    write_params,
)

SHARED_NODE_NAME = "pdl_node"


@pytest.fixture(scope="session")
def pdl_weights(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable in this environment")
    return make_test_weights(tmp_path_factory.mktemp("pdl_weights") / "small_seed0.safetensors")


@pytest.fixture(scope="session")
def pdl_context(ros_env: dict[str, str], ros_domain_id: int):
    """A session-long rclpy context on our domain (the function-scoped rclpy_context is too short here)."""
    rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable in this environment")
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    yield context
    rclpy.try_shutdown(context=context)


@pytest.fixture(scope="session")
def pdl_client(pdl_context) -> Iterator[Client]:
    from diagnostic_msgs.msg import DiagnosticArray

    client = Client(pdl_context)
    client.subscribe("diagnostics", DiagnosticArray, "/diagnostics", 50)
    yield client
    client.close()


@pytest.fixture(scope="session")
def pdl_node(ros_env, pdl_weights, pdl_client, tmp_path_factory) -> Iterator[NodeProcess]:
    """The shared node, active, with a CameraInfo for 640x480 already received."""
    tmp = tmp_path_factory.mktemp("pdl_node")
    params = write_params(tmp / "params.yaml", pdl_weights)
    node = NodeProcess(ros_env, params, tmp / "node.log", SHARED_NODE_NAME, shm_profile=True)
    try:
        wait_until(
            lambda: (diagnostics_values_latest(pdl_client, node.fqn) or {}).get("state") == "active",
            150,
            "the shared node to become active",
            node,
        )
        yield node
    finally:
        node.stop()


def diagnostics_values_latest(client: Client, fqn: str) -> dict[str, str] | None:
    for msg in reversed(client.messages("diagnostics")):
        values = diagnostics_values(msg, fqn)
        if values is not None:
            return values
    return None


@pytest.fixture(scope="session")
def pdl_publishers(pdl_client, pdl_node):
    """Reliable image + camera_info publishers on the shared node's inputs (default transports)."""
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import CompressedImage

    compressed_pub = pdl_client.node.create_publisher(
        CompressedImage, "/test/image/compressed", QoSProfile(depth=1)
    )
    return {
        **input_publishers(pdl_client, "/test", pdl_node),
        "compressed": compressed_pub,
        "default_info": make_camera_info(640, 480),
    }
