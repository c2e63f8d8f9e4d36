"""``panoptic-depthlab record OUT_BAG --topics ...``: record topics over rclpy (``ros2 bag record``).

Each topic's type is looked up from the ROS graph when a publisher appears, and the subscription is
``raw=True``: callbacks get the CDR bytes, which go into the bag unchanged (no Python
(de)serialization). QoS follows the publishers, like ``ros2 bag record``: reliable only when every
publisher is reliable, transient-local only when every publisher is. The bag time of a message is
its receive time. Ctrl-C, SIGTERM, ``--duration`` or ``stop_event`` end the recording with a
closed, readable bag.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .common import STORAGES, BagWriter, cli_main
from .transport import import_message_class, make_qos, ros_context, sigterm_as_interrupt

# Graph plumbing every node has; never what a user means by --all.
ALWAYS_EXCLUDED = ("/rosout", "/parameter_events")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_bag", type=Path, help="bag directory to create (must not exist)")
    parser.add_argument("--topics", nargs="+", default=(), help="topics to record")
    parser.add_argument(
        "--all", action="store_true", help="record every topic that appears (not /rosout, /parameter_events)"
    )
    parser.add_argument("--exclude", default=None, help="regex of topics not to record (with --all)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--storage", choices=STORAGES, default="mcap", help="bag storage (default mcap)")


class Recorder:
    """Subscribes (raw) to topics as they appear in the graph and writes what arrives to a BagWriter."""

    def __init__(
        self,
        node: Any,
        writer: Any,
        topics: Sequence[str] = (),
        record_all: bool = False,
        exclude: str | None = None,
        on_message: Callable[[str], None] | None = None,
        on_subscribe: Callable[[str], None] | None = None,
    ) -> None:
        self.node = node
        self.writer = writer
        self.topics = [node.resolve_topic_name(t) for t in topics]
        self.record_all = record_all
        self.exclude = re.compile(exclude) if exclude else None
        self.on_message = on_message
        self.on_subscribe = on_subscribe
        self.subscriptions: dict[str, Any] = {}
        self.matched: set[str] = set()
        self.skipped: dict[str, str] = {}
        self.lock = threading.Lock()
        self.timer = node.create_timer(0.1, self.discover)
        self.discover()

    def _wanted(self, topic: str) -> bool:
        if topic in self.topics:
            return True
        if not self.record_all or topic in ALWAYS_EXCLUDED:
            return False
        return not (self.exclude and self.exclude.search(topic))

    def _qos_for(self, topic: str) -> Any:
        from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

        infos = self.node.get_publishers_info_by_topic(topic)
        reliable = bool(infos) and all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
        latched = bool(infos) and all(
            i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos
        )
        return make_qos(reliable=reliable, transient_local=latched, depth=100), latched

    def discover(self) -> None:
        for topic, subscription in self.subscriptions.items():
            # Matched with a publisher (not only created): from now on nothing it publishes is missed.
            if topic not in self.matched and subscription.get_publisher_count() > 0:
                self.matched.add(topic)
                if self.on_subscribe is not None:
                    self.on_subscribe(topic)
        for topic, types in self.node.get_topic_names_and_types():
            if topic in self.subscriptions or topic in self.skipped or not self._wanted(topic):
                continue
            if not self.node.get_publishers_info_by_topic(topic):
                continue  # only subscribers so far; the type is known but QoS is not
            msgtype = types[0]
            qos, latched = self._qos_for(topic)
            try:
                cls = import_message_class(msgtype)
                with self.lock:
                    self.writer.add_topic(topic, msgtype, transient_local=latched)
            except (ImportError, ValueError) as exc:
                self.skipped[topic] = str(exc)
                print(f"record: not recording {topic}: {exc}", file=sys.stderr)
                continue

            def callback(raw: bytes, topic: str = topic, msgtype: str = msgtype) -> None:
                stamp = self.node.get_clock().now().nanoseconds
                with self.lock:
                    if not self.writer.closed:
                        self.writer.write(topic, msgtype, stamp, raw)
                if self.on_message is not None:
                    self.on_message(topic)

            self.subscriptions[topic] = self.node.create_subscription(cls, topic, callback, qos, raw=True)

    def close(self) -> None:
        with self.lock:
            self.writer.close()


def record_bag(
    out_bag: str | Path,
    topics: Sequence[str] = (),
    record_all: bool = False,
    exclude: str | None = None,
    duration_s: float | None = None,
    storage: str = "mcap",
    context: Any = None,
    stop_event: threading.Event | None = None,
    ready_event: threading.Event | None = None,
    on_message: Callable[[str], None] | None = None,
    on_subscribe: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Record until ``duration_s``, ``stop_event`` or Ctrl-C; returns messages written per topic."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    if not topics and not record_all:
        raise ValueError("record: give --topics TOPIC ... or --all")
    if duration_s is not None and not duration_s > 0:
        raise ValueError(f"--duration must be > 0 seconds, got {duration_s}")
    stop_event = stop_event or threading.Event()
    writer = BagWriter(out_bag, storage)
    try:
        with ros_context(context) as ctx:
            node = Node("panoptic_depthlab_recorder", context=ctx)
            executor = SingleThreadedExecutor(context=ctx)
            executor.add_node(node)
            try:
                recorder = Recorder(node, writer, topics, record_all, exclude, on_message, on_subscribe)
                if ready_event is not None:
                    ready_event.set()
                deadline = None if duration_s is None else time.monotonic() + duration_s
                while not stop_event.is_set() and ctx.ok():
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    executor.spin_once(timeout_sec=0.05)
                recorder.close()
            finally:
                executor.remove_node(node)
                executor.shutdown()
                node.destroy_node()
    finally:
        writer.close()
    return dict(writer.counts)


def run(args: argparse.Namespace) -> int:
    counts: dict[str, int] = {}
    try:
        with sigterm_as_interrupt():
            counts = record_bag(
                args.out_bag, args.topics, args.all, args.exclude, args.duration, args.storage
            )
    except KeyboardInterrupt:
        print(f"record: stopped; bag {args.out_bag} closed", file=sys.stderr)
        return 0
    for topic, count in sorted(counts.items()):
        print(f"{topic}: {count} messages")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(add_arguments, run, "panoptic-depthlab record"))
