"""What play and record share: message classes by type name, QoS, an rclpy context we own.

We make our own rclpy Context (not the global one), so rclpy installs no signal handlers: Ctrl-C is a
plain KeyboardInterrupt and the ``finally`` blocks that close bags run. SIGTERM is turned into the same.
"""

from __future__ import annotations

import importlib
import signal
from contextlib import contextmanager
from typing import Any


def import_message_class(msgtype: str) -> Any:
    """The rclpy class for ``pkg/msg/Name``; ImportError naming the type when it is not installed."""
    parts = msgtype.split("/")
    if len(parts) != 3 or not all(parts):
        raise ImportError(f"malformed message type name {msgtype!r} (expected pkg/msg/Name)")
    pkg, kind, name = parts
    try:
        module = importlib.import_module(f"{pkg}.{kind}")
        return getattr(module, name)
    except (ImportError, AttributeError) as exc:
        raise ImportError(f"message type {msgtype} is not available to rclpy here ({exc})") from exc


def make_qos(reliable: bool = True, transient_local: bool = False, depth: int = 100) -> Any:
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient_local else DurabilityPolicy.VOLATILE,
    )


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises KeyboardInterrupt (main thread only; a no-op elsewhere)."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def ros_context(context: Any = None):
    """Yield an initialised rclpy Context: the caller's, or a new one shut down on exit."""
    if context is not None:
        yield context
        return
    import rclpy
    from rclpy.context import Context

    own = Context()
    rclpy.init(context=own)
    try:
        yield own
    finally:
        rclpy.try_shutdown(context=own)
