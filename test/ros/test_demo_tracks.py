"""make demo's track plot: ~/tracks read back from a bag, each track's distance and closing speed
drawn over time (OpenCV, no plotting library)."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags is not installed")
pytest.importorskip("ament_index_python", reason="the demo module needs ament_index_python (ROS 2)")

from panoptic_depthlab_ros.bags.common import BagWriter  # noqa: E402
from panoptic_depthlab_ros.demo import PLOT_COLOURS_BGR, draw_track_plot, track_series  # noqa: E402

TOPIC = "/panoptic_depthlab/tracks"
MSGTYPE = "panoptic_depthlab_msgs/msg/TrackedSegmentArray"


def _write(path, frames):
    with BagWriter(path) as writer:
        T = writer.typestore.types
        for i, segments in enumerate(frames):
            stamp = 1_000_000_000 + i * 100_000_000
            header = T["std_msgs/msg/Header"](
                stamp=T["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam")
            msg = T[MSGTYPE](header=header, segments=[
                T["panoptic_depthlab_msgs/msg/TrackedSegment"](
                    id=track_id, panoptic_id=13001, distance=distance, distance_source=1,
                    velocity=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=vz), in_path=True,
                    time_to_collision=math.nan, age=0.1 * i)
                for track_id, distance, vz in segments])
            writer.write(TOPIC, MSGTYPE, stamp, bytes(writer.typestore.serialize_cdr(msg, MSGTYPE)))


def test_track_series_and_plot(tmp_path):
    frames = [[("7", 20.0 - i, math.nan if i < 3 else -10.0), ("9", 35.0, 0.0)] for i in range(6)]
    frames.append([("9", 35.0, 0.0), ("", 5.0, 0.0)])  # a segment without a track is not plotted
    _write(tmp_path / "bag", frames)
    series = track_series(tmp_path / "bag")
    assert set(series) == {"7", "9"} and len(series["7"]) == 6 and len(series["9"]) == 7
    t, distance, closing = series["7"][4]
    assert t == pytest.approx(1.4) and distance == pytest.approx(16.0) and closing == pytest.approx(10.0)
    assert math.isnan(series["7"][0][2])  # no velocity yet
    image = draw_track_plot(series, size=(200, 500))
    assert image.shape == (400, 500, 3)
    longest, second = (np.all(image == PLOT_COLOURS_BGR[n], axis=2) for n in range(2))  # "9" has more frames
    for panel in (slice(0, 200), slice(200, 400)):
        assert longest[panel].sum() > 50 and second[panel].sum() > 20  # both tracks in both panels
    empty = draw_track_plot({}, size=(100, 300))
    assert empty.shape == (200, 300, 3)
