"""bag-eval on real rosbag2 bags (both storages): outputs, stamps, readers, metrics, bad bags, Ctrl-C.

Small everything (64x128 frames, 64x128 network input, untrained small model): these tests check the
plumbing and that the numbers equal the evaluation module's on the same frames, not model quality.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags")
pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable in this environment")

from bag_contents import read_all as read_bag_contents  # noqa: E402

from panoptic_depthlab_ros.bags import bag_eval, synth_bag  # noqa: E402
from panoptic_depthlab_ros.bags.common import BagReadError, open_bag  # noqa: E402
from panoptic_depthlab_ros.messages import OUTPUT_NAMES as MESSAGE_OUTPUT_NAMES  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SMALL_CONFIG = ROOT / "config" / "models" / "panoptic_depthlab_small.yaml"
SIZE = (64, 128)
FRAMES = 5
SEED = 11
OUTPUT_NAMES = MESSAGE_OUTPUT_NAMES  # every output the node publishes per frame


def eval_args(in_bag: Path, out: Path, **overrides) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bag_eval.add_arguments(parser)
    argv = [
        str(in_bag),
        "--out",
        str(out),
        "--config",
        str(SMALL_CONFIG),
        "--input-size",
        "64x128",
        "--no-progress",
    ]
    args = parser.parse_args(argv)
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


@pytest.fixture(scope="module")
def processor():
    """One FrameProcessor (untrained small model at 64x128) shared by the module's tests.

    One torch thread: on a shared 2-core machine, 2 OpenMP threads spin against other processes and
    a 64x128 forward pass went from 0.12 s to 3 s here.
    """
    import torch

    from panoptic_depthlab_ros.processing import FrameProcessor, load_predictor, message_options

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    params = bag_eval.node_params_from_args(eval_args(Path("in"), Path("out")))
    yield FrameProcessor(load_predictor(params), message_options(params))
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def synth_bags(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bags")
    bags = {}
    for storage in ("mcap", "sqlite3"):
        bags[storage] = root / f"drive_{storage}"
        synth_bag.write_synth_bag(bags[storage], frames=FRAMES, size=SIZE, seed=SEED, storage=storage)
    return bags


def read_all(bag: Path) -> dict[str, list[tuple[int, object]]]:
    """topic -> [(log time, deserialized message)] with rosbags and our typestore."""
    return {topic: [(t, msg) for t, _, msg in rows] for topic, rows in read_bag_contents(bag).items()}


def stamp_ns(msg) -> int:
    if not hasattr(msg, "header"):  # MarkerArray: every marker carries the frame's header
        stamps = {stamp_ns(marker) for marker in msg.markers}
        assert len(stamps) == 1, stamps
        return stamps.pop()
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_eval_outputs_match_input_stamps(tmp_path, synth_bags, processor, storage):
    out = tmp_path / "out"
    args = eval_args(synth_bags[storage], out, storage=storage)
    result = bag_eval.BagEvaluator(args, processor=processor).run()
    assert result.error is None and not result.interrupted
    assert result.frames == FRAMES and result.frames_with_gt == FRAMES

    inputs = read_all(synth_bags[storage])
    outputs = read_all(out)
    in_images = inputs["/camera/image_raw"]
    in_times = [t for t, _ in in_images]
    in_stamps = [stamp_ns(m) for _, m in in_images]
    assert len(set(in_stamps)) == FRAMES
    for name in OUTPUT_NAMES:
        topic = f"/panoptic_depthlab/{name}"
        assert topic in outputs, f"{topic} missing; got {sorted(outputs)}"
        assert [t for t, _ in outputs[topic]] == in_times, topic
        assert [stamp_ns(m) for _, m in outputs[topic]] == in_stamps, topic
        if topic != "/panoptic_depthlab/markers":
            assert all(m.header.frame_id == in_images[0][1].header.frame_id for _, m in outputs[topic])
    assert len(outputs["/panoptic_depthlab/label_info"]) == 1
    for _, msg in outputs["/panoptic_depthlab/panoptic"]:
        assert (msg.encoding, msg.height, msg.width) == ("16UC1", *SIZE)
    for _, msg in outputs["/panoptic_depthlab/depth"]:
        assert (msg.encoding, msg.height, msg.width) == ("32FC1", *SIZE)

    # The output bag's metadata agrees with its contents (it was closed properly).
    reader = open_bag(out)
    try:
        counts = {topic: info.msgcount for topic, info in reader.topics.items()}
    finally:
        reader.close()
    assert counts == {topic: len(msgs) for topic, msgs in outputs.items()}


def test_bag_eval_mcap_output_readable_by_mcap_ros2(tmp_path, synth_bags, processor):
    from mcap_ros2.reader import read_ros2_messages

    out = tmp_path / "out"
    bag_eval.BagEvaluator(eval_args(synth_bags["mcap"], out), processor=processor).run()
    (mcap_file,) = out.glob("*.mcap")
    counts: dict[str, int] = {}
    for message in read_ros2_messages(str(mcap_file)):
        counts[message.channel.topic] = counts.get(message.channel.topic, 0) + 1
        if message.channel.topic == "/panoptic_depthlab/detections_3d":
            assert message.schema.name == "vision_msgs/msg/Detection3DArray"
            assert stamp_ns(message.ros_msg) == message.log_time_ns
    assert all(counts[f"/panoptic_depthlab/{name}"] == FRAMES for name in OUTPUT_NAMES)


def test_bag_eval_metrics_equal_evaluator_on_same_frames(tmp_path, synth_bags, processor):
    """Same frames straight from the renderer through Predictor + Evaluator: identical numbers."""
    from panoptic_depthlab_core.data.synthetic.render import render_sequence
    from panoptic_depthlab_core.eval.evaluator import Evaluator

    out = tmp_path / "out"
    result = bag_eval.BagEvaluator(eval_args(synth_bags["sqlite3"], out), processor=processor).run()
    predictor = processor.predictor
    evaluator = Evaluator(segments=predictor.cfg.segments)
    for frame in render_sequence(SEED, FRAMES, SIZE, fps=synth_bag.DEFAULT_FPS):
        pred = predictor.predict(frame.rgb, frame.K)
        evaluator.add_frame(
            pred, synth_bag.instance_ids_to_panoptic(frame.instance_ids), gt_depth=frame.depth_m
        )
    expected = json.loads(json.dumps(evaluator.summary(), default=float))
    written = json.loads((tmp_path / "out_metrics" / "metrics.json").read_text())
    assert written["frames"] == FRAMES
    assert_same_numbers(written, expected)
    assert_same_numbers(json.loads(json.dumps(result.summary, default=float)), expected)
    per_frame = json.loads((tmp_path / "out_metrics" / "per_frame.json").read_text())
    assert per_frame["complete"] and len(per_frame["per_frame"]) == FRAMES
    assert (tmp_path / "out_metrics" / "metrics.md").read_text().startswith(f"Frames: {FRAMES}")


def assert_same_numbers(a, b, path="") -> None:
    if isinstance(b, dict):
        assert set(map(str, a)) == set(map(str, b)), path
        for key in b:
            assert_same_numbers(a[str(key)], b[key], f"{path}.{key}")
    elif isinstance(b, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_numbers(x, y, f"{path}[{i}]")
    elif isinstance(b, float) and not np.isfinite(b):
        assert a is None or (isinstance(a, float) and not np.isfinite(a)), path
    elif isinstance(b, (int, float)) and not isinstance(b, bool):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), path
    else:
        assert a == b, path


def test_bag_eval_copy_inputs_and_is_deterministic(tmp_path, synth_bags, processor):
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    bag_eval.BagEvaluator(eval_args(synth_bags["mcap"], out_a, copy_inputs=True), processor=processor).run()
    bag_eval.BagEvaluator(eval_args(synth_bags["mcap"], out_b, copy_inputs=True), processor=processor).run()
    a, b = read_all(out_a), read_all(out_b)
    assert {"/camera/image_raw", "/gt/depth", "/tf_static"} <= set(a)
    assert sorted(a) == sorted(b)
    for topic in a:
        for (ta, ma), (tb, mb) in zip(a[topic], b[topic], strict=True):
            assert ta == tb
            if hasattr(ma, "data"):
                assert np.array_equal(ma.data, mb.data), topic


def test_bag_eval_missing_topic_lists_bag_topics(tmp_path, synth_bags, processor):
    args = eval_args(synth_bags["mcap"], tmp_path / "out", image_topic="/front/image")
    with pytest.raises(ValueError) as info:
        bag_eval.BagEvaluator(args, processor=processor).run()
    text = str(info.value)
    assert "'/front/image'" in text and "--image-topic" in text
    assert "/camera/image_raw  [sensor_msgs/msg/Image]" in text and "/gt/panoptic" in text
    # An explicitly requested GT topic that is absent is an error too; the default one is optional.
    args = eval_args(synth_bags["mcap"], tmp_path / "out2", gt_depth_topic="/gt/depth_mm")
    with pytest.raises(ValueError, match="/gt/depth_mm"):
        bag_eval.BagEvaluator(args, processor=processor).run()
    with pytest.raises(ValueError, match="sensor_msgs/msg/CameraInfo"):
        bad_type = eval_args(synth_bags["mcap"], tmp_path / "out3", gt_depth_topic="/camera/camera_info")
        bag_eval.BagEvaluator(bad_type, processor=processor).run()


def test_bag_eval_truncated_mcap_reports_position_and_keeps_output(tmp_path, processor):
    bag = tmp_path / "long"
    # 128x256 frames make the bag span several 1 MiB chunks, so a cut leaves whole chunks intact.
    synth_bag.write_synth_bag(bag, frames=8, size=(128, 256), seed=SEED)
    (mcap_file,) = bag.glob("*.mcap")
    data = mcap_file.read_bytes()
    mcap_file.write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "out"
    result = bag_eval.BagEvaluator(eval_args(bag, out), processor=processor).run()
    assert result.error is not None
    assert "truncated" in result.error and "byte" in result.error and "after message #" in result.error
    assert str(out) in result.error
    assert 0 < result.frames < 8
    outputs = read_all(out)  # closed and readable
    assert len(outputs["/panoptic_depthlab/panoptic"]) == result.frames
    per_frame = json.loads((tmp_path / "out_metrics" / "per_frame.json").read_text())
    assert per_frame["complete"] is False and per_frame["error"] == result.error


def test_bag_eval_corrupt_sqlite_and_garbage_files(tmp_path, synth_bags, processor):
    bag = tmp_path / "corrupt"
    shutil.copytree(synth_bags["sqlite3"], bag)
    (db,) = bag.glob("*.db3")
    raw = bytearray(db.read_bytes())
    raw[: len(raw) // 2] = b"\x5a" * (len(raw) // 2)  # smash the header and the first pages
    db.write_bytes(bytes(raw))
    with pytest.raises(BagReadError, match="corrupt or truncated"):
        bag_eval.BagEvaluator(eval_args(bag, tmp_path / "out"), processor=processor).run()

    not_a_bag = tmp_path / "junk.mcap"
    not_a_bag.write_bytes(b"this is not an mcap file at all")
    with pytest.raises(BagReadError, match="junk.mcap"):
        bag_eval.BagEvaluator(eval_args(not_a_bag, tmp_path / "out2"), processor=processor).run()
    with pytest.raises(FileNotFoundError, match="no_such_bag"):
        bag_eval.BagEvaluator(
            eval_args(tmp_path / "no_such_bag", tmp_path / "out3"), processor=processor
        ).run()


def test_bag_eval_ctrl_c_leaves_readable_bag(tmp_path, synth_bags, processor):
    """A real SIGINT during the third frame: the run stops, the bag is closed and holds the first two."""

    class InterruptingProcessor:
        def __init__(self, inner):
            self.inner, self.predictor, self.calls = inner, inner.predictor, 0

        def process(self, *a, **kw):
            self.calls += 1
            if self.calls == 3:
                signal.raise_signal(signal.SIGINT)
            return self.inner.process(*a, **kw)

    out = tmp_path / "out"
    result = bag_eval.BagEvaluator(
        eval_args(synth_bags["mcap"], out), processor=InterruptingProcessor(processor)
    ).run()
    assert result.interrupted and result.frames == 2
    outputs = read_all(out)
    assert len(outputs["/panoptic_depthlab/depth"]) == 2
    assert json.loads((tmp_path / "out_metrics" / "metrics.json").read_text())["frames"] == 2


def test_bag_eval_depth_in_millimetres(tmp_path):
    """16UC1 GT depth is millimetres, 0 invalid; 32FC1 is metres with NaN/0 invalid."""
    from sensor_msgs.msg import Image

    from panoptic_depthlab_ros.image_conversion import numpy_to_image_msg

    mm = np.array([[0, 1500], [80000 // 2, 65535]], dtype=np.uint16)
    depth = bag_eval.gt_depth_m(numpy_to_image_msg(mm, "16UC1"))
    assert np.isnan(depth[0, 0]) and depth[0, 1] == pytest.approx(1.5) and depth[1, 0] == pytest.approx(40.0)
    metres = np.array([[0.0, 2.5], [np.inf, -1.0]], dtype=np.float32)
    depth = bag_eval.gt_depth_m(numpy_to_image_msg(metres, "32FC1"))
    assert np.isnan(depth[0, 0]) and depth[0, 1] == 2.5 and np.isnan(depth[1, 0]) and np.isnan(depth[1, 1])
    bad = Image(encoding="rgb8", width=2, height=2, step=6)
    with pytest.raises(ValueError, match="rgb8"):
        bag_eval.gt_depth_m(bad)
