"""``panoptic-depthlab``, the installed command: the core's subcommands plus the ROS 2 ones.

The ROS subcommands (bags, live play/record, the demo, and ``bench`` with message building) are
added to the core's table and run through the core's ``main``, which reports errors the same way for
all. Nothing is imported until a subcommand runs, so the core subcommands work where rclpy and the
message packages are absent; a ROS subcommand there exits 2 with one line naming the missing module.
"""

from __future__ import annotations

import sys

from panoptic_depthlab_core import cli as core_cli

ROS_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "synth-bag": (
        "panoptic_depthlab_ros.bags.synth_bag",
        "write a synthetic drive with GT depth/panoptic as a rosbag2 bag",
    ),
    "cityscapes-bag": (
        "panoptic_depthlab_ros.bags.cityscapes_bag",
        "write Cityscapes frames (+ camera_info, GT) as a bag",
    ),
    "bag-eval": (
        "panoptic_depthlab_ros.bags.bag_eval",
        "run the node's processing over a bag; output bag + metrics",
    ),
    "bag-eval-fleet": (
        "panoptic_depthlab_ros.bags.fleet",
        "bag-eval over many bags: local worker processes or a Ray cluster; resumable; one report",
    ),
    "play": (
        "panoptic_depthlab_ros.bags.play",
        "publish a bag over rclpy at its recorded rate (like ros2 bag play)",
    ),
    "record": (
        "panoptic_depthlab_ros.bags.record",
        "record topics over rclpy into a bag (like ros2 bag record)",
    ),
    "bench": (
        "panoptic_depthlab_ros.bench",
        "benchmark stages + message building + end to end per backend/precision/size "
        "(without ROS 2: python -m panoptic_depthlab_core.cli bench)",
    ),
    "demo": (
        "panoptic_depthlab_ros.demo",
        "synthetic drive -> live node -> recorded outputs + metrics report",
    ),
}
SUBCOMMANDS: dict[str, tuple[str, str]] = {**core_cli.SUBCOMMANDS, **ROS_SUBCOMMANDS}


def main(argv: list[str] | None = None) -> int:
    return core_cli.main(argv, SUBCOMMANDS)


if __name__ == "__main__":
    sys.exit(main())
