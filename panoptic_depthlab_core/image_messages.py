"""Image messages -> numpy: sensor_msgs/Image and CompressedImage read without ROS (no cv_bridge).

The one reader of image messages for every consumer: the node (live topics), the bag tools and
INT8 calibration (recorded bags, read by rosbags without ROS). The readers use duck typing:
``msg.data`` may be ``array.array`` (rclpy), ``bytes`` or a numpy uint8 array (rosbags), so the
same code serves both, and nothing here imports ROS. Every size claimed by a header is checked
against the buffer BEFORE anything is allocated, so a malformed message claiming 20000x20000
pixels cannot make us allocate gigabytes. cv_bridge is not used: it breaks on NumPy 2 / OpenCV 5.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image as PILImage

from panoptic_depthlab_core.runtime.gpu_pipeline import JPEG_MAGIC, decode_image, gpu_jpeg_available

# 8192 x 8192: above every real camera (8K is 33 MP), far below a memory blow-up.
DEFAULT_MAX_PIXELS = 8192 * 8192


class MessageConversionError(ValueError):
    """A message we cannot convert; ``reason`` is a short machine-readable tag for counting."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class ImageConversionError(MessageConversionError):
    """An Image/CompressedImage that cannot be turned into an RGB array."""


@dataclass(frozen=True)
class _Encoding:
    channels: int  # samples per pixel as stored in the buffer
    bytes_per_sample: int
    kind: str = "u"  # numpy dtype kind of a sample: unsigned or float


# What each readable encoding stores per pixel. yuv422 is UYVY, yuv422_yuy2 is YUYV (ROS naming);
# both hold 2 bytes per pixel.
_ENCODINGS: dict[str, _Encoding] = {
    "rgb8": _Encoding(3, 1),
    "bgr8": _Encoding(3, 1),
    "rgba8": _Encoding(4, 1),
    "bgra8": _Encoding(4, 1),
    "mono8": _Encoding(1, 1),
    "mono16": _Encoding(1, 2),
    "rgb16": _Encoding(3, 2),
    "bgr16": _Encoding(3, 2),
    "rgba16": _Encoding(4, 2),
    "bgra16": _Encoding(4, 2),
    "yuv422": _Encoding(2, 1),
    "yuv422_yuy2": _Encoding(2, 1),
    # data, not pictures: id maps (16UC1) and depth (16UC1 mm, 32FC1 m); never converted to RGB
    "8UC1": _Encoding(1, 1),
    "16UC1": _Encoding(1, 2),
    "32FC1": _Encoding(1, 4, "f"),
}
_DATA_ENCODINGS = frozenset({"8UC1", "16UC1", "32FC1"})

# The encodings a camera image may have: the ones ``image_msg_to_rgb`` converts.
SUPPORTED_INPUT_ENCODINGS: tuple[str, ...] = tuple(e for e in _ENCODINGS if e not in _DATA_ENCODINGS)

# 16-bit samples are mapped to 8 bits by x * 255 / 65535 (what cv_bridge's depth scaling does).
_SCALE_16_TO_8 = 255.0 / 65535.0


def _as_byte_buffer(data: Any) -> np.ndarray:
    """View ``msg.data`` as a flat uint8 array without copying (array.array, bytes, numpy, memoryview)."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ImageConversionError("bad_data", f"image data has dtype {data.dtype}, expected uint8")
        return data.reshape(-1)
    if isinstance(data, (list, tuple)):
        # Plain sequences only come from hand-built messages; this copies, which is fine for them.
        return np.asarray(data, dtype=np.uint8)
    try:
        view = memoryview(data)
    except TypeError as exc:
        raise ImageConversionError(
            "bad_data", f"image data of type {type(data).__name__} is not a byte buffer"
        ) from exc
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return np.frombuffer(view, dtype=np.uint8)


def _data_length(data: Any) -> int:
    """Byte length of ``msg.data`` without materialising it."""
    if isinstance(data, np.ndarray):
        return int(data.nbytes)
    if isinstance(data, (list, tuple)):
        return len(data)
    try:
        return memoryview(data).nbytes
    except TypeError as exc:
        raise ImageConversionError(
            "bad_data", f"image data of type {type(data).__name__} is not a byte buffer"
        ) from exc


def _check_pixel_count(width: int, height: int, max_pixels: int, what: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageConversionError("zero_size", f"{what} has zero size ({width}x{height})")
    if width * height > max_pixels:
        raise ImageConversionError(
            "too_large",
            f"{what} claims {width}x{height} = {width * height} pixels, above the limit of {max_pixels}",
        )


def image_msg_to_array(msg: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Validate a sensor_msgs/Image and return its pixels as a (H, W, C) view of ``msg.data``.

    No conversion: samples stay in the message's encoding (the camera encodings, and 8UC1, 16UC1,
    32FC1 for id and depth maps); multi-byte samples come back in native byte order (a copy only
    when ``is_bigendian`` differs from this machine). Row padding is skipped through strides, so
    the result may be non-contiguous and read-only.
    """
    encoding = str(msg.encoding)
    spec = _ENCODINGS.get(encoding)
    if spec is None:
        raise ImageConversionError(
            "unsupported_encoding",
            f"unsupported image encoding {encoding!r}; supported: {', '.join(_ENCODINGS)}",
        )
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    _check_pixel_count(width, height, max_pixels, "image")
    if encoding.startswith("yuv422") and width % 2:
        raise ImageConversionError("odd_width", f"{encoding} image needs an even width, got {width}")
    row_bytes = width * spec.channels * spec.bytes_per_sample
    if step < row_bytes:
        raise ImageConversionError(
            "step_too_small",
            f"step {step} is smaller than width*channels*bytes = {width}*{spec.channels}*"
            f"{spec.bytes_per_sample} = {row_bytes} for {encoding}",
        )
    needed = step * height
    have = _data_length(msg.data)
    if have < needed:
        raise ImageConversionError(
            "data_too_short", f"image data has {have} bytes, step*height = {step}*{height} = {needed} needed"
        )
    buf = _as_byte_buffer(msg.data)
    if spec.bytes_per_sample == 1:
        dtype = np.dtype(np.uint8)
    else:
        dtype = np.dtype(f"{'>' if msg.is_bigendian else '<'}{spec.kind}{spec.bytes_per_sample}")
    pixels = np.ndarray(
        shape=(height, width, spec.channels),
        dtype=dtype,
        buffer=buf,
        offset=0,
        strides=(step, spec.channels * spec.bytes_per_sample, spec.bytes_per_sample),
    )
    if not dtype.isnative:
        pixels = pixels.astype(dtype.newbyteorder("="))
    return pixels


def image_msg_to_rgb(msg: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Convert a sensor_msgs/Image to a contiguous uint8 (H, W, 3) RGB array.

    rgb8 without row padding is returned as a zero-copy (possibly read-only) view of ``msg.data``;
    other encodings cost one conversion pass. 16-bit data is scaled to 8 bits by 255/65535.
    Raises ImageConversionError (a ValueError) with ``reason`` for any malformed message.
    """
    encoding = str(msg.encoding)
    if encoding not in SUPPORTED_INPUT_ENCODINGS:
        raise ImageConversionError(
            "unsupported_encoding",
            f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_INPUT_ENCODINGS)}",
        )
    pixels = image_msg_to_array(msg, max_pixels=max_pixels)
    if pixels.dtype != np.uint8:
        pixels = cv2.convertScaleAbs(np.ascontiguousarray(pixels), alpha=_SCALE_16_TO_8)
        if pixels.ndim == 2:  # cv2 drops a trailing channel axis of 1
            pixels = pixels[:, :, None]
    if encoding in ("rgb8", "rgb16"):
        rgb = pixels
    elif encoding in ("bgr8", "bgr16"):
        rgb = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    elif encoding in ("rgba8", "rgba16"):
        rgb = cv2.cvtColor(pixels, cv2.COLOR_RGBA2RGB)
    elif encoding in ("bgra8", "bgra16"):
        rgb = cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGB)
    elif encoding in ("mono8", "mono16"):
        rgb = cv2.cvtColor(pixels[:, :, 0], cv2.COLOR_GRAY2RGB)
    elif encoding == "yuv422":
        rgb = cv2.cvtColor(pixels, cv2.COLOR_YUV2RGB_UYVY)
    elif encoding == "yuv422_yuy2":
        rgb = cv2.cvtColor(pixels, cv2.COLOR_YUV2RGB_YUY2)
    else:  # pragma: no cover - the table and this chain must stay in sync
        raise ImageConversionError("unsupported_encoding", f"no RGB conversion for {encoding!r}")
    return np.ascontiguousarray(rgb)


def _peek_compressed_size(buf: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from the image header without decoding pixels; None if Pillow can't tell."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(buf)) as probe:
                return int(probe.size[0]), int(probe.size[1])
    except PILImage.DecompressionBombError as exc:  # far above any sane limit
        raise ImageConversionError("too_large", f"compressed image header claims a huge size: {exc}") from exc
    except Exception:  # any other failure means "unknown"; cv2 decides below
        return None


def compressed_msg_to_rgb(msg: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (JPEG/PNG/...) to a uint8 (H, W, 3) RGB array.

    The header's size is checked before decoding so a tiny file claiming a huge image is refused.
    compressedDepth payloads are refused: they carry a custom header, not a colour image.
    """
    fmt = str(getattr(msg, "format", ""))
    if "compresseddepth" in fmt.replace(" ", "").lower():
        raise ImageConversionError(
            "unsupported_encoding", f"compressedDepth format {fmt!r} is not a colour image"
        )
    if _data_length(msg.data) == 0:
        raise ImageConversionError("decode_failed", "compressed image has no data")
    buf = _as_byte_buffer(msg.data)
    size = _peek_compressed_size(buf)
    if size is not None:
        _check_pixel_count(size[0], size[1], max_pixels, "compressed image")
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise ImageConversionError(
            "decode_failed", f"could not decode compressed image (format {fmt!r}, {buf.size} bytes)"
        )
    _check_pixel_count(bgr.shape[1], bgr.shape[0], max_pixels, "compressed image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def compressed_msg_to_device(msg: Any, device: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Any:
    """Like :func:`compressed_msg_to_rgb`, but JPEGs are decoded on ``device`` (nvJPEG) when it is a
    CUDA device: the upload is the compressed bytes, and the RGB frame never exists on the host.
    Returns a uint8 (H, W, 3) torch tensor on the device, or the CPU-decoded numpy array otherwise."""
    fmt = str(getattr(msg, "format", ""))
    if "compresseddepth" in fmt.replace(" ", "").lower() or _data_length(msg.data) == 0:
        return compressed_msg_to_rgb(msg, max_pixels=max_pixels)  # raises with the reason
    buf = _as_byte_buffer(msg.data)
    if buf[:2].tobytes() != JPEG_MAGIC or not gpu_jpeg_available(device):
        return compressed_msg_to_rgb(msg, max_pixels=max_pixels)
    size = _peek_compressed_size(buf)
    if size is None:
        raise ImageConversionError("decode_failed", f"JPEG without a readable frame header ({buf.size} bytes)")
    _check_pixel_count(size[0], size[1], max_pixels, "compressed image")
    try:
        rgb = decode_image(buf, device)
    except (RuntimeError, ValueError) as exc:
        raise ImageConversionError(
            "decode_failed", f"could not decode JPEG on {device} ({buf.size} bytes): {exc}"
        ) from None
    _check_pixel_count(int(rgb.shape[1]), int(rgb.shape[0]), max_pixels, "compressed image")
    return rgb


def is_compressed(msg: Any) -> bool:
    """sensor_msgs/CompressedImage has ``format`` and no ``encoding``."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def image_message_to_rgb(msg: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS, device: Any = None) -> Any:
    """Image or CompressedImage -> uint8 (H, W, 3) RGB; ImageConversionError with ``reason``.

    With a CUDA ``device``, a compressed JPEG is decoded there and comes back as a device tensor
    (the all-GPU path); everything else is a numpy array."""
    if is_compressed(msg):
        if device is not None and str(device).startswith("cuda"):
            return compressed_msg_to_device(msg, device, max_pixels=max_pixels)
        return compressed_msg_to_rgb(msg, max_pixels=max_pixels)
    return image_msg_to_rgb(msg, max_pixels=max_pixels)
