"""bag-eval with tracking on a synthetic drive bag (issue 21): tracks written and readable, tracking
metrics (HOTA/AssA/IDF1, STQ) against the drive's GT ids, which are consistent over time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable in this environment")
pytest.importorskip("panoptic_depthlab_msgs", reason="panoptic_depthlab_msgs is not built (make setup)")
pytest.importorskip("rosbags", reason="rosbags is not installed")

from bag_contents import read_all  # noqa: E402

from panoptic_depthlab_core.data.synthetic.drive import SyntheticDrive  # noqa: E402
from panoptic_depthlab_ros.bags.bag_eval import BagEvalOptions, evaluate_bag  # noqa: E402
from panoptic_depthlab_ros.bags.drive_bag import GT_PANOPTIC_TOPIC, panoptic_from_16u  # noqa: E402
from panoptic_depthlab_ros.bags.synth_bag import write_synth_bag  # noqa: E402
from panoptic_depthlab_ros.params import NodeParams  # noqa: E402

pytestmark = pytest.mark.slow  # 8 frames of the default model at 256x512 and the metrics

FRAMES = 8
SEED = 3


@pytest.fixture(scope="module")
def drive_bag(tmp_path_factory) -> Path:
    bag = tmp_path_factory.mktemp("drive") / "drive"
    write_synth_bag(bag, frames=FRAMES, size=(256, 512), seed=SEED)
    return bag


def _messages(bag: Path, topic: str) -> list:
    contents = read_all(bag)
    assert topic in contents, f"{topic} not in {bag}: {sorted(contents)}"
    return [msg for _, _, msg in contents[topic]]


def test_drive_bag_gt_ids_are_consistent_over_time(drive_bag):
    """The GT panoptic ids of the bag are the world's actors: the same object keeps its id."""
    drive = SyntheticDrive(seed=SEED, num_frames=FRAMES, size=(256, 512))
    maps = []
    for msg in _messages(drive_bag, GT_PANOPTIC_TOPIC):
        maps.append(panoptic_from_16u(np.frombuffer(bytes(msg.data), np.uint16).reshape(msg.height, msg.width)))
    assert len(maps) == FRAMES
    for index in (0, FRAMES - 1):
        truth = {o.panoptic_id for o in drive.motion(index, drive.render(index)).objects}
        ids = {int(i) for i in np.unique(maps[index]) if i >= 0 and i % 1000}
        assert ids and ids <= truth  # every GT instance id is one of the world's actors
    first = {int(i) for i in np.unique(maps[0]) if i >= 0 and i % 1000}
    last = {int(i) for i in np.unique(maps[-1]) if i >= 0 and i % 1000}
    assert len(first & last) >= 3  # objects seen throughout keep their ids


def test_bag_eval_writes_tracks_and_reports_tracking_metrics(drive_bag, tmp_path):
    params = NodeParams(publish_visualization=False)
    options = BagEvalOptions(params=params, progress=False)
    report = evaluate_bag(drive_bag, tmp_path / "out", options)
    assert report.complete and report.frames == FRAMES
    tracking = report.summary["tracking"]
    scores = tracking["tracking"]
    # the default model on its own synthetic world: identities are kept (issue target AssA >= 0.8 is for
    # held-out drives over many frames; 8 frames of one drive only show that association works)
    assert scores["AssA"] > 0.6 and scores["HOTA"] > 0.3 and scores["IDF1"] > 0.4, scores
    assert tracking["frames"] == FRAMES and 0 <= tracking["video_panoptic"]["STQ"] <= 1
    # the drive's exact motion (/gt/tracks) is paired and read: velocities are compared once tracks are
    # 1 s old (none in 0.8 s of drive) and distances by band against the GT depth
    assert report.cameras["/camera/image_raw"].gt_tracks_topic == "/gt/tracks"
    assert tracking["velocity"]["samples"] == 0 and "tracked >= 1 s" in tracking["velocity"]["protocol"]
    assert tracking["distance"]["within_40m"]["published"]["samples"] > 10
    metrics = json.loads((tmp_path / "out_metrics" / "metrics.json").read_text())
    assert metrics["tracking"]["tracking"]["AssA"] == pytest.approx(scores["AssA"])
    assert "## Tracking" in (tmp_path / "out_metrics" / "metrics.md").read_text()

    # the output bag carries ~/tracks beside ~/detections_3d, same ids in the same order, stable ids
    tracks = _messages(tmp_path / "out", "/panoptic_depthlab/tracks")
    dets = _messages(tmp_path / "out", "/panoptic_depthlab/detections_3d")
    assert len(tracks) == len(dets) == FRAMES
    for t, d in zip(tracks, dets, strict=True):
        assert [s.id for s in t.segments] == [x.id for x in d.detections]
        assert t.header.stamp.sec == d.header.stamp.sec and t.header.stamp.nanosec == d.header.stamp.nanosec
    first_ids = {s.id for s in tracks[0].segments}
    last_ids = {s.id for s in tracks[-1].segments}
    assert len(first_ids & last_ids) >= 3, (first_ids, last_ids)
    moving = [s for s in tracks[-1].segments if np.isfinite(s.velocity.z)]
    assert moving, "no track has a velocity after 0.7 s"
    assert all(s.age > 0.5 for s in moving)
