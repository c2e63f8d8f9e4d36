"""Image/CompressedImage/CameraInfo conversion against cv2 reference conversions.

Messages come in the three shapes the node and the bag tools meet: rclpy messages (data is
array.array), rosbags messages (data is a numpy array) and plain objects holding bytes.
"""

from __future__ import annotations

import importlib.util
import struct
import tracemalloc
import zlib
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from panoptic_depthlab_core.image_messages import (
    ImageConversionError,
    compressed_msg_to_rgb,
    image_msg_to_array,
    image_msg_to_rgb,
)
from panoptic_depthlab_ros.bag_types import make_typestore
from panoptic_depthlab_ros.image_conversion import (
    CameraInfoError,
    camera_info_to_K,
    check_camera_info_matches,
    numpy_to_image_msg,
    scale_camera_info,
)

HAVE_RCLPY_MSGS = importlib.util.find_spec("sensor_msgs") is not None
needs_rclpy_msgs = pytest.mark.skipif(not HAVE_RCLPY_MSGS, reason="sensor_msgs (ROS 2 Python) not importable")
MSG_KINDS = [pytest.param("rclpy", marks=needs_rclpy_msgs), "rosbags", "bytes"]

H, W = 6, 8  # small; even width for yuv422
_STORE = make_typestore()


def _make_image(
    kind: str, encoding: str, width: int, height: int, step: int, data: bytes, bigendian: int = 0
):
    if kind == "rclpy":
        from sensor_msgs.msg import Image

        msg = Image(encoding=encoding, width=width, height=height, step=step, is_bigendian=bigendian)
        msg.header.frame_id = "cam_optical"
        msg.data = data  # the rclpy setter turns bytes into array.array('B')
        return msg
    if kind == "rosbags":
        types = _STORE.types
        header = types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="cam_optical"
        )
        return types["sensor_msgs/msg/Image"](
            header=header, height=height, width=width, encoding=encoding, is_bigendian=bigendian,
            step=step, data=np.frombuffer(data, dtype=np.uint8).copy(),
        )
    return SimpleNamespace(encoding=encoding, width=width, height=height, step=step, is_bigendian=bigendian,
                           data=bytes(data))


def _pack(pixels: np.ndarray, pad: int = 0) -> tuple[bytes, int]:
    """Row-major bytes of an (H, W, C) array with ``pad`` garbage bytes after every row."""
    rows = pixels.reshape(pixels.shape[0], -1).view(np.uint8)
    if pad:
        garbage = np.full((rows.shape[0], pad), 0xAB, dtype=np.uint8)
        rows = np.concatenate([rows, garbage], axis=1)
    return rows.tobytes(), rows.shape[1]


def _rgb(seed: int = 0, height: int = H, width: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _scale16(x: np.ndarray) -> np.ndarray:
    return cv2.convertScaleAbs(x, alpha=255.0 / 65535.0)


def _cases():
    """encoding -> (stored pixels, expected RGB) with cv2 doing the reference conversion."""
    rgb = _rgb()
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (H, W), dtype=np.uint8)
    gray16 = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    rgb16 = rng.integers(0, 65536, (H, W, 3), dtype=np.uint16)
    rgba = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
    rgba[:, :, 3] = rng.integers(0, 256, (H, W), dtype=np.uint8)  # alpha must be ignored
    bgra = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    bgra[:, :, 3] = rgba[:, :, 3]
    return {
        "rgb8": (rgb, rgb),
        "bgr8": (cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), rgb),
        "rgba8": (rgba, rgb),
        "bgra8": (bgra, rgb),
        "mono8": (gray[:, :, None], cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)),
        "mono16": (gray16[:, :, None], cv2.cvtColor(_scale16(gray16), cv2.COLOR_GRAY2RGB)),
        "rgb16": (rgb16, _scale16(rgb16)),
        "bgr16": (rgb16[:, :, ::-1].copy(), _scale16(rgb16)),
        "yuv422": (cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_UYVY), cv2.cvtColor(
            cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_UYVY), cv2.COLOR_YUV2RGB_UYVY)),
        "yuv422_yuy2": (cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_YUY2), cv2.cvtColor(
            cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_YUY2), cv2.COLOR_YUV2RGB_YUY2)),
    }


CASES = _cases()


@pytest.mark.parametrize("kind", MSG_KINDS)
@pytest.mark.parametrize("pad", [0, 7])
@pytest.mark.parametrize("encoding", sorted(CASES))
def test_every_encoding_matches_cv2(encoding: str, pad: int, kind: str) -> None:
    stored, expected = CASES[encoding]
    data, step = _pack(stored, pad)
    msg = _make_image(kind, encoding, W, H, step, data)
    rgb = image_msg_to_rgb(msg)
    assert rgb.dtype == np.uint8 and rgb.shape == (H, W, 3) and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, expected)


@pytest.mark.parametrize("encoding,order", [("yuv422", "UYVY"), ("yuv422_yuy2", "YUYV")])
def test_yuv422_byte_order_against_bt601_formula(encoding: str, order: str) -> None:
    """Independent of cv2: decode by BT.601 limited range from the named byte order."""
    rng = np.random.default_rng(5)
    packed = rng.integers(16, 236, (H, W // 2, 4), dtype=np.uint8)
    names = list(order)  # e.g. U Y V Y
    u = packed[:, :, names.index("U")].astype(float)
    v = packed[:, :, names.index("V")].astype(float)
    y_idx = [i for i, c in enumerate(names) if c == "Y"]
    y = np.stack([packed[:, :, y_idx[0]], packed[:, :, y_idx[1]]], axis=2).reshape(H, W).astype(float)
    u, v = np.repeat(u, 2, axis=1) - 128, np.repeat(v, 2, axis=1) - 128
    c = 1.164 * (y - 16)
    expected = np.stack([c + 1.596 * v, c - 0.813 * v - 0.391 * u, c + 2.018 * u], axis=2)
    expected = np.clip(np.round(expected), 0, 255)
    msg = _make_image("bytes", encoding, W, H, W * 2, packed.tobytes())
    rgb = image_msg_to_rgb(msg).astype(float)
    assert np.abs(rgb - expected).max() <= 3


@pytest.mark.parametrize("kind", MSG_KINDS)
def test_big_endian_mono16(kind: str) -> None:
    gray16 = np.random.default_rng(2).integers(0, 65536, (H, W), dtype=np.uint16)
    gray16[0, :4] = [0, 257, 65535, 256]
    data, step = _pack(gray16.astype(">u2")[:, :, None], pad=3)
    msg = _make_image(kind, "mono16", W, H, step, data, bigendian=1)
    np.testing.assert_array_equal(image_msg_to_array(msg)[:, :, 0], gray16)
    rgb = image_msg_to_rgb(msg)
    np.testing.assert_array_equal(rgb[0, :4, 0], [0, 1, 255, 1])
    np.testing.assert_array_equal(rgb, cv2.cvtColor(_scale16(gray16), cv2.COLOR_GRAY2RGB))


def test_rgb8_is_zero_copy() -> None:
    rgb = _rgb(3)
    msg = _make_image("rosbags", "rgb8", W, H, W * 3, rgb.tobytes())
    out = image_msg_to_rgb(msg)
    assert np.shares_memory(out, msg.data)
    np.testing.assert_array_equal(out, rgb)


@needs_rclpy_msgs
def test_rgb8_is_zero_copy_from_rclpy_array() -> None:
    msg = _make_image("rclpy", "rgb8", W, H, W * 3, _rgb(4).tobytes())
    assert np.shares_memory(image_msg_to_rgb(msg), np.frombuffer(msg.data, dtype=np.uint8))


BAD_IMAGES = {
    "unsupported_encoding": dict(encoding="bayer_rggb8", width=W, height=H, step=W, size=W * H),
    "unsupported_float": dict(encoding="32FC1", width=W, height=H, step=W * 4, size=W * H * 4),
    "step_too_small": dict(encoding="rgb8", width=W, height=H, step=W * 3 - 1, size=W * H * 3),
    "data_too_short": dict(encoding="rgb8", width=W, height=H, step=W * 3 + 2, size=(W * 3 + 2) * H - 1),
    "zero_width": dict(encoding="rgb8", width=0, height=H, step=0, size=0),
    "zero_height": dict(encoding="mono8", width=W, height=0, step=W, size=0),
    "huge_header": dict(encoding="rgb8", width=20000, height=20000, step=60000, size=100),
    "odd_width_yuv": dict(encoding="yuv422", width=5, height=2, step=10, size=20),
}
EXPECTED_REASON = {
    "unsupported_encoding": "unsupported_encoding", "unsupported_float": "unsupported_encoding",
    "step_too_small": "step_too_small", "data_too_short": "data_too_short", "zero_width": "zero_size",
    "zero_height": "zero_size", "huge_header": "too_large", "odd_width_yuv": "odd_width",
}


@pytest.mark.parametrize("kind", MSG_KINDS)
@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_image_raises_with_reason(case: str, kind: str) -> None:
    spec = BAD_IMAGES[case]
    data = bytes(spec["size"])
    msg = _make_image(kind, spec["encoding"], spec["width"], spec["height"], spec["step"], data)
    with pytest.raises(ImageConversionError) as info:
        image_msg_to_rgb(msg)
    assert info.value.reason == EXPECTED_REASON[case]
    assert isinstance(info.value, ValueError)
    assert str(info.value)  # a readable message, not just the tag


def test_huge_header_allocates_nothing_even_when_limit_raised() -> None:
    msg = _make_image("bytes", "rgb8", 20000, 20000, 60000, bytes(100))
    tracemalloc.start()
    try:
        with pytest.raises(ImageConversionError) as info:
            image_msg_to_rgb(msg, max_pixels=10**9)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.reason == "data_too_short"
    assert peak < 1_000_000


def test_max_pixels_is_configurable() -> None:
    msg = _make_image("bytes", "mono8", W, H, W, bytes(W * H))
    assert image_msg_to_rgb(msg, max_pixels=W * H).shape == (H, W, 3)
    with pytest.raises(ImageConversionError) as info:
        image_msg_to_rgb(msg, max_pixels=W * H - 1)
    assert info.value.reason == "too_large"


# --- CompressedImage ---------------------------------------------------------------------------


def _compressed(data: bytes, fmt: str = "jpeg"):
    return SimpleNamespace(format=fmt, data=np.frombuffer(data, dtype=np.uint8))


def test_compressed_png_round_trip_is_exact() -> None:
    rgb = _rgb(6, 16, 24)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    np.testing.assert_array_equal(compressed_msg_to_rgb(_compressed(png.tobytes(), "png")), rgb)


@needs_rclpy_msgs
def test_compressed_jpeg_from_rclpy_message() -> None:
    from sensor_msgs.msg import CompressedImage

    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :24] = (200, 30, 10)
    rgb[:, 24:] = (10, 40, 220)
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    msg = CompressedImage(format="jpeg")
    msg.data = jpg.tobytes()
    out = compressed_msg_to_rgb(msg)
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb).mean() < 4


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, b"not an image at all"],
    ids=["empty", "corrupt_jpeg", "junk"],
)
def test_corrupt_compressed_reports_decode_failed(payload: bytes) -> None:
    with pytest.raises(ImageConversionError) as info:
        compressed_msg_to_rgb(_compressed(payload))
    assert info.value.reason == "decode_failed"


@pytest.mark.parametrize("side", [9000, 30000])  # ours refuses 9000^2; Pillow's bomb check 30000^2
def test_compressed_header_claiming_huge_size_is_refused_before_decoding(side: int) -> None:
    ok, png = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))
    data = bytearray(png.tobytes())
    # IHDR payload starts at byte 16: width, height (big-endian), then its CRC after 13 bytes.
    data[16:24] = struct.pack(">II", side, side)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    with pytest.raises(ImageConversionError) as info:
        compressed_msg_to_rgb(_compressed(bytes(data), "png"))
    assert info.value.reason == "too_large"


def test_compressed_depth_is_refused() -> None:
    with pytest.raises(ImageConversionError) as info:
        compressed_msg_to_rgb(_compressed(b"\x00" * 20, "16UC1; compressedDepth png"))
    assert info.value.reason == "unsupported_encoding"


# --- output messages ---------------------------------------------------------------------------


@needs_rclpy_msgs
@pytest.mark.parametrize(
    "encoding,array",
    [
        ("mono8", np.arange(H * W, dtype=np.uint8).reshape(H, W)),
        ("16UC1", (np.arange(H * W, dtype=np.uint16) * 997).reshape(H, W)),
        ("32FC1", np.linspace(0.5, 80.0, H * W, dtype=np.float32).reshape(H, W)),
        ("bgr8", _rgb(7)),
        ("rgb8", _rgb(8)[:, ::-1]),  # non-contiguous view must be written correctly
    ],
)
def test_numpy_to_image_msg_serialises_and_reads_back(encoding: str, array: np.ndarray) -> None:
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    header = Header(frame_id="cam_optical")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = numpy_to_image_msg(array, encoding, header)
    back = deserialize_message(serialize_message(msg), Image)
    assert (back.height, back.width, back.encoding, back.is_bigendian) == (H, W, encoding, 0)
    assert back.step == W * array.itemsize * (array.shape[2] if array.ndim == 3 else 1)
    assert back.header.frame_id == "cam_optical" and back.header.stamp.nanosec == 345
    restored = np.frombuffer(back.data, dtype=array.dtype).reshape(array.shape)
    np.testing.assert_array_equal(restored, array)


@needs_rclpy_msgs
def test_numpy_to_image_msg_round_trips_through_reader() -> None:
    rgb = _rgb(9)
    np.testing.assert_array_equal(image_msg_to_rgb(numpy_to_image_msg(rgb, "rgb8")), rgb)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    np.testing.assert_array_equal(image_msg_to_rgb(numpy_to_image_msg(bgr, "bgr8")), rgb)


@needs_rclpy_msgs
@pytest.mark.parametrize(
    "encoding,array,match",
    [
        ("mono8", np.zeros((H, W), np.float32), "dtype"),
        ("32FC1", np.zeros((H, W, 3), np.float32), "shape"),
        ("bgr8", np.zeros((H, W), np.uint8), "shape"),
        ("yuv422", np.zeros((H, W, 2), np.uint8), "cannot write"),
        ("mono8", np.zeros((0, W), np.uint8), "empty"),
    ],
)
def test_numpy_to_image_msg_rejects_bad_arrays(encoding: str, array: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        numpy_to_image_msg(array, encoding)


# --- CameraInfo -----------------------------------------------------------------------------------


K_DEFAULT = [500.0, 0, 320, 0, 510.0, 240, 0, 0, 1]
P_DEFAULT = [480.0, 0, 310, 0.5, 0, 490.0, 230, 0, 0, 0, 1, 0]


def _camera_info(kind: str, k=None, p=None, width: int = 640, height: int = 480):
    k = np.asarray(K_DEFAULT if k is None else k, dtype=np.float64)
    p = np.asarray(P_DEFAULT if p is None else p, dtype=np.float64)
    if kind == "rclpy":
        from sensor_msgs.msg import CameraInfo

        msg = CameraInfo(width=width, height=height, k=k, p=p)
        msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = 10, 20, 300, 200
        return msg
    types = _STORE.types
    stamp = types["builtin_interfaces/msg/Time"](sec=0, nanosec=0)
    header = types["std_msgs/msg/Header"](stamp=stamp, frame_id="c")
    roi = types["sensor_msgs/msg/RegionOfInterest"](
        x_offset=10, y_offset=20, height=200, width=300, do_rectify=False
    )
    return types["sensor_msgs/msg/CameraInfo"](
        header=header, height=height, width=width, distortion_model="plumb_bob", d=np.zeros(5),
        k=k, r=np.eye(3).reshape(-1), p=p, binning_x=0, binning_y=0, roi=roi,
    )


INFO_KINDS = [pytest.param("rclpy", marks=needs_rclpy_msgs), "rosbags"]


@pytest.mark.parametrize("kind", INFO_KINDS)
def test_camera_info_to_K_prefers_P_and_falls_back(kind: str) -> None:
    info = _camera_info(kind)
    np.testing.assert_allclose(camera_info_to_K(info), [[480, 0, 310], [0, 490, 230], [0, 0, 1]])
    k_only = camera_info_to_K(info, prefer_P=False)
    np.testing.assert_allclose(k_only, [[500, 0, 320], [0, 510, 240], [0, 0, 1]])
    no_p = _camera_info(kind, p=np.zeros(12))
    np.testing.assert_allclose(camera_info_to_K(no_p), [[500, 0, 320], [0, 510, 240], [0, 0, 1]])


@pytest.mark.parametrize("kind", INFO_KINDS)
@pytest.mark.parametrize(
    "k,p",
    [
        (np.zeros(9), np.zeros(12)),
        ([np.nan, 0, 320, 0, 510, 240, 0, 0, 1], np.zeros(12)),
        ([500, 0, 320, 0, 510, 240, 0, 0, 1], [480, 0, np.inf, 0, 0, 490, 230, 0, 0, 0, 1, 0]),
        ([0, 0, 320, 0, 510, 240, 0, 0, 1], np.zeros(12)),
        ([500, 0, 320, 0, -1, 240, 0, 0, 1], np.zeros(12)),
    ],
    ids=["all_zero", "nan_k", "inf_p", "fx_zero", "fy_negative"],
)
def test_invalid_camera_info(kind: str, k, p) -> None:
    with pytest.raises(CameraInfoError) as info:
        camera_info_to_K(_camera_info(kind, k=k, p=p))
    assert info.value.reason == "invalid_camera_info"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("kind", INFO_KINDS)
def test_scale_camera_info_like_image_proc_resize(kind: str) -> None:
    info = _camera_info(kind)
    scaled = scale_camera_info(info, 320, 360)  # sx = 0.5, sy = 0.75
    np.testing.assert_allclose(scaled.k, [250, 0, 160, 0, 382.5, 180, 0, 0, 1])
    np.testing.assert_allclose(scaled.p, [240, 0, 155, 0.25, 0, 367.5, 172.5, 0, 0, 0, 1, 0])
    assert (scaled.width, scaled.height) == (320, 360)
    roi = scaled.roi
    assert (roi.x_offset, roi.y_offset, roi.width, roi.height) == (5, 15, 150, 150)
    np.testing.assert_allclose(info.k, [500, 0, 320, 0, 510, 240, 0, 0, 1])  # input untouched


@pytest.mark.parametrize("kind", INFO_KINDS)
def test_camera_info_size_mismatch(kind: str) -> None:
    info = _camera_info(kind)
    info.roi.width = info.roi.height = 0  # full-frame info
    check_camera_info_matches(info, 640, 480)
    with pytest.raises(CameraInfoError) as err:
        check_camera_info_matches(info, 1280, 720)
    assert err.value.reason == "camera_info_size_mismatch"


# --- CompressedImage decoded on the device (the all-GPU path) ----------------------------------


def _jpeg_of(rgb: np.ndarray) -> bytes:
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return jpg.tobytes()


def test_device_decode_on_cpu_is_the_cpu_decode() -> None:
    from panoptic_depthlab_core.image_messages import compressed_msg_to_device

    jpg = _jpeg_of(_rgb(7, 32, 48))
    out = compressed_msg_to_device(_compressed(jpg), "cpu")
    np.testing.assert_array_equal(out, compressed_msg_to_rgb(_compressed(jpg)))
    for payload in (b"", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4):
        with pytest.raises(ImageConversionError) as info:
            compressed_msg_to_device(_compressed(payload), "cpu")
        assert info.value.reason == "decode_failed"


def test_device_decode_on_cuda_matches_cpu_and_reports_corrupt_jpeg() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("CUDA not available: nvJPEG decoding needs an NVIDIA GPU")
    from panoptic_depthlab_core.image_messages import compressed_msg_to_device

    rgb = np.zeros((64, 96, 3), np.uint8)
    rgb[:, :48] = (200, 30, 10)
    rgb[:, 48:] = (10, 40, 220)
    out = compressed_msg_to_device(_compressed(_jpeg_of(rgb)), "cuda")
    assert isinstance(out, torch.Tensor) and out.device.type == "cuda" and tuple(out.shape) == rgb.shape
    assert np.abs(out.cpu().numpy().astype(int) - rgb).mean() < 4
    with pytest.raises(ImageConversionError) as info:
        compressed_msg_to_device(_compressed(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4), "cuda")
    assert info.value.reason == "decode_failed"
