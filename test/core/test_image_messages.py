"""The core's image-message readers on duck-typed messages (the fields rclpy and rosbags messages have)."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from panoptic_depthlab_core.image_messages import (
    SUPPORTED_INPUT_ENCODINGS,
    ImageConversionError,
    image_message_to_rgb,
    image_msg_to_array,
    image_msg_to_rgb,
    is_compressed,
)


def _image(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> SimpleNamespace:
    """An Image message holding ``pixels`` with ``pad`` bytes of row padding."""
    h, w = pixels.shape[:2]
    stored = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<"))
    rows = stored.reshape(h, -1).view(np.uint8)
    data = np.zeros((h, rows.shape[1] + pad), np.uint8)
    data[:, : rows.shape[1]] = rows
    return SimpleNamespace(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian),
                           step=data.shape[1], data=data.tobytes())  # fmt: skip


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize(
    "encoding, dtype", [("16UC1", np.uint16), ("32FC1", np.float32), ("8UC1", np.uint8), ("mono16", np.uint16)]
)
def test_data_encodings_read_exactly(encoding, dtype, bigendian):
    rng = np.random.default_rng(0)
    values = (rng.uniform(0, 60000, (5, 7)) if dtype != np.uint8 else rng.integers(0, 256, (5, 7))).astype(dtype)
    if dtype == np.float32:
        values[0, 0] = np.nan  # invalid depth stays NaN
    got = image_msg_to_array(_image(values, encoding, pad=3, bigendian=bigendian))
    assert got.shape == (5, 7, 1) and got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got[:, :, 0], values)


def test_data_encodings_are_not_camera_images():
    msg = _image(np.zeros((4, 6), np.uint16), "16UC1")
    assert "16UC1" not in SUPPORTED_INPUT_ENCODINGS and "rgb8" in SUPPORTED_INPUT_ENCODINGS
    with pytest.raises(ImageConversionError, match="unsupported image encoding '16UC1'") as err:
        image_msg_to_rgb(msg)
    assert err.value.reason == "unsupported_encoding"
    with pytest.raises(ImageConversionError, match="unsupported image encoding 'bayer_rggb8'"):
        image_msg_to_array(SimpleNamespace(**{**vars(msg), "encoding": "bayer_rggb8"}))


def test_one_reader_for_raw_and_compressed_messages():
    rgb = np.random.default_rng(1).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    raw = _image(rgb[:, :, ::-1].copy(), "bgr8", pad=4)
    np.testing.assert_array_equal(image_message_to_rgb(raw), rgb)
    png = cv2.imencode(".png", rgb[:, :, ::-1])[1].tobytes()
    compressed = SimpleNamespace(format="png", data=png)
    assert is_compressed(compressed) and not is_compressed(raw)
    np.testing.assert_array_equal(image_message_to_rgb(compressed, device="cpu"), rgb)
    with pytest.raises(ImageConversionError, match="above the limit"):
        image_message_to_rgb(raw, max_pixels=47)


def test_calibration_reads_recorded_image_messages(tmp_path):
    """INT8 calibration reads bags through the same reader: raw and compressed frames, as rosbags writes them."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from panoptic_depthlab_core.export.calibration import open_calibration_source

    store = get_typestore(Stores.ROS2_HUMBLE)
    Image, CompressedImage = store.types["sensor_msgs/msg/Image"], store.types["sensor_msgs/msg/CompressedImage"]
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    header = Header(stamp=Time(sec=1, nanosec=0), frame_id="cam")
    rgb = np.random.default_rng(2).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    frames = [
        Image(header=header, height=6, width=8, encoding="bgr8", is_bigendian=0, step=8 * 3,
              data=np.ascontiguousarray(rgb[:, :, ::-1]).reshape(-1)),
        CompressedImage(header=header, format="png", data=cv2.imencode(".png", rgb[:, :, ::-1])[1].reshape(-1)),
        Image(header=header, height=6, width=8, encoding="16UC1", is_bigendian=0, step=16,
              data=np.zeros(96, np.uint8)),
    ]  # fmt: skip
    bag = tmp_path / "calib"
    with Writer(bag, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        for n, msg in enumerate(frames):
            topic = f"/cam{n}/image"
            conn = writer.add_connection(topic, msg.__msgtype__, typestore=store)
            writer.write(conn, n + 1, store.serialize_cdr(msg, msg.__msgtype__))
    source = open_calibration_source(bag, topics=["/cam0/image", "/cam1/image"])
    for got in source.images(2):
        np.testing.assert_array_equal(got, rgb)
    depth_only = open_calibration_source(bag, topics=["/cam2/image"])
    with pytest.raises(ValueError, match=r"topic /cam2/image message 0: unsupported image encoding '16UC1'"):
        list(depth_only.images(1))
