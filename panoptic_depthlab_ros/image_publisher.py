"""Publishing large sensor_msgs/Image messages without holding Python's GIL.

rclpy's ``Publisher.publish`` holds the GIL for the whole call: converting the message, serialising
it and Fast DDS copying it out, milliseconds per 1080p image. The node publishes four such images
per frame from a helper thread while its worker computes the per-segment statistics, so those
statistics waited on the GIL (measured in docs/performance.md). Here the message is serialised (CDR, the
bytes of ``rclpy.serialization.serialize_message`` with the alignment padding zeroed) into one
buffer and handed to ``rcl_publish_serialized_message`` through ctypes, which releases the GIL
during foreign calls.

Only the documented rcl C API is used (``rcl_publish_serialized_message`` and the
``rcl_serialized_message_t`` struct, unchanged since ROS 2 Dashing) with the publisher's own
``rcl_publisher_t`` (``Publisher.handle.pointer``). Where any of it is missing (no librcl found,
an rclpy without ``pointer``, a big-endian host), the rmw serializes differently (checked once
on a probe image) or a call fails, ``ImagePublisher`` uses the ordinary ``publish`` — never a
lost message.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

_ENCAPSULATION_CDR_LE = b"\x00\x01\x00\x00"


def _cdr_string(text: str) -> bytes:
    """A CDR string: uint32 length including the terminating NUL, the bytes, the NUL."""
    raw = text.encode("utf-8") + b"\0"
    return struct.pack("<I", len(raw)) + raw


def _pad4(prefix: bytes) -> bytes:
    """Align to 4 bytes (offsets count from after the encapsulation header, which is 4 long)."""
    return prefix + b"\0" * (-len(prefix) % 4)


def image_cdr_prefix(msg: Any) -> bytes:
    """Everything of a serialised little-endian sensor_msgs/Image before its pixel bytes."""
    header = msg.header
    body = _pad4(struct.pack("<iI", header.stamp.sec, header.stamp.nanosec) + _cdr_string(header.frame_id))
    body = _pad4(body + struct.pack("<II", msg.height, msg.width) + _cdr_string(msg.encoding)
                 + struct.pack("<B", msg.is_bigendian))  # fmt: skip
    body += struct.pack("<II", msg.step, len(msg.data))
    return _ENCAPSULATION_CDR_LE + body


def serialize_image(msg: Any) -> np.ndarray:
    """A sensor_msgs/Image as little-endian CDR bytes (uint8 array), as ``serialize_message(msg)``
    writes them; the pixels are copied once, by ``ctypes.memmove`` (no GIL held during the copy)."""
    prefix = image_cdr_prefix(msg)
    pixels = np.frombuffer(msg.data, dtype=np.uint8)
    out = np.empty(len(prefix) + pixels.size, dtype=np.uint8)
    out[: len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    if pixels.size:
        ctypes.memmove(out.ctypes.data + len(prefix), pixels.ctypes.data, pixels.size)
    return out


class RcutilsAllocator(ctypes.Structure):
    """rcutils_allocator_t (also used by bags.zero_cdr, which calls rmw_serialize the same way)."""

    _fields_ = [
        ("allocate", ctypes.c_void_p),
        ("deallocate", ctypes.c_void_p),
        ("reallocate", ctypes.c_void_p),
        ("zero_allocate", ctypes.c_void_p),
        ("state", ctypes.c_void_p),
    ]


class SerializedMessage(ctypes.Structure):
    """rcl_serialized_message_t (= rcutils_uint8_array_t)."""

    _fields_ = [
        ("buffer", ctypes.c_void_p),
        ("buffer_length", ctypes.c_size_t),
        ("buffer_capacity", ctypes.c_size_t),
        ("allocator", RcutilsAllocator),
    ]


_RCL_LOCK = threading.Lock()
_RCL_FUNCTIONS: list[Any] = []  # [(publish, reset_error) or None] once looked up


def loaded_library(prefix: str) -> str | None:
    """Path of a shared library already mapped into this process (Linux), else None."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if line.strip() else ""
                if os.path.basename(path).startswith(prefix):
                    return path
    except OSError:
        return None
    return None


def _rcl_functions() -> tuple[Any, Any] | None:
    """(``rcl_publish_serialized_message``, ``rcutils_reset_error``) from the libraries rclpy
    uses, or None where they cannot be found (or on a big-endian host: the CDR here is LE)."""
    with _RCL_LOCK:
        if not _RCL_FUNCTIONS:
            functions = None
            if sys.byteorder == "little":
                import rclpy.impl.implementation_singleton  # noqa: F401 - maps librcl into the process

                rcl_path = loaded_library("librcl.so") or ctypes.util.find_library("rcl")
                rcutils_path = loaded_library("librcutils.so") or ctypes.util.find_library("rcutils")
                try:
                    publish = ctypes.CDLL(rcl_path).rcl_publish_serialized_message
                    reset_error = ctypes.CDLL(rcutils_path).rcutils_reset_error
                except (OSError, AttributeError, TypeError):
                    publish = reset_error = None
                if publish is not None:
                    publish.argtypes = [ctypes.c_void_p, ctypes.POINTER(SerializedMessage), ctypes.c_void_p]
                    publish.restype = ctypes.c_int
                    reset_error.argtypes, reset_error.restype = [], None
                    functions = (publish, reset_error)
            _RCL_FUNCTIONS.append(functions)
        return _RCL_FUNCTIONS[0]


def _probe_image() -> Any:
    """A small Image whose CDR has no alignment padding (string lengths chosen for it), so its
    bytes can be compared exactly with what the active rmw's serializer writes."""
    from sensor_msgs.msg import Image

    probe = Image(height=1, width=1, encoding="rgba16", is_bigendian=0, step=8, data=bytes(range(1, 9)))
    probe.header.frame_id = "abc"
    probe.header.stamp.sec, probe.header.stamp.nanosec = 1234567, 89
    return probe


def _serializer_matches_rmw() -> bool:
    """Whether ``serialize_image`` writes what this process's rmw does (XCDR1 little-endian for
    Fast DDS and Cyclone DDS); another representation would make subscribers misread the bytes."""
    from rclpy.serialization import serialize_message

    probe = _probe_image()
    return serialize_image(probe).tobytes() == serialize_message(probe)


class ImagePublisher:
    """Wraps an rclpy publisher of sensor_msgs/Image; ``publish(msg)`` with the GIL released.

    ``gil_free`` False, or the rcl pieces unavailable (``unavailable_reason`` says why), or an rcl
    call that failed once: plain ``publisher.publish`` from then on."""

    def __init__(self, publisher: Any, gil_free: bool = True, warn: Callable[[str], None] | None = None) -> None:
        """``warn(reason)`` is called when the GIL-free path was asked for but is not (or no
        longer) used."""
        self.publisher = publisher
        self.unavailable_reason: str | None = None
        self._warn = warn
        self._functions = _rcl_functions() if gil_free else None
        if not gil_free:
            self.unavailable_reason = "switched off"
        elif self._functions is None:
            self._unavailable("rcl_publish_serialized_message not found (or a big-endian host)")
        elif not hasattr(publisher.handle, "pointer"):
            self._unavailable("this rclpy does not expose the rcl publisher's address")
        elif not _serializer_matches_rmw():
            self._unavailable("this rmw serializes sensor_msgs/Image differently")
        self.gil_free = self.unavailable_reason is None

    def _unavailable(self, reason: str) -> None:
        self.unavailable_reason, self.gil_free = reason, False
        if self._warn is not None:
            self._warn(reason)

    def publish(self, msg: Any) -> None:
        if not self.gil_free:
            self.publisher.publish(msg)
            return
        data = serialize_image(msg)
        serialized = SerializedMessage(data.ctypes.data, data.size, data.size, RcutilsAllocator())
        publish, reset_error = self._functions
        with self.publisher.handle:  # keeps the rcl publisher alive during the call
            ret = publish(self.publisher.handle.pointer, ctypes.byref(serialized), None)
        if ret != 0:  # not RCL_RET_OK: nothing was sent; the ordinary path (raises rcl's message)
            reset_error()
            self._unavailable(f"rcl_publish_serialized_message returned {ret}")
            self.publisher.publish(msg)

    def get_subscription_count(self) -> int:
        return self.publisher.get_subscription_count()


__all__ = ["ImagePublisher", "image_cdr_prefix", "serialize_image"]
