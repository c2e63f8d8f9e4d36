"""synth-bag and cityscapes-bag: the bags hold exactly the frames, intrinsics and GT they were made from."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rosbags")

from bag_contents import read_all  # noqa: E402

from panoptic_depthlab_ros.bags import cityscapes_bag, synth_bag  # noqa: E402
from panoptic_depthlab_ros.bags.common import cli_main  # noqa: E402
from panoptic_depthlab_ros.bags.drive_bag import panoptic_from_16u  # noqa: E402

SIZE = (48, 96)


def pixels(msg) -> np.ndarray:
    dtypes = {"rgb8": (np.uint8, 3), "32FC1": (np.float32, 1), "16UC1": (np.uint16, 1)}
    dtype, channels = dtypes[msg.encoding]
    arr = np.frombuffer(bytes(msg.data), dtype=dtype).reshape(msg.height, msg.width, channels)
    return arr[:, :, 0] if channels == 1 else arr


def test_bag_make_synth_bag_holds_the_rendered_drive(tmp_path):
    from panoptic_depthlab_core.data.synthetic.render import render_sequence

    bag = tmp_path / "drive"
    assert (
        cli_main(
            synth_bag.add_arguments,
            synth_bag.run,
            "synth-bag",
            ["--out", str(bag), "--frames", "3", "--size", "48x96", "--seed", "4", "--no-progress"],
        )
        == 0
    )
    data = read_all(bag)
    assert {t: len(v) for t, v in data.items()} == {
        "/camera/image_raw": 3,
        "/camera/camera_info": 3,
        "/gt/depth": 3,
        "/gt/panoptic": 3,
        "/gt/tracks": 3,  # the exact motion (panoptic_depthlab_msgs/TrackedSegmentArray)
        "/tf_static": 1,
    }
    frames = list(render_sequence(4, 3, SIZE, fps=10.0))
    for i, frame in enumerate(frames):
        log_time, _, image = data["/camera/image_raw"][i]
        stamp = image.header.stamp.sec * 10**9 + image.header.stamp.nanosec
        assert stamp == log_time and (i == 0 or stamp - data["/camera/image_raw"][i - 1][0] == 100_000_000)
        assert image.encoding == "rgb8" and np.array_equal(pixels(image), frame.rgb)
        info = data["/camera/camera_info"][i][2]
        np.testing.assert_allclose(info.k.reshape(3, 3), frame.K)
        assert (info.width, info.height) == (96, 48) and info.header.stamp == image.header.stamp
        depth = pixels(data["/gt/depth"][i][2])
        assert np.array_equal(np.isnan(depth), ~(np.isfinite(frame.depth_m) & (frame.depth_m > 0)))
        np.testing.assert_array_equal(depth[~np.isnan(depth)], frame.depth_m[~np.isnan(depth)])
        pan_msg = data["/gt/panoptic"][i][2]
        assert pan_msg.encoding == "16UC1"
        expected = synth_bag.instance_ids_to_panoptic(frame.instance_ids)
        np.testing.assert_array_equal(panoptic_from_16u(pixels(pan_msg)), expected)
    # things are train_id*1000 + k+1, stuff instance 0, void 65535 on the wire
    assert (expected // 1000 >= 11).any() or (expected % 1000 == 0).all()
    tf = data["/tf_static"][0][2].transforms[0]
    assert (tf.header.frame_id, tf.child_frame_id) == ("base_link", "camera_optical_frame")
    q = tf.transform.rotation
    assert q.x**2 + q.y**2 + q.z**2 + q.w**2 == pytest.approx(1.0)
    # Deterministic: the same arguments give the same messages.
    again = tmp_path / "again"
    synth_bag.write_synth_bag(again, frames=3, size=SIZE, seed=4)
    second = read_all(again)
    assert {t: [raw for _, raw, _ in v] for t, v in second.items()} == {
        t: [raw for _, raw, _ in v] for t, v in data.items()
    }


def test_bag_make_instance_ids_to_panoptic():
    # 26 = car (train 13, thing), 7 = road (train 0), 0 = unlabeled (void), bare 26 = crowd of cars
    inst = np.array([[26000, 26001, 7], [0, 26, 24005]])
    expected = np.array([[13001, 13002, 0], [-1, 13000, 11006]])
    np.testing.assert_array_equal(synth_bag.instance_ids_to_panoptic(inst), expected)


def test_bag_make_cityscapes_bag_from_cityscapes_layout(tmp_path):
    from panoptic_depthlab_core.data.cityscapes import find_records, load_gt, read_camera
    from panoptic_depthlab_core.data.synthetic.writer import write_dataset

    root = tmp_path / "cs"
    write_dataset(root, 2, size=SIZE, seed=1, split="val")
    bag = tmp_path / "bag"
    assert (
        cli_main(
            cityscapes_bag.add_arguments,
            cityscapes_bag.run,
            "cityscapes-bag",
            ["--root", str(root), "--split", "val", "--out", str(bag), "--no-progress"],
        )
        == 0
    )
    data = read_all(bag)
    assert {t: len(v) for t, v in data.items()} == {
        "/camera/image_raw": 2,
        "/camera/camera_info": 2,
        "/gt/depth": 2,
        "/gt/panoptic": 2,
        "/tf_static": 1,
    }
    records = find_records(root, "val")
    for i, record in enumerate(records):
        gt = load_gt(record)
        cam = read_camera(record.camera_path)
        info = data["/camera/camera_info"][i][2]
        np.testing.assert_allclose(
            info.k.reshape(3, 3), [[cam.fx, 0, cam.u0], [0, cam.fy, cam.v0], [0, 0, 1]]
        )
        np.testing.assert_array_equal(panoptic_from_16u(pixels(data["/gt/panoptic"][i][2])), gt.panoptic)
        depth = pixels(data["/gt/depth"][i][2])
        np.testing.assert_array_equal(np.isnan(depth), np.isnan(gt.depth_m))
        np.testing.assert_allclose(depth[~np.isnan(depth)], gt.depth_m[~np.isnan(gt.depth_m)], rtol=1e-6)

    # --resize scales K as image_proc does and resizes the GT with nearest neighbour.
    small = tmp_path / "small"
    cli_main(
        cityscapes_bag.add_arguments,
        cityscapes_bag.run,
        "cityscapes-bag",
        ["--root", str(root), "--out", str(small), "--resize", "24x48", "--max-frames", "1", "--no-progress"],
    )
    info = read_all(small)["/camera/camera_info"][0][2]
    cam = read_camera(records[0].camera_path)
    assert (info.width, info.height) == (48, 24)
    assert info.k[0] == pytest.approx(cam.fx / 2) and info.k[5] == pytest.approx(cam.v0 / 2)


def test_bag_make_bad_inputs_name_the_problem(tmp_path):
    args = ["--root", str(tmp_path / "missing"), "--out", str(tmp_path / "b"), "--no-progress"]
    assert cli_main(cityscapes_bag.add_arguments, cityscapes_bag.run, "cityscapes-bag", args) == 2
    with pytest.raises(FileNotFoundError, match="missing"):
        cityscapes_bag.find_frames(tmp_path / "missing", "val")
    with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
        synth_bag.run(
            type(
                "A",
                (),
                {
                    "size": "big",
                    "out": tmp_path / "x",
                    "frames": 1,
                    "seed": 0,
                    "fps": 10.0,
                    "storage": "mcap",
                    "no_progress": True,
                },
            )()
        )
    (tmp_path / "exists").mkdir()
    with pytest.raises(ValueError, match="already exists"):
        synth_bag.write_synth_bag(tmp_path / "exists", frames=1, size=(16, 32))
