"""QoS choices for camera inputs and static outputs.

A reliable subscription receives nothing from a best-effort publisher, and a best-effort
subscription in another process lost every large frame of a reliable publisher in our measurements.
So ``auto`` follows the publishers: reliable while every publisher on the topic is reliable,
best-effort as soon as one is not. ``BEST_AVAILABLE`` is not used: it is fixed at creation time
and fails for a camera that starts after the node. History depth 1: only the newest frame matters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

INPUT_RELIABILITY_MODES: tuple[str, ...] = ("auto", "reliable", "best_effort")


def parse_input_reliability(mode: str) -> str:
    """Normalise an ``input_reliability`` parameter value; ValueError naming the allowed values."""
    value = str(mode).strip().lower().replace("-", "_")
    if value not in INPUT_RELIABILITY_MODES:
        allowed = ", ".join(INPUT_RELIABILITY_MODES)
        raise ValueError(f"input_reliability must be one of {allowed}; got {mode!r}")
    return value


def reliability_for_publishers(publisher_qos: Iterable[Any]) -> ReliabilityPolicy:
    """RELIABLE when every publisher offers reliable (or there are none yet), else BEST_EFFORT.

    ``publisher_qos`` holds QoSProfile-like objects (``.reliability``) or TopicEndpointInfo-like
    objects (``.qos_profile.reliability``). Anything not RELIABLE counts as best-effort, because a
    best-effort subscription is the only one compatible with it.
    """
    for item in publisher_qos:
        profile = getattr(item, "qos_profile", item)
        if profile.reliability != ReliabilityPolicy.RELIABLE:
            return ReliabilityPolicy.BEST_EFFORT
    return ReliabilityPolicy.RELIABLE


def resolve_reliability(mode: str, publisher_qos: Iterable[Any] = ()) -> ReliabilityPolicy:
    """Reliability for an ``input_reliability`` mode given the publishers currently on the topic."""
    mode = parse_input_reliability(mode)
    if mode == "reliable":
        return ReliabilityPolicy.RELIABLE
    if mode == "best_effort":
        return ReliabilityPolicy.BEST_EFFORT
    return reliability_for_publishers(publisher_qos)


def input_qos_profile(reliability: ReliabilityPolicy | str, depth: int = 1) -> QoSProfile:
    """Keep-last ``depth`` volatile profile for camera inputs (latest frame wins)."""
    if isinstance(reliability, str):
        resolved = resolve_reliability(reliability)  # "auto" with no graph info -> reliable
    else:
        resolved = ReliabilityPolicy(reliability)
    if depth < 1:
        raise ValueError(f"QoS history depth must be >= 1, got {depth}")
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=resolved,
        durability=DurabilityPolicy.VOLATILE,
    )


def topic_input_qos(node: Any, topic: str, mode: str = "auto", depth: int = 1) -> QoSProfile:
    """Input profile for ``topic`` by looking at its publishers in the ROS graph right now.

    ``topic`` is resolved against the node's namespace and remappings first, as the
    subscription would be. Call again on graph changes and re-create the subscription when the
    reliability differs (``auto`` mode).
    """
    infos: Iterable[Any] = ()
    if parse_input_reliability(mode) == "auto":
        infos = node.get_publishers_info_by_topic(node.resolve_topic_name(topic))
    return input_qos_profile(resolve_reliability(mode, infos), depth=depth)


def latched_qos_profile(depth: int = 1) -> QoSProfile:
    """Reliable + transient_local: static data (LabelInfo) that late subscribers still receive."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
