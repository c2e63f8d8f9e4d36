"""``panoptic-depthlab play BAG``: publish a bag over rclpy at its recorded rate (``ros2 bag play``).

Messages go out as the stored CDR bytes (``publish`` of raw bytes), so nothing is deserialized.
Topics whose type rclpy cannot import here (e.g. tf2_msgs without ROS installed) are skipped with a
warning. Topics recorded with transient-local QoS (``/tf_static``) are published transient-local,
so late subscribers still get them.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .common import cli_main, describe_topics, iter_bag_messages, open_bag
from .transport import import_message_class, make_qos, ros_context, sigterm_as_interrupt

LATCHED_TOPICS = ("/tf_static",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, help="rosbag2 bag (directory, or a .mcap/.db3 file)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    parser.add_argument("--loop", action="store_true", help="start over at the end until Ctrl-C")
    parser.add_argument("--topics", nargs="+", default=None, help="only these topics (default: all)")
    parser.add_argument(
        "--wait-for-subscribers",
        nargs="+",
        default=(),
        metavar="TOPIC",
        help="before playing, wait until each of these topics has a subscriber",
    )
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for --wait-for-subscribers (default 30)",
    )
    parser.add_argument(
        "--start-delay",
        type=float,
        default=0.5,
        help="seconds between creating publishers and the first message",
    )


def _is_latched(connection: Any) -> bool:
    from rosbags.interfaces import QosDurability

    if connection.topic in LATCHED_TOPICS:
        return True
    profiles = getattr(connection.ext, "offered_qos_profiles", None) or []
    return bool(profiles) and all(p.durability == QosDurability.TRANSIENT_LOCAL for p in profiles)


def wait_for_subscribers(
    node: Any, topics: Sequence[str], timeout_s: float, publishers: dict[str, Any] | None = None
) -> None:
    """Block until every topic has a subscriber; ValueError naming those that did not.

    For topics we publish, "has" means matched with our publisher (data will flow), else the graph.
    """
    publishers = publishers or {}
    deadline = time.monotonic() + timeout_s
    missing = list(topics)

    def has_subscriber(topic: str) -> bool:
        if topic in publishers:
            return publishers[topic].get_subscription_count() > 0
        return node.count_subscribers(topic) > 0

    while missing:
        missing = [t for t in missing if not has_subscriber(t)]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise ValueError(f"no subscriber appeared within {timeout_s:g} s on: {', '.join(missing)}")
        time.sleep(0.05)


def play_bag(
    bag: str | Path,
    rate: float = 1.0,
    loop: bool = False,
    topics: Sequence[str] | None = None,
    context: Any = None,
    wait_for: Sequence[str] = (),
    wait_timeout_s: float = 30.0,
    start_delay_s: float = 0.5,
    stop_event: threading.Event | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Publish the bag's messages at ``rate`` x the recorded timing; returns messages sent per topic."""
    from rclpy.node import Node

    if not rate > 0:
        raise ValueError(f"--rate must be > 0, got {rate}")
    stop_event = stop_event or threading.Event()
    reader = open_bag(bag)
    try:
        all_topics = reader.topics
        wanted = list(all_topics) if topics is None else list(topics)
        unknown = [t for t in wanted if t not in all_topics]
        if unknown:
            raise ValueError(
                f"topic(s) {', '.join(unknown)} not in bag {bag}; the bag has:\n{describe_topics(reader)}"
            )
        classes: dict[str, Any] = {}
        for topic in wanted:
            try:
                classes[topic] = import_message_class(all_topics[topic].msgtype)
            except ImportError as exc:
                print(f"play: skipping {topic}: {exc}", file=sys.stderr)
        if not classes:
            raise ValueError(f"none of the selected topics of {bag} has a message type rclpy can import here")
        connections = [c for t in classes for c in all_topics[t].connections]
        total = sum(all_topics[t].msgcount for t in classes)
        sent = dict.fromkeys(classes, 0)
        with ros_context(context) as ctx:
            node = Node("panoptic_depthlab_player", context=ctx)
            try:
                publishers = {}
                for topic, cls in classes.items():
                    latched = any(_is_latched(c) for c in all_topics[topic].connections)
                    publishers[topic] = node.create_publisher(cls, topic, make_qos(transient_local=latched))
                if wait_for:
                    wait_for_subscribers(node, wait_for, wait_timeout_s, publishers)
                time.sleep(max(0.0, start_delay_s))
                bar = tqdm(total=total, unit="msg", desc="play", disable=not progress, dynamic_ncols=True)
                try:
                    while not stop_event.is_set():
                        first_log: int | None = None
                        wall_start = time.monotonic()
                        for message in iter_bag_messages(reader, connections):
                            if first_log is None:
                                first_log = message.log_time_ns
                            due = wall_start + (message.log_time_ns - first_log) / 1e9 / rate
                            while not stop_event.is_set():
                                remaining = due - time.monotonic()
                                if remaining <= 0:
                                    break
                                time.sleep(min(remaining, 0.05))
                            if stop_event.is_set():
                                break
                            publishers[message.topic].publish(message.raw)
                            sent[message.topic] += 1
                            bar.update(1)
                        if not loop:
                            break
                        bar.reset()
                finally:
                    bar.close()
                # Reliable delivery of the last messages needs the publishers alive until acknowledged.
                from rclpy.duration import Duration

                for publisher in publishers.values():
                    publisher.wait_for_all_acked(Duration(seconds=2))
            finally:
                node.destroy_node()
        return sent
    finally:
        reader.close()


def run(args: argparse.Namespace) -> int:
    with sigterm_as_interrupt():
        sent = play_bag(
            args.bag,
            rate=args.rate,
            loop=args.loop,
            topics=args.topics,
            wait_for=args.wait_for_subscribers,
            wait_timeout_s=args.wait_timeout,
            start_delay_s=args.start_delay,
        )
    for topic, count in sent.items():
        print(f"{topic}: {count} messages")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(add_arguments, run, "panoptic-depthlab play"))
