"""rclpy messages serialised by the rmw itself into a zero-filled buffer: CDR without leftover memory.

``rclpy.serialization.serialize_message`` lets the rmw write into a freshly ``realloc``-ed buffer and
never touches the alignment padding, so those bytes hold whatever the allocator returned (different
on every run, and a leak of process memory into the bags we write). Here the same rmw call,
``rmw_serialize`` (documented rmw API, unchanged since Dashing), runs twice on one converted C
message: the first call sizes and allocates the buffer, which is then zeroed, the second writes the
same bytes into it, leaving the padding zero. The C message comes from the message class's own
rosidl conversion (``_CREATE_ROS_MESSAGE``/``_CONVERT_FROM_PY``/``_DESTROY_ROS_MESSAGE``, the
capsules rclpy itself calls).

Only used where ``RmwZeroSerializer.available()``; ``common.CdrSerializer`` checks every message
type once against its rosbags path and uses this one only where the bytes agree.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

from panoptic_depthlab_ros.image_publisher import RcutilsAllocator, SerializedMessage, loaded_library

# The rmw rclpy uses: the dispatching one in a ROS install, else the one the wheels link directly.
_RMW_LIBRARIES = ("librmw_implementation.so", "librmw_fastrtps_cpp.so", "librmw_cyclonedds_cpp.so")
# PyCapsule_GetPointer with our own prototype (not by changing the shared ctypes.pythonapi entry)
_capsule_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", ctypes.pythonapi)
)


class RmwZeroSerializer:
    """``serialize(msg) -> bytes``: rclpy's bytes for ``msg`` with the padding zeroed (see module doc)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._types: dict[type, tuple[Any, Any, Any, int]] = {}
        self._functions = self._load()

    @staticmethod
    def _load() -> tuple[Any, Any, Any] | None:
        """(rmw_serialize, rcutils_get_default_allocator, rcutils_uint8_array_fini) or None."""
        from rclpy.serialization import serialize_message
        from std_msgs.msg import Empty

        serialize_message(Empty())  # maps the rmw into the process
        rmw_path = next((p for p in map(loaded_library, _RMW_LIBRARIES) if p), None)
        rcutils_path = loaded_library("librcutils.so")
        if rmw_path is None or rcutils_path is None:
            return None
        try:
            rmw_serialize = ctypes.CDLL(rmw_path).rmw_serialize
            rcutils = ctypes.CDLL(rcutils_path)
            default_allocator = rcutils.rcutils_get_default_allocator
            fini = rcutils.rcutils_uint8_array_fini
        except (OSError, AttributeError):
            return None
        rmw_serialize.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(SerializedMessage)]
        rmw_serialize.restype = ctypes.c_int
        default_allocator.argtypes, default_allocator.restype = [], RcutilsAllocator
        fini.argtypes, fini.restype = [ctypes.POINTER(SerializedMessage)], ctypes.c_int
        return rmw_serialize, default_allocator, fini

    def available(self) -> bool:
        return self._functions is not None

    def _type_functions(self, cls: type) -> tuple[Any, Any, Any, int]:
        functions = self._types.get(cls)
        if functions is None:
            get = _capsule_pointer
            type(cls).__import_type_support__()  # fills the capsules below
            functions = (
                ctypes.PYFUNCTYPE(ctypes.c_void_p)(get(cls._CREATE_ROS_MESSAGE, None)),
                ctypes.PYFUNCTYPE(ctypes.c_bool, ctypes.py_object, ctypes.c_void_p)(get(cls._CONVERT_FROM_PY, None)),
                ctypes.PYFUNCTYPE(None, ctypes.c_void_p)(get(cls._DESTROY_ROS_MESSAGE, None)),
                get(cls._TYPE_SUPPORT, None),
            )
            self._types[cls] = functions
        return functions

    def serialize(self, msg: Any) -> bytes:
        if self._functions is None:
            raise RuntimeError("rmw_serialize is not available in this process")
        rmw_serialize, default_allocator, fini = self._functions
        with self._lock:
            create, convert, destroy, type_support = self._type_functions(type(msg))
        c_msg = create()
        if not c_msg:
            raise MemoryError(f"cannot create a C {type(msg).__name__}")
        try:
            if not convert(msg, c_msg):
                raise ValueError(f"cannot convert {type(msg).__name__} to its C message")
            serialized = SerializedMessage(None, 0, 0, default_allocator())
            try:
                if rmw_serialize(c_msg, type_support, ctypes.byref(serialized)) != 0:
                    raise RuntimeError(f"rmw_serialize failed for {type(msg).__name__}")
                ctypes.memset(serialized.buffer, 0, serialized.buffer_capacity)
                if rmw_serialize(c_msg, type_support, ctypes.byref(serialized)) != 0:
                    raise RuntimeError(f"rmw_serialize failed for {type(msg).__name__}")
                return ctypes.string_at(serialized.buffer, serialized.buffer_length)
            finally:
                if serialized.buffer:
                    fini(ctypes.byref(serialized))
        finally:
            destroy(c_msg)
