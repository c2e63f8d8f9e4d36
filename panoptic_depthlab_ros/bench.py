"""``panoptic-depthlab bench`` with ROS 2: the core's per-stage benchmark plus message building.

The stages up to ``to_host`` are the core's (``panoptic_depthlab_core.bench``); this adds the time
``build_messages`` takes to turn each result into every output message the node publishes (default
``MessageOptions``: all outputs, no camera intrinsics), so end to end = decode + predictor + messages.
"""

from __future__ import annotations

import argparse
from typing import Any

from std_msgs.msg import Header

from panoptic_depthlab_core import bench as core_bench
from panoptic_depthlab_core.results import FrameResult
from panoptic_depthlab_ros.messages import MessageOptions, build_messages

add_arguments = core_bench.add_arguments


def message_builder(options: MessageOptions | None = None) -> core_bench.MessageBuilder:
    """(result, rgb) -> the node's output messages for one frame, as the node builds them."""
    options = options or MessageOptions()

    def build(result: FrameResult, rgb: Any) -> Any:
        return build_messages(result, Header(frame_id="camera"), None, options, rgb)

    return build


def run_bench(args: argparse.Namespace) -> dict:
    return core_bench.run_bench(args, message_builder())


def run(args: argparse.Namespace) -> int:
    return core_bench.run(args, message_builder())
