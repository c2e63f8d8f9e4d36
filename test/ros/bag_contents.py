"""Read back a whole output bag in the bag tools' tests: every message, raw and deserialised.

Importable from every test module under test/ros (pytest puts this folder on sys.path).
"""

from __future__ import annotations

from pathlib import Path


def read_all(bag: Path) -> dict[str, list[tuple[int, bytes, object]]]:
    """topic -> [(bag time, raw CDR, message)] read with rosbags and our typestore (vision_msgs)."""
    from panoptic_depthlab_ros.bag_types import make_typestore
    from panoptic_depthlab_ros.bags.common import open_bag

    store = make_typestore()
    reader = open_bag(bag)
    out: dict[str, list] = {}
    try:
        for connection, log_time, raw in reader.messages():
            out.setdefault(connection.topic, []).append(
                (log_time, bytes(raw), store.deserialize_cdr(raw, connection.msgtype))
            )
    finally:
        reader.close()
    return out
