"""rosbags typestore that also knows vision_msgs and panoptic_depthlab_msgs, so bags can carry our
detections and tracks.

rosbags ships the standard ROS 2 message definitions but neither of these. We register the same
.msg texts the interface packages are built from; installed copies live in
``panoptic_depthlab_ros/msg_defs/<package>`` (tests keep them identical to ``interfaces/``).
No rclpy needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MSG_DEFS_DIR = Path(__file__).resolve().parent / "msg_defs"
VISION_MSGS_DEFS_DIR = MSG_DEFS_DIR / "vision_msgs"
# Registered after vision_msgs, in this order (a package may use the ones before it).
INTERFACE_PACKAGES = ("vision_msgs", "panoptic_depthlab_msgs")

# Newest first; rclpy wheels here are kilted, so prefer its definitions when rosbags has them.
_PREFERRED_STORES = ("ROS2_KILTED", "ROS2_JAZZY", "ROS2_IRON", "ROS2_HUMBLE")


def interface_definitions(package: str, defs_dir: Path | None = None) -> dict[str, str]:
    """Map ``<package>/msg/Name`` to its .msg text (the packaged copies by default)."""
    defs_dir = defs_dir if defs_dir is not None else MSG_DEFS_DIR / package
    paths = sorted(defs_dir.glob("*.msg"))
    if not paths:
        raise FileNotFoundError(f"no {package} .msg definitions found in {defs_dir}")
    return {f"{package}/msg/{p.stem}": p.read_text(encoding="utf-8") for p in paths}


def vision_msgs_definitions(defs_dir: Path = VISION_MSGS_DEFS_DIR) -> dict[str, str]:
    """Map ``vision_msgs/msg/Name`` to its .msg text."""
    return interface_definitions("vision_msgs", defs_dir)


def default_store_name() -> str:
    """Name of the newest ROS 2 typestore this rosbags version provides."""
    from rosbags.typesys import Stores

    for name in _PREFERRED_STORES:
        if hasattr(Stores, name):
            return name
    raise RuntimeError(f"rosbags provides none of the ROS 2 typestores {_PREFERRED_STORES}; upgrade rosbags")


def make_typestore(store_name: str | None = None) -> Any:
    """A rosbags Typestore for ROS 2 (kilted by default) with vision_msgs and panoptic_depthlab_msgs.

    Types the store already has (a future rosbags might ship vision_msgs) are kept as they are.
    """
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    name = store_name or default_store_name()
    try:
        store = get_typestore(getattr(Stores, name))
    except AttributeError as exc:
        raise ValueError(f"unknown rosbags typestore {name!r}") from exc
    for package in INTERFACE_PACKAGES:
        types: dict[str, Any] = {}
        for msgtype, text in interface_definitions(package).items():
            if msgtype not in store.fielddefs:
                types.update(get_types_from_msg(text, msgtype))
        store.register(types)
    return store
