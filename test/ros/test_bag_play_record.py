"""play and record over real rclpy (LOCALHOST, a domain id of our own), and play -> node -> record.

The node runs in its own process (``python -m panoptic_depthlab_ros.node``) exactly as users start
it; its recorded outputs must equal what bag-eval computes offline for the same frames.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags")
pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable in this environment")

from panoptic_depthlab_ros.bags import bag_eval, synth_bag  # noqa: E402
from panoptic_depthlab_ros.bags.common import open_bag  # noqa: E402
from panoptic_depthlab_ros.bags.play import play_bag  # noqa: E402
from panoptic_depthlab_ros.bags.record import record_bag  # noqa: E402

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[2]
SMALL_CONFIG = ROOT / "config" / "models" / "panoptic_depthlab_small.yaml"
SIZE = (64, 128)
INPUT_TOPICS = ["/camera/image_raw", "/camera/camera_info", "/gt/depth", "/gt/panoptic", "/gt/tracks"]


def raw_messages(bag: Path) -> dict[str, list[bytes]]:
    reader = open_bag(bag)
    try:
        out: dict[str, list[bytes]] = {}
        for connection, _, raw in reader.messages():
            out.setdefault(connection.topic, []).append(bytes(raw))
        return out
    finally:
        reader.close()


class RecorderThread:
    """record_bag in a thread on the test's context; knows which topics it has subscribed."""

    def __init__(self, out: Path, topics: list[str], context) -> None:
        self.stop = threading.Event()
        self.subscribed: set[str] = set()
        self.counts: dict[str, int] = {}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(out, topics, context), daemon=True)
        self.thread.start()

    def _run(self, out, topics, context) -> None:
        try:
            self.counts = record_bag(
                out, topics, context=context, stop_event=self.stop, on_subscribe=self.subscribed.add
            )
        except BaseException as exc:  # surfaced by finish()
            self.error = exc

    def wait_subscribed(self, topics: list[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not set(topics) <= self.subscribed:
            assert self.error is None, self.error
            assert time.monotonic() < deadline, f"recorder subscribed only {sorted(self.subscribed)}"
            time.sleep(0.05)

    def finish(self) -> dict[str, int]:
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
        return self.counts


def test_bag_play_record_round_trip_bytes(tmp_path, rclpy_context):
    """Everything played is recorded byte for byte, with types looked up from the graph."""
    bag = tmp_path / "in"
    synth_bag.write_synth_bag(bag, frames=4, size=SIZE, seed=2, storage="sqlite3")
    recorder = RecorderThread(tmp_path / "rec", INPUT_TOPICS, rclpy_context)
    play_thread_result: dict = {}

    def play() -> None:
        play_thread_result["sent"] = play_bag(
            bag, rate=4.0, context=rclpy_context, wait_for=INPUT_TOPICS, wait_timeout_s=30, progress=False
        )

    player = threading.Thread(target=play, daemon=True)
    player.start()
    recorder.wait_subscribed(INPUT_TOPICS, 30)
    player.join(timeout=60)
    assert not player.is_alive()
    deadline = time.monotonic() + 10
    while sum(recorder.counts.values()) < 16 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    counts = recorder.finish()
    assert play_thread_result["sent"] == dict.fromkeys(INPUT_TOPICS, 4)
    assert counts == dict.fromkeys(INPUT_TOPICS, 4)
    played, recorded = raw_messages(bag), raw_messages(tmp_path / "rec")
    for topic in INPUT_TOPICS:
        assert recorded[topic] == played[topic], topic
    reader = open_bag(tmp_path / "rec")
    try:
        assert reader.topics["/camera/image_raw"].msgtype == "sensor_msgs/msg/Image"
        assert reader.topics["/camera/camera_info"].msgtype == "sensor_msgs/msg/CameraInfo"
    finally:
        reader.close()


def test_bag_play_unknown_topic_and_bad_rate(tmp_path):
    bag = tmp_path / "in"
    synth_bag.write_synth_bag(bag, frames=1, size=(16, 32), seed=0)
    with pytest.raises(ValueError, match="/nope.*the bag has"):
        play_bag(bag, topics=["/nope"], progress=False)
    with pytest.raises(ValueError, match="rate"):
        play_bag(bag, rate=0.0, progress=False)
    with pytest.raises(ValueError, match="--topics"):
        record_bag(tmp_path / "rec")


@pytest.fixture
def shared_weights(tmp_path) -> Path:
    """Random small-model weights saved once, so the node process and bag-eval run the same model."""
    import torch

    from panoptic_depthlab_core.model import build_model
    from panoptic_depthlab_core.predictor import load_pipeline_config
    from panoptic_depthlab_core.weights import save_safetensors

    torch.manual_seed(0)
    model = build_model(load_pipeline_config(SMALL_CONFIG).model)
    path = tmp_path / "weights.safetensors"
    save_safetensors(model.state_dict(), path)
    return path


def test_bag_play_node_record_equals_bag_eval(tmp_path, ros_env, rclpy_context, shared_weights):
    """synth bag -> play -> real node process -> record; outputs equal bag-eval's for the same frames."""
    import torch

    bag = tmp_path / "in"
    frames = 4
    synth_bag.write_synth_bag(bag, frames=frames, size=SIZE, seed=5)
    node_cmd = [
        sys.executable,
        "-m",
        "panoptic_depthlab_ros.node",
        "--ros-args",
        "-p",
        f"model_config:={SMALL_CONFIG}",
        "-p",
        f"weights:={shared_weights}",
        "-p",
        "input_height:=64",
        "-p",
        "input_width:=128",
        "-r",
        "image:=/camera/image_raw",
        "-r",
        "camera_info:=/camera/camera_info",
    ]
    log = (tmp_path / "node.log").open("w")
    node = subprocess.Popen(
        node_cmd, env={**ros_env, "OMP_NUM_THREADS": "1"}, stdout=log, stderr=subprocess.STDOUT
    )
    out_topics = bag_eval.output_topic_names(bag_eval.DEFAULT_NODE_NAME)
    try:
        recorder = RecorderThread(tmp_path / "rec", list(out_topics.values()), rclpy_context)
        # The node creates its publishers and subscriptions on activate; wait for both sides.
        from rclpy.node import Node

        probe = Node("bag_test_probe", context=rclpy_context)
        try:
            from panoptic_depthlab_ros.bags.play import wait_for_subscribers

            wait_for_subscribers(probe, ["/camera/image_raw"], 120)
        finally:
            probe.destroy_node()
        recorder.wait_subscribed([t for n, t in out_topics.items() if n != "label_info"], 30)
        # Slow enough that the node (latest frame wins) has time for each frame even on a busy machine.
        play_bag(
            bag,
            rate=0.25,
            context=rclpy_context,
            topics=["/camera/image_raw", "/camera/camera_info"],
            wait_for=["/camera/image_raw"],
            progress=False,
        )
        deadline = time.monotonic() + 30
        while recorder.counts.get(out_topics["depth"], 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3.0)  # the last frame's outputs
        recorder.finish()
    finally:
        node.terminate()
        try:
            node.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node.kill()
        log.close()
    node_log = (tmp_path / "node.log").read_text()
    live = raw_messages(tmp_path / "rec")
    assert out_topics["panoptic"] in live, f"no outputs recorded; node log:\n{node_log[-3000:]}"

    # Offline reference with the same weights and parameters.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        import argparse

        parser = argparse.ArgumentParser()
        bag_eval.add_arguments(parser)
        args = parser.parse_args(
            [
                str(bag),
                "--out",
                str(tmp_path / "offline"),
                "--config",
                str(SMALL_CONFIG),
                "--weights",
                str(shared_weights),
                "--input-size",
                "64x128",
                "--no-progress",
            ]
        )
        result = bag_eval.BagEvaluator(args).run()
    finally:
        torch.set_num_threads(threads)
    assert result.frames == frames
    offline = raw_messages(tmp_path / "offline")

    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    def by_stamp(raws: list[bytes]) -> dict[int, Image]:
        msgs = [deserialize_message(r, Image) for r in raws]
        return {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec: m for m in msgs}

    live_pan, offline_pan = by_stamp(live[out_topics["panoptic"]]), by_stamp(offline[out_topics["panoptic"]])
    live_depth, offline_depth = by_stamp(live[out_topics["depth"]]), by_stamp(offline[out_topics["depth"]])
    assert set(live_pan) <= set(offline_pan) and len(live_pan) >= 1
    assert max(live_pan) == max(offline_pan), "the last frame is always processed (latest frame wins)"
    for stamp in live_pan:
        pan_live = np.frombuffer(bytes(live_pan[stamp].data), np.uint16)
        pan_off = np.frombuffer(bytes(offline_pan[stamp].data), np.uint16)
        assert np.mean(pan_live == pan_off) > 0.999
        depth_live = np.frombuffer(bytes(live_depth[stamp].data), np.float32)
        depth_off = np.frombuffer(bytes(offline_depth[stamp].data), np.float32)
        np.testing.assert_allclose(depth_live, depth_off, rtol=1e-4, atol=1e-4)
    for name in ("semantic", "visualization", "detections", "detections_3d", "markers", "camera_info"):
        assert len(live[out_topics[name]]) == len(live_pan), name
