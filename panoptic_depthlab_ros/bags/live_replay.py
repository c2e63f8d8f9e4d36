"""Play a bag into a running node and record what it publishes, in one process and rclpy context.

``ros2 bag play`` + ``ros2 bag record`` in two terminals, made reliable for scripts (the demo): it
waits until the node subscribes to the input and the recorder has subscribed to every output
before the first message goes out, and after the last one it waits until the outputs stop coming.

``python -m panoptic_depthlab_ros.bags.live_replay BAG --record OUT --record-topics T... [--rate R]``
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .common import STORAGES, cli_main
from .play import play_bag, wait_for_subscribers
from .record import record_bag
from .transport import ros_context, sigterm_as_interrupt

# Published on a timer, not per frame: they say nothing about whether outputs are still coming.
PERIODIC_TOPICS = ("/diagnostics", "/rosout")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, help="bag to play")
    parser.add_argument("--record", type=Path, required=True, help="bag directory to record into")
    parser.add_argument("--record-topics", nargs="+", required=True, help="topics to record")
    parser.add_argument("--topics", nargs="+", default=None, help="topics to play (default: all)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    parser.add_argument(
        "--wait-for", nargs="+", default=(), help="play only once these topics have subscribers"
    )
    parser.add_argument("--wait-timeout", type=float, default=180.0, help="seconds to wait for subscribers")
    parser.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="after playing, stop once no output arrived for this many seconds",
    )
    parser.add_argument("--max-settle", type=float, default=120.0, help="... but wait at most this long")
    parser.add_argument("--storage", choices=STORAGES, default="mcap")
    parser.add_argument("--summary", type=Path, default=None, help="write counts and timings as JSON here")
    parser.add_argument("--no-progress", action="store_true")


def live_replay(args: argparse.Namespace, context: Any = None) -> dict[str, Any]:
    from rclpy.node import Node

    summary: dict[str, Any] = {}
    with ros_context(context) as ctx:
        stop = threading.Event()
        subscribed: set[str] = set()
        last_message = [time.monotonic()]
        received: dict[str, int] = {}
        outcome: dict[str, Any] = {}

        def on_message(topic: str) -> None:
            received[topic] = received.get(topic, 0) + 1
            if topic not in PERIODIC_TOPICS:
                last_message[0] = time.monotonic()

        def record() -> None:
            try:
                outcome["counts"] = record_bag(
                    args.record,
                    args.record_topics,
                    storage=args.storage,
                    context=ctx,
                    stop_event=stop,
                    on_message=on_message,
                    on_subscribe=subscribed.add,
                )
            except BaseException as exc:  # reported below
                outcome["error"] = exc

        recorder = threading.Thread(target=record, name="recorder", daemon=True)
        recorder.start()
        try:
            t0 = time.monotonic()
            if args.wait_for:
                probe = Node("panoptic_depthlab_replay_probe", context=ctx)
                try:
                    wait_for_subscribers(probe, args.wait_for, args.wait_timeout)
                finally:
                    probe.destroy_node()
            deadline = time.monotonic() + 30.0
            wanted = set(args.record_topics)
            while not wanted <= subscribed and time.monotonic() < deadline and "error" not in outcome:
                time.sleep(0.05)
            missing = sorted(wanted - subscribed)
            if missing:
                print(
                    f"live-replay: no publisher seen for {', '.join(missing)}; recording the rest",
                    file=sys.stderr,
                )
            summary["wait_s"] = round(time.monotonic() - t0, 2)
            t1 = time.monotonic()
            summary["sent"] = play_bag(
                args.bag,
                rate=args.rate,
                topics=args.topics,
                context=ctx,
                wait_for=[t for t in args.wait_for if args.topics is None or t in args.topics],
                wait_timeout_s=args.wait_timeout,
                start_delay_s=0.5,
                progress=not args.no_progress,
            )
            summary["play_s"] = round(time.monotonic() - t1, 2)
            end = time.monotonic() + args.max_settle
            while time.monotonic() < end and time.monotonic() - last_message[0] < args.settle:
                time.sleep(0.1)
        finally:
            stop.set()
            recorder.join(timeout=60)
        if "error" in outcome:
            raise outcome["error"]
        summary["recorded"] = outcome.get("counts", {})
        summary["missing_topics"] = sorted(set(args.record_topics) - set(summary["recorded"]))
    return summary


def run(args: argparse.Namespace) -> int:
    with sigterm_as_interrupt():
        summary = live_replay(args)
    text = json.dumps(summary, indent=2)
    if args.summary is not None:
        args.summary.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(add_arguments, run, "live_replay"))
