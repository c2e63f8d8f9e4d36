"""ROS 2 image and camera messages <-> numpy, without cv_bridge (it breaks on NumPy 2 / OpenCV 5).

Reading image messages is the core's (``panoptic_depthlab_core.image_messages``: it needs no ROS, and
INT8 calibration reads bags with it); the readers are imported here for the node's modules. This
module adds what needs the message classes: writing Image messages, and CameraInfo intrinsics.
"""

from __future__ import annotations

import array
import copy
import math
from typing import Any

import numpy as np

from panoptic_depthlab_core.image_messages import MessageConversionError


class CameraInfoError(MessageConversionError):
    """A CameraInfo whose intrinsics are unusable (reason ``invalid_camera_info`` and friends)."""


# Output encodings numpy_to_image_msg can write: encoding -> (dtype, channels).
_OUTPUT_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgb8": (np.dtype(np.uint8), 3),
    "bgra8": (np.dtype(np.uint8), 4),
    "rgba8": (np.dtype(np.uint8), 4),
}


def numpy_to_image_msg(pixels: np.ndarray, encoding: str, header: Any = None) -> Any:
    """Build a sensor_msgs/Image from an (H, W) or (H, W, C) array; one memcpy into the message.

    ``array.array.frombytes(memoryview)`` is several times faster than ``msg.data = arr.tobytes()``
    (rclpy's setter re-copies the bytes; see docs/performance.md), so that is what we use.
    ``header`` is copied by reference (pass the input header to keep stamp and frame_id).
    """
    from sensor_msgs.msg import Image  # lazy: the camera-info helpers work without rclpy

    spec = _OUTPUT_ENCODINGS.get(encoding)
    if spec is None:
        raise ValueError(f"cannot write encoding {encoding!r}; supported: {', '.join(_OUTPUT_ENCODINGS)}")
    dtype, channels = spec
    if not isinstance(pixels, np.ndarray):
        raise ValueError(f"expected a numpy array, got {type(pixels).__name__}")
    if pixels.ndim == 3 and channels == 1 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    expected_ndim = 2 if channels == 1 else 3
    if pixels.ndim != expected_ndim or (channels > 1 and pixels.shape[2] != channels):
        form = "(H, W)" if channels == 1 else f"(H, W, {channels})"
        raise ValueError(f"{encoding} needs an array of shape {form}, got {pixels.shape}")
    if pixels.dtype != dtype:
        raise ValueError(f"{encoding} needs dtype {dtype}, got {pixels.dtype}")
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    if height == 0 or width == 0:
        raise ValueError(f"cannot publish an empty image ({width}x{height})")
    contiguous = np.ascontiguousarray(pixels)
    if not contiguous.dtype.isnative and contiguous.dtype.itemsize > 1:
        contiguous = contiguous.astype(contiguous.dtype.newbyteorder("="))
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height = height
    msg.width = width
    msg.encoding = encoding
    msg.is_bigendian = 0 if np.little_endian or dtype.itemsize == 1 else 1
    msg.step = width * channels * dtype.itemsize
    data = array.array("B")
    data.frombytes(memoryview(contiguous).cast("B"))
    msg.data = data
    return msg


def rgb_to_image_msg(rgb: np.ndarray, header: Any = None) -> Any:
    """Publish an RGB uint8 (H, W, 3) array as rgb8."""
    return numpy_to_image_msg(rgb, "rgb8", header)


def bgr_to_image_msg(bgr: np.ndarray, header: Any = None) -> Any:
    """Publish a BGR uint8 (H, W, 3) array as bgr8 (OpenCV drawing output)."""
    return numpy_to_image_msg(bgr, "bgr8", header)


_INVALID_INFO = "invalid_camera_info"


def _matrix(values: Any, size: int, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size != size:
        raise CameraInfoError(_INVALID_INFO, f"CameraInfo.{name} has {arr.size} values, expected {size}")
    return arr


def camera_info_to_K(msg: Any, prefer_P: bool = True) -> np.ndarray:
    """Return the 3x3 intrinsic matrix of a sensor_msgs/CameraInfo.

    With ``prefer_P`` the left 3x3 of P (the rectified projection, right for rectified images)
    is used whenever P is set; drivers that leave P all zeros fall back to K.
    Raises CameraInfoError(reason="invalid_camera_info") for all-zero, non-finite or fx/fy <= 0.
    """
    k = _matrix(msg.k, 9, "k").reshape(3, 3)
    p = _matrix(msg.p, 12, "p").reshape(3, 4)
    use_p = prefer_P and bool(np.any(p != 0))
    intrinsics = p[:, :3].copy() if use_p else k.copy()
    source = "P" if use_p else "K"
    if not np.all(np.isfinite(intrinsics)):
        raise CameraInfoError(_INVALID_INFO, f"CameraInfo {source} has NaN or Inf: {intrinsics.tolist()}")
    if not np.any(intrinsics != 0):
        raise CameraInfoError(_INVALID_INFO, f"CameraInfo {source} is all zeros (uncalibrated camera)")
    fx, fy = intrinsics[0, 0], intrinsics[1, 1]
    if fx <= 0 or fy <= 0:
        raise CameraInfoError(_INVALID_INFO, f"CameraInfo {source} has fx={fx}, fy={fy}; both must be > 0")
    return intrinsics


def camera_info_image_size(msg: Any) -> tuple[int, int]:
    """(width, height) of the images this CameraInfo describes, accounting for ROI and binning."""
    bin_x = max(int(msg.binning_x), 1)
    bin_y = max(int(msg.binning_y), 1)
    roi = msg.roi
    full_w = int(roi.width) if int(roi.width) > 0 else int(msg.width)
    full_h = int(roi.height) if int(roi.height) > 0 else int(msg.height)
    return full_w // bin_x, full_h // bin_y


def check_camera_info_matches(msg: Any, width: int, height: int) -> None:
    """Raise CameraInfoError(reason="camera_info_size_mismatch") if msg doesn't describe a WxH image."""
    info_w, info_h = camera_info_image_size(msg)
    if (info_w, info_h) != (int(width), int(height)):
        raise CameraInfoError(
            "camera_info_size_mismatch",
            f"CameraInfo describes {info_w}x{info_h} images but the image is {width}x{height}",
        )


def scale_camera_info(msg: Any, width: int, height: int) -> Any:
    """Return a copy of ``msg`` for images resized to width x height, as image_proc's resize does.

    k[0], k[2] and p[0], p[2], p[3] scale by sx; k[4], k[5] and p[5], p[6] by sy (plain
    multiplication, no half-pixel correction); ROI offsets/size scale and truncate like the C++ casts.
    """
    src_w, src_h = int(msg.width), int(msg.height)
    if src_w <= 0 or src_h <= 0:
        raise CameraInfoError("invalid_camera_info", f"cannot scale a CameraInfo of size {src_w}x{src_h}")
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"target size must be positive, got {width}x{height}")
    sx = int(width) / src_w
    sy = int(height) / src_h
    out = copy.deepcopy(msg)
    k = _matrix(msg.k, 9, "k").copy()
    p = _matrix(msg.p, 12, "p").copy()
    k[0] *= sx
    k[2] *= sx
    k[4] *= sy
    k[5] *= sy
    p[0] *= sx
    p[2] *= sx
    p[3] *= sx
    p[5] *= sy
    p[6] *= sy
    out.k = k
    out.p = p
    out.width = int(width)
    out.height = int(height)
    out.roi.x_offset = int(math.floor(int(msg.roi.x_offset) * sx))
    out.roi.y_offset = int(math.floor(int(msg.roi.y_offset) * sy))
    out.roi.width = int(math.floor(int(msg.roi.width) * sx))
    out.roi.height = int(math.floor(int(msg.roi.height) * sy))
    return out
