"""The transport floor for ``node_latency.py``: a process that takes each image and answers at once.

It subscribes to the image the way the node does (typed ``sensor_msgs/Image``, history depth 1,
freed memory kept in the process as the node does on configure) and publishes the image's header
as a ``std_msgs/Header``, nothing else. Publish -> answer received is therefore what any Python
node in another process pays to get one frame in and one small message out on this machine and
transport profile; whatever the node takes beyond it is its own work.

Started by ``node_latency.py`` with its environment (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, its
domain id, the same Fast DDS profile). Run alone it sets LOCALHOST and a domain id from its
process id unless they are set.
"""

from __future__ import annotations

import argparse
import os
import sys

from panoptic_depthlab_core.memory import retain_freed_memory


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-topic", default="/bench_echo/image")
    p.add_argument("--reply-topic", default="/bench_echo/header")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    retain_freed_memory()  # as the node does on configure (parameter retain_freed_memory: true)

    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    rclpy.init()
    node = rclpy.create_node("bench_image_echo")
    reply = node.create_publisher(Header, args.reply_topic, QoSProfile(depth=5))

    def on_image(msg: Image) -> None:
        reply.publish(msg.header)

    node.create_subscription(Image, args.image_topic, on_image, QoSProfile(depth=1))
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
